"""NVFP4: E2M1 elements in blocks of 16, an unsigned E4M3 block scale and an FP32 tensor scale.

Follows torchao ``nvfp4_tensor.py`` (``per_tensor_amax_to_scale``, ``_nvfp4_quantize``) operation
by operation in float32 (FORMATS.md §5):

* s_t = fl32(amax_tensor / 2688) (2688 = 448 * 6); an all-zero tensor uses s_t = 1;
* s_b = e4m3(clamp(fl32(fl32(amax_block / 6) / s_t), 2^-6, 448)), rounded to nearest even;
* q   = e2m1(clamp(fl32(x / fl32(s_t * s_b)), -6, 6)), rounded to nearest even;
* value = fl32(fl32(q * s_b) * s_t) (the dequantisation order of torchao); zero results are +0.0.

With ``tensor_scale=False`` s_t = 1 and s_b = e4m3(min(amax_block / 6, 448)) (torchao casts
without the clamp and would produce NaN above 448 * 6; masec saturates). A NaN or Inf anywhere
makes the tensor scale, and so the whole result, NaN.

Encoded: codes ``[..., nblocks, 16]`` E2M1 codes, scales ``[..., nblocks]`` UE4M3 codes (sign 0),
``meta["tensor_scale"]`` float32 scalar. Packed block word ``{ue4m3, code[15], ..., code[0]}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from masec.formats.base import Encoded, NumberFormat
from masec.formats.blocking import Blocking, as_float32, check_block_size, from_blocks, to_blocks
from masec.formats.element import FP4_E2M1, FP8_E4M3, check_code_range
from masec.formats.errors import FormatError
from masec.formats.rounding import round_magnitudes

E4M3_MAX = 448.0
E2M1_MAX = 6.0
E4M3_TINY = 2.0 ** -6
_E4M3_NAN_CODE = 0x7F


@dataclass(frozen=True)
class NVFP4Format(NumberFormat):
    """NVFP4 (see module docstring). ``block_size`` is 16 by definition; other powers of two are allowed."""

    block_size: int = 16
    axis: int = -1
    tensor_scale: bool = True

    def __post_init__(self) -> None:
        check_block_size(self.block_size)

    @property
    def name(self) -> str:
        return "nvfp4"

    @property
    def element(self):
        """The element type (FP4 E2M1), as for MX formats."""
        return FP4_E2M1

    @property
    def bits_per_element(self) -> float:
        """4-bit element + 8-bit block scale / 16 = 4.5 (the one FP32 tensor scale is not counted)."""
        return 4 + 8 / self.block_size

    def _parts(self, x: torch.Tensor):
        blocks, b = to_blocks(x, self.axis, self.block_size)
        mag = blocks.abs()
        amax_b = mag.amax(-1) if blocks.shape[0] else torch.zeros(0)
        bad = not bool(torch.isfinite(blocks).all())
        if self.tensor_scale:
            amax_t = amax_b.amax() if amax_b.numel() else torch.tensor(0.0)
            s_t = amax_t / (E4M3_MAX * E2M1_MAX) if amax_t > 0 else torch.tensor(1.0)
            raw = ((amax_b / E2M1_MAX) / s_t).clamp(E4M3_TINY, E4M3_MAX)
        else:
            s_t = torch.tensor(1.0)
            raw = (amax_b / E2M1_MAX).clamp_max(E4M3_MAX)
        if bad:
            s_t = torch.tensor(float("nan"))
            raw = torch.zeros_like(raw)
        s_b, sb_codes = round_magnitudes(raw.contiguous(), FP8_E4M3, "even", bounded=False, want_codes=True)
        total = (s_t * s_b).unsqueeze(-1)
        d = (blocks / total).abs_() if not bad else torch.zeros_like(blocks)
        d = torch.where(torch.isnan(d), 0.0, d)  # 0/0 in an all-zero block with s_b = 0
        q, q_codes = round_magnitudes(d, FP4_E2M1, "even", bounded=False, want_codes=True)
        return blocks, b, s_t.to(torch.float32), s_b, sb_codes, q, q_codes

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        blocks, b, s_t, s_b, _, q, _ = self._parts(x)
        out = torch.copysign(q, blocks).mul_(s_b.unsqueeze(-1)).mul_(s_t).add_(0.0)
        return from_blocks(out, b, shape=tuple(x.shape))

    def encode(self, x: torch.Tensor) -> Encoded:
        x = as_float32(x)
        blocks, b, s_t, _, sb_codes, _, q_codes = self._parts(x)
        neg = (blocks < 0) & (q_codes != 0)
        codes = q_codes | (neg.to(torch.int32) << 3)
        if bool(torch.isnan(s_t)):
            sb_codes = torch.full_like(sb_codes, _E4M3_NAN_CODE)
        return Encoded(
            format=self.name,
            codes=codes.view(b.blocked_shape),
            scales=sb_codes.view(b.blocked_shape[:-1]),
            shape=tuple(x.shape),
            axis=b.axis,
            element_bits=4,
            block_size=self.block_size,
            scale_bits=8,
            meta={"tensor_scale": s_t.reshape(())},
            packing="block_word",
        )

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        if "tensor_scale" not in enc.meta:
            raise FormatError("nvfp4 encoded data needs meta['tensor_scale']")
        check_code_range(enc.codes, 4, "E2M1 code")
        check_code_range(enc.scales, 7, "UE4M3 scale code")
        b = Blocking(tuple(enc.shape) if enc.shape else (1,), enc.axis, self.block_size)
        q = FP4_E2M1.value_table().to(torch.float32)[enc.codes.reshape(-1, self.block_size).to(torch.int64)]
        s_b = FP8_E4M3.value_table().to(torch.float32)[enc.scales.reshape(-1).to(torch.int64)]
        s_t = enc.meta["tensor_scale"].to(torch.float32)
        out = q.mul_(s_b.unsqueeze(-1)).mul_(s_t).add_(0.0)
        return from_blocks(out, b, shape=tuple(enc.shape))
