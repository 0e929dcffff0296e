"""OCP MX block formats: k elements share one E8M0 scale 2^E (OCP MX v1.0; FORMATS.md §1-4).

Exact semantics of :meth:`MXFormat.quantize` per block of ``block_size`` elements along ``axis``
(the last block zero-padded):

1. amax = max |x| (float32). If any element is NaN or ±Inf the whole block decodes to NaN
   (scale code 0xFF, element codes 0).
2. E = floor(log2 amax) - emax_elem, read from amax's float32 exponent bits (never a float
   log2); E < -127 is clamped to -127. An all-zero block uses log2 = -126 (so E = -126 for int
   elements, -127 for fp), as microxcaling does. Scale code = E + 127.
3. Each |x| / 2^E is rounded onto the element grid with the format's rounding mode (exactly;
   fp elements keep subnormals) and clamped to the element max normal (never Inf/NaN).
4. Result = sign(x) * q * 2^E in float32 (exact); a zero result is +0.0 (-0.0 in gives +0.0).

Int elements never produce the most negative code; :meth:`MXFormat.decode` accepts it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from masec.formats.base import Encoded, NumberFormat
from masec.formats.blocking import (
    CHUNK_ELEMENTS,
    Blocking,
    as_float32,
    check_block_size,
    from_blocks,
    row_chunks,
    to_blocks,
)
from masec.formats.element import ElementFormat, check_code_range
from masec.formats.errors import FormatError
from masec.formats.rounding import check_rounding, round_magnitudes

E8M0_BIAS = 127
E8M0_NAN = 255
_ABS_MASK = 0x7FFFFFFF
_EXP_INF = 0x7F800000


def pow2_f32(e: torch.Tensor) -> torch.Tensor:
    """float32 2^e for an integer tensor e in [-149, 127], built from bits (exact, incl. subnormals)."""
    bits = (e.to(torch.int64) + 1023).bitwise_left_shift_(52)
    return bits.view(torch.float64).to(torch.float32)


def exponents_from_amax(amax_bits: torch.Tensor, el: ElementFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared exponents from per-block max |x| given as float32 bit patterns (int32, sign ignored).

    Returns ``(E, nan)``: int32 E in [-127, 127] (step 2 of the module docstring) and a bool mask
    of blocks whose amax is NaN or Inf.
    """
    amax = amax_bits & _ABS_MASK
    nan = amax >= _EXP_INF
    ef = amax >> 23
    # floor(log2 amax): exponent field - 127 for normals; float32 subnormals give <= -127, and
    # -127 is exact enough because E is clamped to >= -127 and emax >= 0; zero uses -126.
    fl = torch.where(ef == 0, torch.where(amax == 0, -126, -127), ef - 127)
    e = (fl - el.emax).clamp_(-E8M0_BIAS, E8M0_BIAS)
    return e.to(torch.int32), nan


