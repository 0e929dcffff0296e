"""Slow exact reference for MX quantisation, written with Fractions and ints only.

Independent of masec.formats: element parameters come from the FORMATS.md §2 table (OCP
formats) or the textbook formulas (custom minifloats), and every step is exact rational
arithmetic. This is the oracle the property-based tests compare against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

NAN = float("nan")


@dataclass(frozen=True)
class RefElement:
    kind: str  # "int" | "fp"
    bits: int
    ebits: int
    mbits: int
    emax: int
    max_normal: Fraction
    min_normal: Fraction
    min_subnormal: Fraction

    @property
    def bias(self) -> int:
        return (1 << (self.ebits - 1)) - 1 if self.kind == "fp" else 0


# FORMATS.md §2, typed in from the table (not computed by masec)
REF_ELEMENTS = {
    "fp8_e4m3": RefElement("fp", 8, 4, 3, 8, Fraction(448), Fraction(1, 2**6), Fraction(1, 2**9)),
    "fp8_e5m2": RefElement("fp", 8, 5, 2, 15, Fraction(57344), Fraction(1, 2**14), Fraction(1, 2**16)),
    "fp6_e3m2": RefElement("fp", 6, 3, 2, 4, Fraction(28), Fraction(1, 4), Fraction(1, 16)),
    "fp6_e2m3": RefElement("fp", 6, 2, 3, 2, Fraction(15, 2), Fraction(1), Fraction(1, 8)),
    "fp4_e2m1": RefElement("fp", 4, 2, 1, 2, Fraction(6), Fraction(1), Fraction(1, 2)),
    "int8": RefElement("int", 8, 0, 6, 0, Fraction(127, 64), Fraction(1, 64), Fraction(1, 64)),
    "int4": RefElement("int", 4, 0, 2, 0, Fraction(7, 4), Fraction(1, 4), Fraction(1, 4)),
    "int2": RefElement("int", 2, 0, 0, 0, Fraction(1), Fraction(1), Fraction(1)),
}


def custom_fp(ebits: int, mbits: int) -> RefElement:
    """All-finite minifloat (like FP6/FP4): emax = 2^ebits - 1 - bias."""
    bias = (1 << (ebits - 1)) - 1
    emax = (1 << ebits) - 1 - bias
    maxn = Fraction(2) ** emax * (2 - Fraction(1, 2**mbits))
    return RefElement("fp", 1 + ebits + mbits, ebits, mbits, emax, maxn,
                      Fraction(2) ** (1 - bias), Fraction(2) ** (1 - bias - mbits))


def custom_int(bits: int) -> RefElement:
    step = Fraction(1, 2 ** (bits - 2))
    return RefElement("int", bits, 0, bits - 2, 0, ((1 << (bits - 1)) - 1) * step, step, step)


def pow2(e: int) -> Fraction:
    return Fraction(2) ** e


def floor_log2(a: Fraction) -> int:
    """floor(log2 a) for a > 0, exactly."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if pow2(e) > a:
        e -= 1
    assert pow2(e) <= a < pow2(e + 1)
    return e


def round_int(a: Fraction, mode: str) -> int:
    """Round a >= 0 to an integer: 'even' (ties to even), 'away' (ties away), 'trunc'."""
    fl = a.numerator // a.denominator
    rem = a - fl
    if mode == "trunc":
        return fl
    half = Fraction(1, 2)
    if rem > half:
        return fl + 1
    if rem < half:
        return fl
    return fl + 1 if mode == "away" or fl % 2 else fl


def quantize_element(v: Fraction, el: RefElement, mode: str) -> Fraction:
    """Nearest element value to v (mode), saturating at max normal, subnormals kept."""
    sign = -1 if v < 0 else 1
    a = abs(v)
    if a == 0:
        return Fraction(0)
    if el.kind == "int":
        step = pow2(-el.mbits)
    else:
        emin = 1 - el.bias
        step = pow2(max(floor_log2(a), emin) - el.mbits)
    q = round_int(a / step, mode) * step
    return sign * min(q, el.max_normal)


def element_code(q: Fraction, el: RefElement) -> int:
    """Code of an exactly representable element value q (q == 0 -> code 0)."""
    if el.kind == "int":
        k = q * pow2(el.mbits)
        assert k.denominator == 1
        return int(k) % (1 << el.bits)
    if q == 0:
        return 0
    s = 1 if q < 0 else 0
    a = abs(q)
    emin = 1 - el.bias
    if a < pow2(emin):
        e, m = 0, a / pow2(emin - el.mbits)
    else:
        fl = floor_log2(a)
        e, m = fl + el.bias, (a / pow2(fl) - 1) * pow2(el.mbits)
    assert m.denominator == 1 and 0 <= m < (1 << el.mbits)
    return s << (el.bits - 1) | e << el.mbits | int(m)


def decode_code(c: int, el: RefElement) -> Fraction:
    """Value of a finite code (the special codes are not passed here)."""
    if el.kind == "int":
        k = c - (1 << el.bits) if c >> (el.bits - 1) else c
        return k * pow2(-el.mbits)
    s = -1 if c >> (el.bits - 1) else 1
    e = (c >> el.mbits) & ((1 << el.ebits) - 1)
    m = c & ((1 << el.mbits) - 1)
    if e == 0:
        return s * Fraction(m, 1 << el.mbits) * pow2(1 - el.bias)
    return s * (1 + Fraction(m, 1 << el.mbits)) * pow2(e - el.bias)


def mx_block(xs: list[float], el: RefElement, mode: str) -> tuple[list[float], list[int], int]:
    """Reference MX quantisation of one block: (float values, element codes, E8M0 scale code)."""
    if any(not math.isfinite(x) for x in xs):
        return [NAN] * len(xs), [0] * len(xs), 255
    amax = max(abs(Fraction(x)) for x in xs)
    e = (-126 if amax == 0 else floor_log2(amax)) - el.emax
    e = max(e, -127)
    assert e <= 127
    qs = [quantize_element(Fraction(x) / pow2(e), el, mode) for x in xs]
    return [float(q * pow2(e)) for q in qs], [element_code(q, el) for q in qs], e + 127
