"""Element formats: the narrow integers and minifloats stored per element of an MX block.

An :class:`ElementFormat` is a frozen description of one element type plus exact helpers to
decode every code. Code layout (MSB first):

* ``fp``: ``sign | exponent (ebits) | mantissa (mbits)``; bias = 2^(ebits-1) - 1.
  Normal (e > 0): (-1)^s * 2^(e - bias) * (1 + m / 2^mbits);
  subnormal (e == 0): (-1)^s * 2^(1 - bias) * m / 2^mbits.
  ``specials`` says which codes are not finite:

  - ``"none"``: every code is finite (FP6, FP4 and every custom ``fp_e<E>m<M>``);
  - ``"ocp_e4m3"``: only ``S.1111.111`` is NaN (OCP FP8 E4M3, max 448);
  - ``"ieee"``: exponent all ones is Inf (m == 0) or NaN (m != 0) (OCP FP8 E5M2).

* ``int``: ``bits``-bit two's complement integer k, value k * 2^-(bits-2) (fixed point with one
  integer bit), so ebits = 0, mbits = bits - 2, bias = 0, emax = 0. Quantisation never produces
  the most negative code (-2^(bits-1)), but :meth:`ElementFormat.decode_codes` accepts it
  (value -2.0 for bits >= 2).

int elements have no subnormal range: ``min_normal == min_subnormal == 2^-(bits-2)`` (the step).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch

from masec.formats.errors import FormatError

SPECIALS = ("none", "ocp_e4m3", "ieee")

# Custom fp elements must satisfy bias + mbits <= 23 so that every element value times every
# E8M0 scale (>= 2^-127) is exactly representable in float32 (smallest step 2^-149).
_MAX_BIAS_PLUS_MBITS = 23
_MAX_INT_BITS = 16


@dataclass(frozen=True)
class ElementFormat:
    """One element type. Build it with :func:`int_element` / :func:`fp_element` (they validate).

    Attributes:
        kind: ``"int"`` or ``"fp"``.
        bits: total width of one code, sign included.
        ebits: exponent bits (0 for int).
        mbits: mantissa (fraction) bits; for int elements ``bits - 2``.
        specials: non-finite code convention, one of :data:`SPECIALS` (``"none"`` for int).
    """

    kind: str
    bits: int
    ebits: int
    mbits: int
    specials: str = "none"

    def __post_init__(self) -> None:
        if self.kind == "int":
            if not 2 <= self.bits <= _MAX_INT_BITS:
                raise FormatError(f"int element width must be 2..{_MAX_INT_BITS} bits, got {self.bits}")
            if self.ebits != 0 or self.mbits != self.bits - 2 or self.specials != "none":
                raise FormatError(
                    f"int{self.bits} element must have ebits=0, mbits={self.bits - 2}, specials='none'"
                )
        elif self.kind == "fp":
            if self.ebits < 1 or self.mbits < 0:
                raise FormatError(f"fp element needs ebits >= 1 and mbits >= 0, got e{self.ebits}m{self.mbits}")
            if self.bits != 1 + self.ebits + self.mbits:
                raise FormatError(f"fp element width {self.bits} != 1 + {self.ebits} + {self.mbits}")
            if self.bias + self.mbits > _MAX_BIAS_PLUS_MBITS:
                raise FormatError(
                    f"fp_e{self.ebits}m{self.mbits}: bias + mbits = {self.bias + self.mbits} > "
                    f"{_MAX_BIAS_PLUS_MBITS}; element values times E8M0 scales would not be exact in "
                    "float32 (use ebits <= 5 and a mantissa small enough)"
                )
            if self.specials not in SPECIALS:
                raise FormatError(f"specials must be one of {SPECIALS}, got {self.specials!r}")
            if self.specials == "ocp_e4m3" and (self.ebits, self.mbits) != (4, 3):
                raise FormatError("specials='ocp_e4m3' only applies to e4m3")
            if self.specials == "ieee" and self.ebits < 2:
                raise FormatError("specials='ieee' needs ebits >= 2")
        else:
            raise FormatError(f"element kind must be 'int' or 'fp', got {self.kind!r}")

    # ----------------------------------------------------------------- derived constants
    @property
    def name(self) -> str:
        """Canonical name: ``int8``, ``fp8_e4m3``, ``fp4_e2m1``, custom ``fp_e3m3``."""
        if self.kind == "int":
            return f"int{self.bits}"
        if (self.ebits, self.mbits, self.specials) in _STANDARD_FP:
            return f"fp{self.bits}_e{self.ebits}m{self.mbits}"
        suffix = "" if self.specials == "none" else f"_{self.specials}"
        return f"fp_e{self.ebits}m{self.mbits}{suffix}"

    @property
    def bias(self) -> int:
        """Exponent bias, 2^(ebits-1) - 1 (0 for int)."""
        return 0 if self.kind == "int" else (1 << (self.ebits - 1)) - 1

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite binade (0 for int, 8 for E4M3, 2 for E2M1)."""
        if self.kind == "int":
            return 0
        top = (1 << self.ebits) - 1  # all-ones exponent field
        if self.specials == "ieee":
            top -= 1
        return top - self.bias

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade, 1 - bias (0 for int)."""
        return 0 if self.kind == "int" else 1 - self.bias

    @property
    def max_code(self) -> int:
        """Largest finite magnitude code (sign bit clear); codes are monotonic in magnitude."""
        if self.kind == "int":
            return (1 << (self.bits - 1)) - 1
        if self.specials == "ocp_e4m3":
            return (1 << (self.bits - 1)) - 2
        if self.specials == "ieee":
            return ((1 << self.ebits) - 2) << self.mbits | ((1 << self.mbits) - 1)
        return (1 << (self.bits - 1)) - 1

    @property
    def max_normal(self) -> float:
        """Largest finite value (1.75*2^8 = 448 for E4M3; 127/64 for INT8)."""
        return float(self.code_value(self.max_code))

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value 2^emin (int: the step 2^-(bits-2))."""
        if self.kind == "int":
            return self.min_subnormal
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value: 2^(emin - mbits) (fp), 2^-(bits-2) (int)."""
        return 2.0 ** (self.emin - self.mbits) if self.kind == "fp" else 2.0 ** -self.mbits

    # ------------------------------------------------------------------------ decoding
    def code_value(self, code: int) -> Fraction | float:
        """Exact value of one code: a Fraction, or float NaN/Inf for special codes."""
        if not 0 <= code < (1 << self.bits):
            raise FormatError(f"code {code} out of range for {self.bits}-bit element {self.name}")
        if self.kind == "int":
            k = code - (1 << self.bits) if code >> (self.bits - 1) else code
            return Fraction(k, 1 << self.mbits)
        sign = -1 if code >> (self.bits - 1) else 1
        e = (code >> self.mbits) & ((1 << self.ebits) - 1)
        m = code & ((1 << self.mbits) - 1)
        e_all = (1 << self.ebits) - 1
        if self.specials == "ocp_e4m3" and e == e_all and m == (1 << self.mbits) - 1:
            return float("nan")
        if self.specials == "ieee" and e == e_all:
            return sign * float("inf") if m == 0 else float("nan")
        if e == 0:
            mag = Fraction(m, 1 << self.mbits) * Fraction(2) ** (1 - self.bias)
        else:
            mag = (1 + Fraction(m, 1 << self.mbits)) * Fraction(2) ** (e - self.bias)
        return sign * mag

    def all_codes(self) -> torch.Tensor:
        """Every code 0 .. 2^bits - 1 as a LongTensor."""
        return torch.arange(1 << self.bits, dtype=torch.int64)

    def value_table(self) -> torch.Tensor:
        """float64 tensor ``t`` with ``t[code]`` = value of ``code`` (NaN/Inf for special codes).

        Computed with exact float64 arithmetic; negative-zero fp codes decode to -0.0.
        """
        c = self.all_codes()
        if self.kind == "int":
            k = torch.where(c >= (1 << (self.bits - 1)), c - (1 << self.bits), c)
            return k.to(torch.float64) * 2.0 ** -self.mbits
        sign = (c >> (self.bits - 1)).bool()
        e = (c >> self.mbits) & ((1 << self.ebits) - 1)
        m = (c & ((1 << self.mbits) - 1)).to(torch.float64)
        normal = (m + (1 << self.mbits)) * torch.pow(2.0, (e - self.bias - self.mbits).to(torch.float64))
        sub = m * 2.0 ** (1 - self.bias - self.mbits)
        mag = torch.where(e == 0, sub, normal)
        e_all = (1 << self.ebits) - 1
        if self.specials == "ocp_e4m3":
            mag = torch.where((e == e_all) & (m == (1 << self.mbits) - 1), float("nan"), mag)
        elif self.specials == "ieee":
            mag = torch.where(e == e_all, torch.where(m == 0, float("inf"), float("nan")), mag)
        return torch.where(sign, -mag, mag)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Element values (unscaled, float64) of integer ``codes`` (any shape).

        Raises :class:`FormatError` if a code is outside 0 .. 2^bits - 1.
        """
        codes = torch.as_tensor(codes)
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise FormatError(f"codes must be an integer tensor, got {codes.dtype}")
        check_code_range(codes, self.bits, "element code")
        return self.value_table()[codes.to(torch.int64)]


