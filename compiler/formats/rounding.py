"""Exact rounding of non-negative float32 magnitudes onto an element grid.

Everything here is vectorised torch on whole tensors; all float operations used are exact:

* multiplying by a power of two whose result is a normal float32 (or which underflows only for
  values far below half the element's smallest step, where every mode gives 0);
* ``torch.round`` (round half to even) and ``torch.trunc`` of a float32;
* ``y - round(y)`` for |y| < 2^24 (both on y's ulp grid, result |.| <= 0.5).

Rounding modes (applied to the magnitude, so they are symmetric around zero):

* ``"even"``  - nearest, ties to even (OCP default, masec default);
* ``"away"``  - nearest, ties away from zero (microxcaling's ``nearest``);
* ``"trunc"`` - toward zero (microxcaling's ``floor``).
"""
from __future__ import annotations

import torch

from masec.formats.element import ElementFormat
from masec.formats.errors import FormatError

ROUNDING_MODES = ("even", "away", "trunc")


def check_rounding(rounding: str) -> str:
    """Return ``rounding`` if valid, else raise :class:`FormatError` listing the modes."""
    if rounding not in ROUNDING_MODES:
        raise FormatError(f"unknown rounding {rounding!r}; valid modes: {', '.join(ROUNDING_MODES)}")
    return rounding


def round_integer_(y: torch.Tensor, rounding: str) -> torch.Tensor:
    """Round a float tensor of values 0 <= y < 2^24 (float32) / 2^53 (float64) to integers in place (exact)."""
    if rounding == "even":
        return torch.round(y, out=y)
    if rounding == "trunc":
        return torch.trunc(y, out=y)
    r = torch.round(y)
    # round-half-even and half-away differ only on exact ties that went to the even integer:
    # for y >= 0, y - r is then exactly +0.5 (exact subtraction, see module docstring).
    d = y.sub_(r)
    r += d == 0.5
    y.copy_(r)
    return y


# per dtype: (matching int dtype, mantissa bits, exponent bias)
_FLOAT_LAYOUT = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}


def _pow2_from_field(field: torch.Tensor, mant: int, dtype: torch.dtype) -> torch.Tensor:
    """Reinterpret ``field << mant`` (in place) as the float 2^(field - bias); field must be normal."""
    return field.bitwise_left_shift_(mant).view(dtype)


def round_magnitudes(
    a: torch.Tensor, el: ElementFormat, rounding: str, *, bounded: bool, want_codes: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Round magnitudes ``a`` (float32 or float64, >= 0) to element values of ``el`` with saturation.

    Args:
        a: non-negative magnitudes. NaN/Inf entries give unspecified results (callers mask
           them); ``a`` is not modified.
        el: the element format.
        rounding: one of :data:`ROUNDING_MODES`.
        bounded: the caller guarantees ``a < 2^(emax+1)`` (true for MX-scaled blocks); if False
            ``a`` is first clamped to 2^(emax+1) (anything that large saturates anyway).
        want_codes: also return the magnitude codes (sign bit clear).

    Returns:
        ``(q, codes)``: q (dtype of ``a``) = the element value nearest ``a`` under ``rounding``,
        clamped to ``el.max_normal`` (subnormals kept); codes int32 magnitude codes of q, or None.
    """
    if a.dtype not in _FLOAT_LAYOUT:
        raise FormatError(f"round_magnitudes needs float32 or float64, got {a.dtype}")
    idt, mant, fbias = _FLOAT_LAYOUT[a.dtype]
    top = 2.0 ** (el.emax + 1)
    if not bounded:
        a = a.clamp_max(top)
    if el.kind == "int":
        y = a * float(1 << el.mbits)
        round_integer_(y, rounding)
        y.clamp_max_(float(el.max_code))
        codes = y.to(torch.int32) if want_codes else None
        return y.mul_(2.0 ** -el.mbits), codes
    m = el.mbits
    emin_field = el.emin + fbias  # exponent field of the smallest normal element binade
    # k = exponent field of the binade whose step applies: max(binade of a, emin)
    k = a.view(idt).bitwise_right_shift(mant).clamp_(min=emin_field)
    # y = a * 2^(m - (k - bias)): the significand in units of the element step (exact)
    y = torch.mul(a, _pow2_from_field(torch.sub(2 * fbias + m, k), mant, a.dtype))
    round_integer_(y, rounding)
    codes = None
    if want_codes:
        codes = torch.sub(k, emin_field).bitwise_left_shift_(m).to(torch.int32)
        codes += y.to(torch.int32)
        codes.clamp_max_(el.max_code)
    # q = y * 2^(k - bias - m): exact (field k - m >= bias + 1 - el.bias - m > 0)
    q = y.mul_(_pow2_from_field(k.sub_(m), mant, a.dtype))
    q.clamp_max_(el.max_normal)
    return q, codes
