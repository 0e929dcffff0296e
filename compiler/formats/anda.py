"""Anda (HPCA'25): variable-length grouped block floating point for FP16 activations (FORMATS.md §8).

``anda<M>``, M = 1..16 mantissa bits. Exact semantics per group of ``group_size`` (64) elements
along ``axis`` (the last group zero-padded):

1. x is rounded to FP16 (nearest even); |x| > 65504 saturates to 65504 (Anda's inputs are FP16
   activations). An FP16 value has exponent field f (0..30) and 11-bit significand
   sig = 1024 + mantissa (f > 0) or mantissa (f = 0, subnormal), with e = max(f, 1):
   value = sig * 2^(e - 25).
2. Shared exponent S = max e over the group (5 bits; 1 for an all-zero/subnormal group).
3. Each element keeps its sign and k = floor(sig * 2^(M - 11 - (S - e))): its significand, hidden
   bit included, aligned to S and truncated (never rounded) to M bits. value = k * 2^(S - 14 - M).
   A zero k gives +0.0.
4. A NaN/Inf input makes its group NaN.

Storage (bit-plane transposed in the paper): per group 64 sign bits, the 5-bit S and M planes of
64 mantissa bits: 1 + M + 5/64 bits per element. Encoded: codes ``[..., ngroups, G]`` =
sign << M | k (M+1 bits), scales = S ``[..., ngroups]`` (31 marks a NaN group).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from masec.formats.base import Encoded, NumberFormat
from masec.formats.blocking import Blocking, as_float32, check_block_size, from_blocks, to_blocks
from masec.formats.element import check_code_range
from masec.formats.errors import FormatError
from masec.formats.mx import pow2_f32

_FP16_MAX = 65504.0


@dataclass(frozen=True)
class AndaFormat(NumberFormat):
    """Anda ``anda<M>`` (see module docstring)."""

    mbits: int
    group_size: int = 64
    axis: int = -1

    def __post_init__(self) -> None:
        if not isinstance(self.mbits, int) or not 1 <= self.mbits <= 16:
            raise FormatError(f"anda<M> needs M in 1..16, got {self.mbits!r}")
        check_block_size(self.group_size)

    @property
    def name(self) -> str:
        return f"anda{self.mbits}"

    @property
    def bits_per_element(self) -> float:
        """Sign + M mantissa bits + the 5-bit shared exponent / group."""
        return 1 + self.mbits + 5 / self.group_size

    def _parts(self, blocks: torch.Tensor):
        """(k int64 [N, G], S int64 [N], bad [N])."""
        h = blocks.clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16)
        hb = h.view(torch.int16).to(torch.int64) & 0x7FFF
        f = hb >> 10
        e = f.clamp(min=1)
        sig = (hb & 0x3FF) | ((f > 0).to(torch.int64) << 10)
        s = e.amax(-1) if blocks.shape[0] else torch.ones(0, dtype=torch.int64)
        shift = (s.unsqueeze(-1) - e) + (11 - self.mbits)  # k = floor(sig / 2^shift)
        k = torch.where(shift >= 0, sig >> shift.clamp(0, 62), sig << (-shift).clamp(0, 62))
        bad = ~torch.isfinite(blocks).all(-1)
        return k, s, bad

    def _values(self, k: torch.Tensor, s: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        mag = k.to(torch.float32).mul_(pow2_f32(s - 14 - self.mbits).unsqueeze(-1))
        return torch.where(neg, -mag, mag).add_(0.0)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        blocks, b = to_blocks(x, self.axis, self.group_size)
        k, s, bad = self._parts(blocks)
        out = self._values(k, s, blocks < 0)
        out[bad] = float("nan")
        return from_blocks(out, b, shape=tuple(x.shape))

    def encode(self, x: torch.Tensor) -> Encoded:
        x = as_float32(x)
        blocks, b = to_blocks(x, self.axis, self.group_size)
        k, s, bad = self._parts(blocks)
        neg = (blocks < 0) & (k != 0)
        codes = (k | (neg.to(torch.int64) << self.mbits)).to(torch.int32)
        s = s.to(torch.int32)
        if bool(bad.any()):
            # 5-bit exponent 31 (FP16's Inf/NaN exponent) marks a NaN group
            codes[bad], s[bad] = 0, 31
        lead = b.blocked_shape[:-1]
        return Encoded(self.name, codes.view(b.blocked_shape), s.view(lead), tuple(x.shape), b.axis,
                       self.mbits + 1, self.group_size, 5)

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        b = Blocking(tuple(enc.shape) if enc.shape else (1,), enc.axis, self.group_size)
        codes = enc.codes.reshape(-1, self.group_size).to(torch.int64)
        s = enc.scales.reshape(-1).to(torch.int64)
        check_code_range(codes, self.mbits + 1, "Anda code")
        check_code_range(s, 5, "Anda shared exponent")
        out = self._values(codes & ((1 << self.mbits) - 1), s, codes >> self.mbits == 1)
        out[s == 31] = float("nan")
        return from_blocks(out, b, shape=tuple(enc.shape))