def check_code_range(codes: torch.Tensor, bits: int, what: str) -> None:
    """Raise :class:`FormatError` unless every entry of ``codes`` is in 0 .. 2^bits - 1."""
    if codes.numel() == 0:
        return
    lo, hi = int(codes.min()), int(codes.max())
    if lo < 0 or hi >= (1 << bits):
        raise FormatError(f"{what} out of range 0..{(1 << bits) - 1}: found {lo}..{hi}")


_STANDARD_FP = {(4, 3, "ocp_e4m3"), (5, 2, "ieee"), (3, 2, "none"), (2, 3, "none"), (2, 1, "none")}


def int_element(bits: int) -> ElementFormat:
    """Two's complement element of ``bits`` bits, value k * 2^-(bits-2)."""
    return ElementFormat("int", bits, 0, bits - 2, "none")


def fp_element(ebits: int, mbits: int, specials: str | None = None) -> ElementFormat:
    """Minifloat element ``e<ebits>m<mbits>``.

    ``specials`` defaults to the OCP convention: ``"ocp_e4m3"`` for e4m3, ``"ieee"`` for e5m2,
    ``"none"`` (all codes finite) for everything else.
    """
    if specials is None:
        specials = {(4, 3): "ocp_e4m3", (5, 2): "ieee"}.get((ebits, mbits), "none")
    return ElementFormat("fp", 1 + ebits + mbits, ebits, mbits, specials)


FP8_E4M3 = fp_element(4, 3)
FP8_E5M2 = fp_element(5, 2)
FP6_E3M2 = fp_element(3, 2)
FP6_E2M3 = fp_element(2, 3)
FP4_E2M1 = fp_element(2, 1)
INT8 = int_element(8)
INT4 = int_element(4)
