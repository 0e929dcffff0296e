"""masec number formats: OCP MX, NVFP4, scale-less baselines and the seed formats.

Quick use::

    from masec.formats import parse_format, quantize
    fmt = parse_format("mxint8")              # block 32 along the last axis, ties to even
    y = fmt.quantize(x)                       # float32, what the hardware holds
    enc = fmt.encode(x); fmt.decode(enc)      # codes [..., nblocks, 32], E8M0 scales [..., nblocks]
    words = enc.pack()                        # {scale, code[31], ..., code[0]} per block
    quantize(x, "mxfp4", block_size=32, axis=-1, rounding="even")

See docs/formats.md for the exact semantics of every format.
"""
from __future__ import annotations

import torch

from masec.formats.base import Encoded, NumberFormat
from masec.formats.element import (
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    INT4,
    INT8,
    ElementFormat,
    fp_element,
    int_element,
)
from masec.formats.anda import AndaFormat
from masec.formats.baseline import FloatFormat, IntFormat, MinifloatFormat
from masec.formats.bitmod import BitMoDFormat
from masec.formats.errors import FormatError
from masec.formats.m2xfp import M2XFPActivationFormat, M2XFPWeightFormat
from masec.formats.mx import MXFormat
from masec.formats.nvfp4 import NVFP4Format
from masec.formats.packing import (
    block_word_width,
    mem_to_words,
    pack_mx_block_bytes,
    pack_mx_block_words,
    unpack_mx_block_words,
    words_to_mem,
)
from masec.formats.parse import VALID_NAMES, parse_format
from masec.formats.rounding import ROUNDING_MODES


def quantize(
    x: torch.Tensor,
    fmt: str | NumberFormat,
    block_size: int | None = None,
    axis: int = -1,
    rounding: str = "even",
) -> torch.Tensor:
    """Quantise ``x`` to format ``fmt`` and return float32 of the same shape.

    ``fmt`` is a name (built with :func:`parse_format` from ``block_size``, ``axis``,
    ``rounding``; ``block_size=None`` means the format's default: 32 for MX and M2XFP, 16 for
    NVFP4, 128 for BitMoD, 64 for Anda) or a format object, used as is.
    """
    if isinstance(fmt, NumberFormat):
        return fmt.quantize(x)
    return parse_format(fmt, block_size=block_size, rounding=rounding, axis=axis).quantize(x)


__all__ = [
    "AndaFormat", "BitMoDFormat", "FloatFormat", "IntFormat", "M2XFPActivationFormat", "M2XFPWeightFormat",
    "MinifloatFormat", "NVFP4Format",
    "ElementFormat", "Encoded", "FormatError", "MXFormat", "NumberFormat", "ROUNDING_MODES",
    "VALID_NAMES", "FP4_E2M1", "FP6_E2M3", "FP6_E3M2", "FP8_E4M3", "FP8_E5M2", "INT4", "INT8",
    "block_word_width", "fp_element", "int_element", "mem_to_words", "pack_mx_block_bytes",
    "pack_mx_block_words", "parse_format", "quantize", "unpack_mx_block_words", "words_to_mem",
]