def shared_exponents(mag_bits: torch.Tensor, el: ElementFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared exponents of blocks given as float32 magnitude bit patterns ``[N, B]`` (int32).

    Non-negative float32 bit patterns order like their values, so the max of the bit patterns is
    the bit pattern of amax. See :func:`exponents_from_amax`.
    """
    return exponents_from_amax(mag_bits.amax(dim=-1), el)


def _block_amax_bits(xb: torch.Tensor) -> torch.Tensor:
    """max |x| per row of a float32 ``[n, B]`` chunk as int32 bits (NaN if any NaN), one read pass."""
    lo, hi = torch.aminmax(xb, dim=-1)
    nan = torch.isnan(lo) | torch.isnan(hi)
    amax = torch.maximum(hi, lo.neg_())
    amax[nan] = float("nan")
    return amax.view(torch.int32)


def _scaled_magnitudes(xb: torch.Tensor, el: ElementFormat):
    """|x| / 2^E for one chunk of blocks (exact up to harmless underflow), with E and NaN mask."""
    mag = xb.view(torch.int32).bitwise_and(_ABS_MASK)
    e, nan = shared_exponents(mag, el)
    a = mag.view(torch.float32).mul_(pow2_f32(-e).unsqueeze(-1))
    return a, e, nan


def _round_signed_(y: torch.Tensor, rounding: str) -> None:
    """Round float32 values |y| < 2^24 to integers in place, symmetric about 0 (exact)."""
    if rounding == "even":
        torch.round(y, out=y)
    elif rounding == "trunc":
        torch.trunc(y, out=y)
    else:
        # away: trunc(y) + trunc(2 * (y - trunc(y))); the fraction and its double are exact and
        # trunc(2f) is +-1 exactly when |f| >= 1/2
        r = torch.trunc(y)
        y.sub_(r).mul_(2.0).trunc_().add_(r)


def _int_levels(xb: torch.Tensor, o: torch.Tensor, el: ElementFormat, rounding: str):
    """Signed integer levels of int elements into ``o``: clamp(rnd(x * 2^(mbits-E)), ±max_code).

    Returns ``(E, nan)``. Exact: the scaling is by powers of two and rounding of |y| < 2^24.
    """
    e, nan = exponents_from_amax(_block_amax_bits(xb), el)
    m = el.mbits
    # 2^(m - E) exceeds float32 for E < m - 127: then scale in two exact steps
    lo = int(e.min()) if e.numel() else 0
    torch.mul(xb, pow2_f32((m - e).clamp_max(127)).unsqueeze(-1), out=o)
    if lo < m - 127:
        o.mul_(pow2_f32((m - e - 127).clamp_min(0)).unsqueeze(-1))
    _round_signed_(o, rounding)
    o.clamp_(-el.max_code, el.max_code)
    return e, nan


def _quantize_chunk_int(xb: torch.Tensor, o: torch.Tensor, el: ElementFormat, rounding: str) -> None:
    """Signed fast path for int elements: o = levels * 2^(E - mbits)."""
    e, nan = _int_levels(xb, o, el, rounding)
    o.mul_(pow2_f32(e - el.mbits).unsqueeze(-1))  # 2^(E - m) >= 2^-141: a float32 subnormal at worst, exact
    o.add_(0.0)  # -0.0 + 0.0 = +0.0; every other value unchanged
    if bool(nan.any()):
        o[nan] = float("nan")


def _quantize_chunk_fp(xb: torch.Tensor, o: torch.Tensor, el: ElementFormat, rounding: str) -> None:
    """Signed path for fp elements: v = x / 2^E, then round to the element grid (see rounding.py)."""
    e, nan = exponents_from_amax(_block_amax_bits(xb), el)
    m = el.mbits
    emin_field = el.emin + 127
    torch.mul(xb, pow2_f32(-e).unsqueeze(-1), out=o)  # v, exact up to harmless underflow
    k = o.view(torch.int32).bitwise_right_shift(23)
    k.bitwise_and_(0xFF).clamp_(min=emin_field)  # binade of |v|, at least the element's emin
    p = torch.sub(254 + m, k).bitwise_left_shift_(23)
    o.mul_(p.view(torch.float32))  # v in units of its element step
    _round_signed_(o, rounding)
    o.mul_(k.sub_(m).bitwise_left_shift_(23).view(torch.float32))
    o.clamp_(-el.max_normal, el.max_normal)
    o.mul_(pow2_f32(e).unsqueeze(-1))
    o.add_(0.0)
    if bool(nan.any()):
        o[nan] = float("nan")


def mx_quantize_blocks(blocks: torch.Tensor, el: ElementFormat, rounding: str) -> torch.Tensor:
    """Quantise a contiguous float32 ``[N, B]`` block matrix; returns float32 ``[N, B]``."""
    out = torch.empty_like(blocks)
    chunk = _quantize_chunk_int if el.kind == "int" else _quantize_chunk_fp
    for i, j in row_chunks(blocks.shape[0], blocks.shape[1]):
        chunk(blocks[i:j], out[i:j], el, rounding)
    return out


def mx_encode_blocks(blocks: torch.Tensor, el: ElementFormat, rounding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a contiguous float32 ``[N, B]`` block matrix: (codes int32 [N, B], E8M0 int32 [N])."""
    n = blocks.shape[0]
    codes = torch.empty(blocks.shape, dtype=torch.int32)
    scales = torch.empty(n, dtype=torch.int32)
    sign_shift = el.bits - 1
    levels = torch.empty(min(n, max(1, CHUNK_ELEMENTS // blocks.shape[1])), blocks.shape[1])
    for i, j in row_chunks(n, blocks.shape[1]):
        xb = blocks[i:j]
        c = codes[i:j]
        if el.kind == "int":
            lv = levels[: j - i]
            e, nan = _int_levels(xb, lv, el, rounding)
            torch.bitwise_and(lv.to(torch.int32), (1 << el.bits) - 1, out=c)  # two's complement
        else:
            a, e, nan = _scaled_magnitudes(xb, el)
            _, cm = round_magnitudes(a, el, rounding, bounded=True, want_codes=True)
            neg = xb < 0
            neg.logical_and_(cm != 0)  # a result of zero is +0 (code 0)
            torch.bitwise_or(cm, neg.to(torch.int32).bitwise_left_shift_(sign_shift), out=c)
        s = scales[i:j]
        torch.add(e, E8M0_BIAS, out=s)
        if bool(nan.any()):
            c[nan] = 0
            s[nan] = E8M0_NAN
    return codes, scales


def mx_decode_blocks(codes: torch.Tensor, scales: torch.Tensor, el: ElementFormat) -> torch.Tensor:
    """float32 ``[N, B]`` values of element codes ``[N, B]`` and E8M0 scale codes ``[N]``."""
    check_code_range(codes, el.bits, f"{el.name} element code")
    check_code_range(scales, 8, "E8M0 scale code")
    table = el.value_table().to(torch.float32)
    vals = table[codes.to(torch.int64)]
    scales = scales.to(torch.int64)
    vals.mul_(pow2_f32(scales - E8M0_BIAS).unsqueeze(-1))
    nan = scales == E8M0_NAN
    if bool(nan.any()):
        vals[nan] = float("nan")
    return vals


@dataclass(frozen=True)
class MXFormat(NumberFormat):
    """An OCP MX format: ``element`` values sharing one E8M0 scale per ``block_size`` elements.

    Args:
        element: the element type (see :mod:`masec.formats.element`).
        block_size: elements per block, a power of two >= 2 (32 in OCP MX v1.0).
        rounding: ``"even"`` (default, ties to even), ``"away"`` (ties away from zero,
            microxcaling's default) or ``"trunc"`` (toward zero).
        axis: the dimension split into blocks (the reduction dimension), default last.
    """

    element: ElementFormat
    block_size: int = 32
    rounding: str = "even"
    axis: int = -1

    def __post_init__(self) -> None:
        if not isinstance(self.element, ElementFormat):
            raise FormatError(f"MXFormat element must be an ElementFormat, got {type(self.element).__name__}")
        check_block_size(self.block_size)
        check_rounding(self.rounding)
        if not isinstance(self.axis, int) or isinstance(self.axis, bool):
            raise FormatError(f"axis must be an int, got {self.axis!r}")

    @property
    def name(self) -> str:
        """``mxint8``, ``mxfp8_e4m3``, ``mxfp4_e2m1``, custom ``mxint6`` / ``mxfp_e3m3``."""
        return "mx" + self.element.name

    @property
    def bits_per_element(self) -> float:
        """Element bits plus the 8-bit scale amortised over the block (mxint8, B=32: 8.25)."""
        return self.element.bits + 8 / self.block_size

    def blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, Blocking]:
        """``x`` as a float32 ``[N, block_size]`` block matrix and its :class:`Blocking`."""
        return to_blocks(x, self.axis, self.block_size)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        blocks, b = self.blocks(x)
        out = mx_quantize_blocks(blocks, self.element, self.rounding)
        return from_blocks(out, b, shape=tuple(x.shape))

    def encode(self, x: torch.Tensor) -> Encoded:
        """Codes ``[..., nblocks, block]`` and E8M0 scales ``[..., nblocks]`` (see :class:`Encoded`)."""
        x = as_float32(x)
        blocks, b = self.blocks(x)
        codes, scales = mx_encode_blocks(blocks, self.element, self.rounding)
        return Encoded(
            format=self.name,
            codes=codes.view(b.blocked_shape),
            scales=scales.view(b.blocked_shape[:-1]),
            shape=tuple(x.shape),
            axis=b.axis,
            element_bits=self.element.bits,
            block_size=self.block_size,
            scale_bits=8,
            packing="block_word",
        )

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        if enc.block_size != self.block_size or enc.codes.shape[-1] != self.block_size:
            raise FormatError(
                f"encoded block size {enc.codes.shape[-1]} does not match format block size {self.block_size}"
            )
        shape1 = enc.shape if enc.shape else (1,)
        b = Blocking(tuple(shape1), enc.axis, self.block_size)
        if tuple(enc.codes.shape) != b.blocked_shape or tuple(enc.scales.shape) != b.blocked_shape[:-1]:
            raise FormatError(
                f"codes {tuple(enc.codes.shape)} / scales {tuple(enc.scales.shape)} do not match "
                f"shape {enc.shape} blocked along axis {enc.axis} (expected {b.blocked_shape})"
            )
        vals = mx_decode_blocks(
            enc.codes.reshape(-1, self.block_size), enc.scales.reshape(-1), self.element
        )
        return from_blocks(vals, b, shape=tuple(enc.shape))

    def decode_codes(self, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """float32 values of codes ``[..., nblocks, B]`` and E8M0 scales ``[..., nblocks]`` (same leading shape)."""
        codes = torch.as_tensor(codes)
        scales = torch.as_tensor(scales)
        if codes.shape[:-1] != scales.shape or codes.shape[-1] != self.block_size:
            raise FormatError(f"codes {tuple(codes.shape)} and scales {tuple(scales.shape)} do not match")
        vals = mx_decode_blocks(codes.reshape(-1, self.block_size), scales.reshape(-1), self.element)
        return vals.view(codes.shape)
