"""Baseline formats without a block scale: fixed-point int, minifloat, bf16 and fp32.

* :class:`IntFormat` ``int<k>`` / ``int<k>_ch``: k-bit two's complement codes with a calibrated
  float32 scale s = fl32(amax / (2^(k-1) - 1)) per tensor, or per channel (one scale for every
  position of the other dims, amax taken along ``axis``). q = clamp(rnd(x / s), ±(2^(k-1)-1)),
  with x / s and its rounding evaluated exactly (float64 division of two float32 values is exact
  enough to decide every tie), value = fl32(q * s). amax = 0 uses s = 1. A NaN/Inf in a scale
  group makes the whole group NaN. The most negative code is never produced.
* :class:`IntFormat` ``int<k>_f<F>``: fixed point with F fraction bits, value = q * 2^-F (exact),
  q = clamp(rnd(x * 2^F), ±(2^(k-1)-1)); NaN stays NaN, ±Inf saturates.
* :class:`MinifloatFormat` ``fp_e<E>m<M>``: the element grid of :func:`fp_element` without any
  scale: exact rounding, subnormals kept, saturation to ±max normal (±Inf too); NaN stays NaN and
  encodes to the format's NaN code (E4M3/E5M2) or raises for formats without one.
  -0.0 gives +0.0.
* :class:`FloatFormat` ``bf16``: float32 -> bfloat16 by dropping 16 low bits with the rounding
  mode (even: identical to ``x.to(torch.bfloat16)``, overflow to Inf as IEEE; subnormals kept;
  NaN stays NaN; signed zero kept). ``fp32``: identity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from masec.formats.base import Encoded, NumberFormat
from masec.formats.blocking import as_float32, normalize_axis
from masec.formats.element import ElementFormat, check_code_range, int_element
from masec.formats.errors import FormatError
from masec.formats.rounding import check_rounding, round_integer_, round_magnitudes


def _signed(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Give magnitudes ``q`` the sign of ``x`` (in place); zero results are +0.0."""
    torch.copysign(q, x, out=q)
    return q.add_(0.0)


@dataclass(frozen=True)
class MinifloatFormat(NumberFormat):
    """Scale-less minifloat ``fp_e<E>m<M>`` (see module docstring)."""

    element: ElementFormat
    rounding: str = "even"

    def __post_init__(self) -> None:
        if not isinstance(self.element, ElementFormat) or self.element.kind != "fp":
            raise FormatError("MinifloatFormat needs an fp ElementFormat")
        check_rounding(self.rounding)

    @property
    def name(self) -> str:
        return f"fp_e{self.element.ebits}m{self.element.mbits}"

    @property
    def bits_per_element(self) -> float:
        return float(self.element.bits)

    def _round(self, x: torch.Tensor, want_codes: bool):
        a = x.abs()
        q, cm = round_magnitudes(a, self.element, self.rounding, bounded=False, want_codes=want_codes)
        return q, cm

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        q, _ = self._round(x, False)
        q = _signed(q, x)
        return torch.where(torch.isnan(x), x, q)

    def encode(self, x: torch.Tensor) -> Encoded:
        x = as_float32(x)
        el = self.element
        _, cm = self._round(x, True)
        neg = (x < 0) & (cm != 0)
        codes = cm | (neg.to(torch.int32) << (el.bits - 1))
        nan = torch.isnan(x)
        if bool(nan.any()):
            if el.specials == "none":
                raise FormatError(f"{self.name} has no NaN code; input contains NaN")
            nan_code = (1 << (el.bits - 1)) - 1  # S.111..1 is NaN for both OCP FP8 types
            codes = torch.where(nan, nan_code, codes)
        return Encoded(self.name, codes.to(torch.int32), None, tuple(x.shape), None, el.bits)

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        vals = self.element.decode_codes(enc.codes).to(torch.float32)
        return vals.reshape(enc.shape)


@dataclass(frozen=True)
class FloatFormat(NumberFormat):
    """``bf16`` or ``fp32`` (see module docstring)."""

    kind: str
    rounding: str = "even"

    def __post_init__(self) -> None:
        if self.kind not in ("bf16", "fp32"):
            raise FormatError(f"FloatFormat kind must be 'bf16' or 'fp32', got {self.kind!r}")
        check_rounding(self.rounding)

    @property
    def name(self) -> str:
        return self.kind

    @property
    def bits_per_element(self) -> float:
        return 16.0 if self.kind == "bf16" else 32.0

    def _bf16_bits(self, x: torch.Tensor) -> torch.Tensor:
        """Upper 16 bits of the rounded float32 pattern, as int32 0..65535."""
        b = x.view(torch.int32)
        mag = b & 0x7FFFFFFF
        if self.rounding == "even":
            mag = mag + (0x7FFF + ((mag >> 16) & 1))
        elif self.rounding == "away":
            mag = mag + 0x8000
        # carries run into the exponent field (exact for normals, subnormals and to Inf)
        hi = (mag >> 16).clamp_max(0x7F80)  # no finite value rounds past Inf
        hi = torch.where(torch.isnan(x), 0x7FC0, hi)
        return hi | ((b >> 16) & 0x8000)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        if self.kind == "fp32":
            return x.clone()
        return (self._bf16_bits(x) << 16).view(torch.float32)

    def encode(self, x: torch.Tensor) -> Encoded:
        x = as_float32(x)
        if self.kind == "fp32":
            codes = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
            return Encoded(self.name, codes, None, tuple(x.shape), None, 32)
        return Encoded(self.name, self._bf16_bits(x), None, tuple(x.shape), None, 16)

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        bits = 32 if self.kind == "fp32" else 16
        check_code_range(enc.codes, bits, f"{self.name} code")
        c = enc.codes.to(torch.int64) << (32 - bits)
        c = torch.where(c >= 1 << 31, c - (1 << 32), c).to(torch.int32)
        return c.view(torch.float32).reshape(enc.shape)


