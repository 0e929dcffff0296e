"""Format names -> format objects.

Names (case-insensitive; see docs/formats.md for the exact semantics of each):

* OCP MX: ``mxint8``, ``mxint4``, ``mxfp8_e4m3``, ``mxfp8_e5m2``, ``mxfp6_e3m2``, ``mxfp6_e2m3``,
  ``mxfp4_e2m1`` (alias ``mxfp4``); custom ``mxint<k>`` (k = 2..16) and ``mxfp_e<E>m<M>``
  (every code finite; the five OCP pairs map to the OCP formats).
* ``nvfp4``.
* Baselines without block scale: ``int<k>`` (per-tensor absmax-calibrated scale),
  ``int<k>_ch`` (per-channel: one scale per position of the other dims, reduced along ``axis``),
  ``int<k>_f<F>`` (fixed point with F fraction bits), ``fp_e<E>m<M>``, ``bf16``, ``fp32``.
* Seed formats: ``m2xfp4_w`` (weights, alias ``m2xfp4``), ``m2xfp4_a`` (activations),
  ``bitmod_fp4``, ``bitmod_fp3``, ``anda<M>`` (M = 1..16).
"""
from __future__ import annotations

import re

from masec.formats.base import NumberFormat
from masec.formats.element import fp_element, int_element
from masec.formats.errors import FormatError
from masec.formats.mx import MXFormat

VALID_NAMES = (
    "mxint8", "mxint4", "mxint<k>", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3",
    "mxfp4_e2m1", "mxfp4", "mxfp_e<E>m<M>", "nvfp4", "int<k>", "int<k>_ch", "int<k>_f<F>",
    "fp_e<E>m<M>", "bf16", "fp32", "m2xfp4", "m2xfp4_w", "m2xfp4_a", "bitmod_fp4", "bitmod_fp3",
    "anda<M>",
)

_MX_FP = {
    "mxfp8_e4m3": (4, 3), "mxfp8_e5m2": (5, 2), "mxfp6_e3m2": (3, 2), "mxfp6_e2m3": (2, 3),
    "mxfp4_e2m1": (2, 1), "mxfp4": (2, 1),
}


def _bad(name: str, why: str = "") -> FormatError:
    extra = f" ({why})" if why else ""
    return FormatError(f"unknown number format {name!r}{extra}; valid names: {', '.join(VALID_NAMES)}")


def parse_format(
    name: str | NumberFormat,
    block_size: int | None = None,
    rounding: str = "even",
    axis: int = -1,
) -> NumberFormat:
    """Build the format called ``name``.

    Args:
        name: a format name (see module docstring) or an existing format (returned unchanged).
        block_size: elements per block/group; None = the format's default (32 for MX and M2XFP,
            16 for NVFP4, 128 for BitMoD, 64 for Anda). Must be a power of two >= 2.
        rounding: ``"even"`` (default), ``"away"`` or ``"trunc"``; used by MX, int and minifloat
            formats (the seed formats and NVFP4 fix their own rounding, see their docs).
        axis: the block / channel axis.

    Raises:
        FormatError: unknown name or invalid option; the message lists the valid names.
    """
    if isinstance(name, NumberFormat):
        return name
    if not isinstance(name, str):
        raise FormatError(f"format name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    bs = 32 if block_size is None else block_size

    if key in _MX_FP:
        return MXFormat(fp_element(*_MX_FP[key]), bs, rounding, axis)
    m = re.fullmatch(r"mxint(\d+)", key)
    if m:
        return MXFormat(_int_el(name, int(m.group(1))), bs, rounding, axis)
    m = re.fullmatch(r"mxfp(\d*)_e(\d+)m(\d+)", key)
    if m:
        e, mm = int(m.group(2)), int(m.group(3))
        if m.group(1) and int(m.group(1)) != 1 + e + mm:
            raise _bad(name, f"width {m.group(1)} != 1 + {e} + {mm}")
        return MXFormat(_fp_el(name, e, mm), bs, rounding, axis)
    return _parse_other(name, key, block_size, rounding, axis)


def _int_el(name: str, bits: int):
    try:
        return int_element(bits)
    except FormatError as err:
        raise _bad(name, str(err)) from err


def _fp_el(name: str, e: int, m: int):
    try:
        # custom e<E>m<M>: OCP pairs keep OCP specials, everything else is all-finite
        return fp_element(e, m)
    except FormatError as err:
        raise _bad(name, str(err)) from err


def _parse_other(name: str, key: str, block_size: int | None, rounding: str, axis: int) -> NumberFormat:
    """Formats other than MX (imported lazily so the MX core has no dependency on them)."""
    if key == "nvfp4":
        from masec.formats import nvfp4

        return nvfp4.NVFP4Format(block_size=block_size or 16, axis=axis)
    from masec.formats import baseline

    if key in ("fp32", "bf16"):
        return baseline.FloatFormat(key, rounding=rounding)
    m = re.fullmatch(r"fp(\d*)_e(\d+)m(\d+)", key)
    if m:
        e, mm = int(m.group(2)), int(m.group(3))
        if m.group(1) and int(m.group(1)) != 1 + e + mm:
            raise _bad(name, f"width {m.group(1)} != 1 + {e} + {mm}")
        return baseline.MinifloatFormat(_fp_el(name, e, mm), rounding=rounding)
    m = re.fullmatch(r"int(\d+)(?:_(ch|f(\d+)))?", key)
    if m:
        bits = int(m.group(1))
        if m.group(3) is not None:
            return baseline.IntFormat(bits, frac_bits=int(m.group(3)), rounding=rounding, axis=axis)
        return baseline.IntFormat(bits, per_channel=m.group(2) == "ch", rounding=rounding, axis=axis)
    if key.startswith("m2xfp"):
        from masec.formats import m2xfp
    if key in ("m2xfp4", "m2xfp4_w"):
        return m2xfp.M2XFPWeightFormat(block_size=block_size or 32, axis=axis)
    if key == "m2xfp4_a":
        return m2xfp.M2XFPActivationFormat(block_size=block_size or 32, axis=axis)
    m = re.fullmatch(r"bitmod_fp([34])", key)
    if m:
        from masec.formats import bitmod

        return bitmod.BitMoDFormat(int(m.group(1)), group_size=block_size or 128, axis=axis)
    m = re.fullmatch(r"anda(\d+)", key)
    if m:
        from masec.formats import anda

        return anda.AndaFormat(int(m.group(1)), group_size=block_size or 64, axis=axis)
    raise _bad(name)
