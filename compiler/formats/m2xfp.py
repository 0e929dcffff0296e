"""M2XFP (ASPLOS'26): MXFP4 plus 2 bits of metadata per subgroup of 8 elements (FORMATS.md §6).

Both variants: blocks of ``block_size`` (32) along ``axis`` share an E8M0 exponent E computed by
the exact MX rule for FP4 (E = floor(log2 amax) - 2 from the float bits, clamped to >= -127; a
NaN/Inf makes the block NaN); subgroups are 8 consecutive elements of a block; 4.5 bits/element.

:class:`M2XFPWeightFormat` (``m2xfp4_w``, alias ``m2xfp4``; the code's ``mxes``), Sg-EM with
adaptive scale: subgroup scale = 2^(E+b) * (1 + m/4), m in 0..3 = the 2-bit metadata, b in
{-1, 0, +1} a per-block shift stored in the E8M0 byte (code E + b + 127; b = -1 is not a candidate
when E = -127). For each b, each subgroup takes the m with the least squared error (first m wins
ties); then each block takes the b with the least mean subgroup error (first of -1, 0, +1 wins).
Element codes are FP4 E2M1 of |x| / scale rounded to nearest, ties to even code, saturating at 6.
The quotient |x| / scale and the rounding are exact (float64, see rounding.py); squared errors are
summed in float64. value = sign * fp4 * 2^(E+b) * (1 + m/4) (exact in float32).

:class:`M2XFPActivationFormat` (``m2xfp4_a``; the code's ``mxem``), Elem-EM top-1: every element
is FP4 (ties to even) of |x| / 2^E; in each subgroup the element with the largest FP4 magnitude
code (ties: lowest index) is re-quantised to FP6 E2M3 (ties to even, saturating at 7.5) of the same
|x| / 2^E, with its E2M3 code clamped to [4c - 1, 4c + 2] (c = its FP4 magnitude code; 4c is the
E2M3 code of the same value). Metadata = E2M3 code - 4c + 1 in 0..3. The decoder finds the top-1
element from the FP4 codes the same way and uses E2M3 code 4c + meta - 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from masec.formats.base import Encoded, NumberFormat
from masec.formats.blocking import Blocking, as_float32, check_block_size, from_blocks, row_chunks, to_blocks
from masec.formats.element import FP4_E2M1, FP6_E2M3, check_code_range
from masec.formats.errors import FormatError
from masec.formats.mx import E8M0_BIAS, E8M0_NAN, pow2_f32, shared_exponents
from masec.formats.rounding import round_magnitudes

SUBGROUP = 8
_RATIOS = (1.0, 1.25, 1.5, 1.75)
_SHIFTS = (-1, 0, 1)


def _check_block(block_size: int) -> None:
    check_block_size(block_size)
    if block_size % SUBGROUP:
        raise FormatError(f"M2XFP block size must be a multiple of {SUBGROUP}, got {block_size}")


def _mag_bits(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.view(torch.int32) & 0x7FFFFFFF


def _signed_codes(blocks: torch.Tensor, mag_codes: torch.Tensor) -> torch.Tensor:
    """FP4 codes sign | magnitude (a zero magnitude keeps sign 0)."""
    neg = (blocks < 0) & (mag_codes != 0)
    return mag_codes | (neg.to(torch.int32) << 3)


def _finish(blocks: torch.Tensor, mag: torch.Tensor, nan: torch.Tensor) -> torch.Tensor:
    out = torch.copysign(mag, blocks).add_(0.0)
    if bool(nan.any()):
        out[nan] = float("nan")
    return out


def _blocking_of(enc: Encoded, block: int) -> Blocking:
    return Blocking(tuple(enc.shape) if enc.shape else (1,), enc.axis, block)


@dataclass(frozen=True)
class _M2XFPFormat(NumberFormat):
    """What both M2XFP variants share: MXFP4 blocks (E8M0 scale) plus 2 bits per subgroup of 8."""

    block_size: int = 32
    axis: int = -1

    def __post_init__(self) -> None:
        _check_block(self.block_size)

    @property
    def element(self):
        """The stored element type (FP4 E2M1), as for MX formats."""
        return FP4_E2M1

    @property
    def bits_per_element(self) -> float:
        return 4 + 8 / self.block_size + 2 / SUBGROUP


@dataclass(frozen=True)
class M2XFPWeightFormat(_M2XFPFormat):
    """M2XFP weights (Sg-EM, adaptive scale); see the module docstring."""

    @property
    def name(self) -> str:
        return "m2xfp4_w"

    def _search(self, blocks: torch.Tensor):
        """Returns (E+b int64 [N], m int64 [N, S], fp4 magnitude codes int32 [N, B], |values| f32, nan).

        Walks the blocks in cache-sized row chunks (see blocking.CHUNK_ELEMENTS).
        """
        n, bsz = blocks.shape
        eb = torch.empty(n, dtype=torch.int64)
        m = torch.empty(n, bsz // SUBGROUP, dtype=torch.int64)
        codes = torch.empty(n, bsz, dtype=torch.int32)
        q = torch.empty(n, bsz, dtype=torch.float32)
        nan = torch.empty(n, dtype=torch.bool)
        for i, j in row_chunks(n, bsz):
            eb[i:j], m[i:j], codes[i:j], q[i:j], nan[i:j] = self._search_chunk(blocks[i:j])
        return eb, m, codes, q, nan

    @staticmethod
    def _search_chunk(blocks: torch.Tensor):
        n, bsz = blocks.shape
        s = bsz // SUBGROUP
        e, nan = shared_exponents(_mag_bits(blocks), FP4_E2M1)
        e = e.to(torch.int64)
        a = blocks.abs().to(torch.float64).view(n, s, SUBGROUP)
        if bool(nan.any()):
            a[nan] = 0.0  # NaN blocks: keep the search finite, the result is masked to NaN
        # pass 1: squared error of every (b, m) candidate per subgroup
        best_err = best_eb = best_m = None
        for b in _SHIFTS:
            eb = e + b
            p2 = torch.pow(2.0, eb.to(torch.float64)).view(n, 1, 1)
            errs = []
            for r in _RATIOS:
                scale = p2 * r
                q, _ = round_magnitudes(a / scale, FP4_E2M1, "even", bounded=False, want_codes=False)
                errs.append(q.mul_(scale).sub_(a).square_().sum(-1))
            err = torch.stack(errs, -1)  # [n, S, 4]
            m = err.argmin(-1)  # first minimum
            blk_err = err.gather(-1, m.unsqueeze(-1)).squeeze(-1).mean(-1)
            blk_err = torch.where(eb < -E8M0_BIAS, float("inf"), blk_err)
            if best_err is None:
                best_err, best_eb, best_m = blk_err, eb, m
            else:
                take = blk_err < best_err  # strict: the earlier shift wins ties
                best_err = torch.where(take, blk_err, best_err)
                best_eb = torch.where(take, eb, best_eb)
                best_m = torch.where(take.view(n, 1), m, best_m)
        # pass 2: the chosen subgroup scales
        ratio = (1.0 + best_m.to(torch.float64) / 4).unsqueeze(-1)
        scale = torch.pow(2.0, best_eb.to(torch.float64)).view(n, 1, 1) * ratio
        q, codes = round_magnitudes(a / scale, FP4_E2M1, "even", bounded=False, want_codes=True)
        q = q.mul_(scale).to(torch.float32)
        return best_eb, best_m, codes.view(n, bsz), q.view(n, bsz), nan

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        blocks, b = to_blocks(x, self.axis, self.block_size)
        *_, q, nan = self._search(blocks)
        return from_blocks(_finish(blocks, q, nan), b, shape=tuple(x.shape))

    def encode(self, x: torch.Tensor) -> Encoded:
        """codes FP4 ``[..., nblocks, B]``; scales E8M0 ``E+b+127``; meta ``subgroup_m`` ``[..., nblocks, B/8]``."""
        x = as_float32(x)
        blocks, b = to_blocks(x, self.axis, self.block_size)
        eb, m, codes, _, nan = self._search(blocks)
        codes = _signed_codes(blocks, codes)
        scales = (eb + E8M0_BIAS).to(torch.int32)
        m = m.to(torch.int32)
        if bool(nan.any()):
            codes[nan], scales[nan], m[nan] = 0, E8M0_NAN, 0
        lead = b.blocked_shape[:-1]
        return Encoded(self.name, codes.view(b.blocked_shape), scales.view(lead), tuple(x.shape), b.axis,
                       4, self.block_size, 8, {"subgroup_m": m.view(*lead, -1)})

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        b = _blocking_of(enc, self.block_size)
        codes = enc.codes.reshape(-1, self.block_size).to(torch.int64)
        scales = enc.scales.reshape(-1).to(torch.int64)
        m = enc.meta["subgroup_m"].reshape(codes.shape[0], -1).to(torch.int64)
        check_code_range(codes, 4, "FP4 code")
        check_code_range(scales, 8, "E8M0 code")
        check_code_range(m, 2, "subgroup metadata")
        vals = FP4_E2M1.value_table().to(torch.float32)[codes]
        ratio = (1.0 + m.to(torch.float32) / 4).repeat_interleave(SUBGROUP, dim=1)
        vals = vals.mul_(ratio).mul_(pow2_f32(scales - E8M0_BIAS).unsqueeze(-1)).add_(0.0)
        vals[scales == E8M0_NAN] = float("nan")
        return from_blocks(vals, b, shape=tuple(enc.shape))


@dataclass(frozen=True)
class M2XFPActivationFormat(_M2XFPFormat):
    """M2XFP activations (Elem-EM top-1 refined to FP6 E2M3); see the module docstring."""

    @property
    def name(self) -> str:
        return "m2xfp4_a"

    def _parts(self, blocks: torch.Tensor):
        n, bsz = blocks.shape
        mag = _mag_bits(blocks)
        e, nan = shared_exponents(mag, FP4_E2M1)
        v = mag.view(torch.float32).mul_(pow2_f32(-e).unsqueeze(-1))
        if bool(nan.any()):
            v[nan] = 0.0  # NaN blocks: keep the codes valid, the result is masked to NaN
        _, c4 = round_magnitudes(v, FP4_E2M1, "even", bounded=True, want_codes=True)
        _, c6 = round_magnitudes(v, FP6_E2M3, "even", bounded=True, want_codes=True)
        c4s = c4.view(n, -1, SUBGROUP)
        top = c4s.argmax(-1, keepdim=True)  # first maximum = lowest index
        c_top = c4s.gather(-1, top)
        c6_top = c6.view(n, -1, SUBGROUP).gather(-1, top)
        c6_top = torch.minimum(torch.maximum(c6_top, 4 * c_top - 1), 4 * c_top + 2)
        meta = (c6_top - 4 * c_top + 1).squeeze(-1)
        return e, nan, c4, top.squeeze(-1), meta

    @staticmethod
    def _values(c4: torch.Tensor, top: torch.Tensor, meta: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Unsigned magnitudes from FP4 magnitude codes [N, B], top-1 index and metadata [N, S]."""
        n = c4.shape[0]
        vals = FP4_E2M1.value_table().to(torch.float32)[c4.to(torch.int64)].view(n, -1, SUBGROUP)
        c_top = c4.view(n, -1, SUBGROUP).gather(-1, top.unsqueeze(-1)).to(torch.int64)
        c6 = 4 * c_top + meta.unsqueeze(-1).to(torch.int64) - 1
        if c6.numel() and int(c6.min()) < 0:
            raise FormatError("M2XFP activation metadata 0 on a zero top-1 element (E2M3 code -1)")
        vals.scatter_(-1, top.unsqueeze(-1), FP6_E2M3.value_table().to(torch.float32)[c6])
        return vals.view(n, -1).mul_(pow2_f32(e).unsqueeze(-1))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        blocks, b = to_blocks(x, self.axis, self.block_size)
        e, nan, c4, top, meta = self._parts(blocks)
        return from_blocks(_finish(blocks, self._values(c4, top, meta, e), nan), b, shape=tuple(x.shape))

    def encode(self, x: torch.Tensor) -> Encoded:
        """codes FP4 ``[..., nblocks, B]``; scales E8M0; meta ``subgroup_meta`` ``[..., nblocks, B/8]``."""
        x = as_float32(x)
        blocks, b = to_blocks(x, self.axis, self.block_size)
        e, nan, c4, top, meta = self._parts(blocks)
        # the sign goes with the final value: a top-1 element whose FP4 code is 0 can be refined
        # to a non-zero E2M3 value, so it uses the FP4 code -0 (8) when negative
        neg = (blocks < 0) & (self._values(c4, top, meta, e) != 0)
        codes = c4 | (neg.to(torch.int32) << 3)
        scales = (e + E8M0_BIAS).to(torch.int32)
        meta = meta.to(torch.int32)
        if bool(nan.any()):
            codes[nan], scales[nan], meta[nan] = 0, E8M0_NAN, 1
        lead = b.blocked_shape[:-1]
        return Encoded(self.name, codes.view(b.blocked_shape), scales.view(lead), tuple(x.shape), b.axis,
                       4, self.block_size, 8, {"subgroup_meta": meta.view(*lead, -1)})

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        b = _blocking_of(enc, self.block_size)
        codes = enc.codes.reshape(-1, self.block_size).to(torch.int64)
        scales = enc.scales.reshape(-1).to(torch.int64)
        meta = enc.meta["subgroup_meta"].reshape(codes.shape[0], -1)
        check_code_range(codes, 4, "FP4 code")
        check_code_range(scales, 8, "E8M0 code")
        check_code_range(meta, 2, "subgroup metadata")
        c4 = codes & 7
        top = c4.view(codes.shape[0], -1, SUBGROUP).argmax(-1)
        vals = self._values(c4, top, meta, scales - E8M0_BIAS)
        vals = torch.where(codes >= 8, -vals, vals).add_(0.0)
        vals[scales == E8M0_NAN] = float("nan")
        return from_blocks(vals, b, shape=tuple(enc.shape))