@dataclass(frozen=True)
class IntFormat(NumberFormat):
    """``int<k>`` (per-tensor scale), ``int<k>_ch`` (per-channel) or ``int<k>_f<F>`` (fixed point).

    Args:
        bits: code width k, 2..16.
        frac_bits: fraction width F (fixed point, no scale); None = calibrated scale.
        per_channel: calibrated scale per channel (amax along ``axis``) instead of per tensor.
        rounding: ``"even"``, ``"away"`` or ``"trunc"``.
        axis: the reduction axis for per-channel scales.
    """

    bits: int
    frac_bits: int | None = None
    per_channel: bool = False
    rounding: str = "even"
    axis: int = -1

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 16:
            raise FormatError(f"int<k> needs k in 2..16, got {self.bits!r}")
        if self.frac_bits is not None:
            if not -32 <= self.frac_bits <= 32:
                raise FormatError(f"fraction width must be in -32..32, got {self.frac_bits}")
            if self.per_channel:
                raise FormatError("fixed point (int<k>_f<F>) has no per-channel scale")
        check_rounding(self.rounding)

    @property
    def name(self) -> str:
        if self.frac_bits is not None:
            return f"int{self.bits}_f{self.frac_bits}"
        return f"int{self.bits}_ch" if self.per_channel else f"int{self.bits}"

    @property
    def bits_per_element(self) -> float:
        """k (the per-tensor / per-channel float32 scale is not counted)."""
        return float(self.bits)

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def _scales(self, x: torch.Tensor) -> torch.Tensor:
        """float32 scales broadcastable to x (shape [] or x.shape with the axis kept as 1)."""
        a = x.abs()
        if self.per_channel:
            if x.dim() == 0:
                raise FormatError("per-channel int needs at least one dimension")
            amax = a.amax(dim=normalize_axis(self.axis, x.dim()), keepdim=True)
        else:
            amax = a.amax() if x.numel() else torch.tensor(0.0)
        s = amax / float(self.qmax)  # float32 division: correctly rounded
        return torch.where(amax == 0, torch.ones_like(s), s)

    def _levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Signed integer levels q (float64) and the scales (None for fixed point)."""
        if self.frac_bits is not None:
            el = int_element(self.bits)
            a = x.abs().mul_(2.0 ** (self.frac_bits - el.mbits))
            q, _ = round_magnitudes(a, el, self.rounding, bounded=False, want_codes=False)
            lev = q.mul_(2.0 ** el.mbits).to(torch.float64)
            return torch.where(x < 0, -lev, lev), None
        s = self._scales(x)
        y = (x.to(torch.float64) / s.to(torch.float64)).abs_()
        y = torch.where(torch.isfinite(y), y, torch.zeros_like(y))
        round_integer_(y, self.rounding)
        y.clamp_max_(self.qmax)
        return torch.where(x < 0, -y, y), s

    def _finish(self, lev: torch.Tensor, s: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """fl32(level * scale) with +0.0 for zero; NaN where the input or its scale group is not finite."""
        if s is None:
            out = (lev * 2.0 ** -self.frac_bits).to(torch.float32)
            bad = torch.isnan(x)
        else:
            out = (lev * s.to(torch.float64)).to(torch.float32)
            bad = torch.broadcast_to(~torch.isfinite(s), out.shape)
        out.add_(0.0)
        return torch.where(bad, float("nan"), out)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        lev, s = self._levels(x)
        return self._finish(lev, s, x)

    def encode(self, x: torch.Tensor) -> Encoded:
        """codes: two's complement bit patterns, x's shape; scales: float32 (None for fixed point)."""
        x = as_float32(x)
        if self.frac_bits is not None and bool(torch.isnan(x).any()):
            raise FormatError(f"{self.name} has no NaN code; input contains NaN")
        lev, s = self._levels(x)
        codes = lev.to(torch.int32) & ((1 << self.bits) - 1)
        ax = normalize_axis(self.axis, x.dim()) if self.per_channel else None
        return Encoded(self.name, codes, s, tuple(x.shape), ax, self.bits)

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        check_code_range(enc.codes, self.bits, f"{self.name} code")
        c = enc.codes.to(torch.int64)
        lev = torch.where(c >= 1 << (self.bits - 1), c - (1 << self.bits), c).to(torch.float64)
        x_nan = torch.zeros(c.shape, dtype=torch.float32)  # fixed point: codes are always finite
        return self._finish(lev, enc.scales, x_nan).reshape(enc.shape)
