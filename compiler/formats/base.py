"""The format abstraction shared by every number format, and the encoded-tensor record."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Mapping

import torch

from masec.formats.errors import FormatError


@dataclass(frozen=True)
class Encoded:
    """A tensor in a format's storage representation.

    Attributes:
        format: canonical name of the format that produced it (``fmt.name``).
        codes: int32 element codes, unsigned bit patterns of width ``element_bits``. For blocked
            formats the shape is ``[..., nblocks, block]`` where ``...`` are the input's other
            dimensions in order (the block axis removed); the last block is zero-padded.
            For unblocked formats it has the input's shape.
        scales: per-block scale codes ``[..., nblocks]`` (MX: int32 E8M0 codes 0..255 = E + 127,
            255 = NaN block; NVFP4: int32 UE4M3 codes), per-tensor/channel float32 scales for
            int baselines, or None.
        shape: the original tensor shape.
        axis: the (non-negative) block / channel axis, or None when meaningless.
        element_bits: width of one code.
        block_size: elements per block (0 when not blocked).
        scale_bits: width of one scale code in the packed layout (8 for MX and NVFP4, 0 if none).
        meta: further named tensors (e.g. NVFP4 tensor scale, M2XFP metadata, BitMoD type ids).
        packing: ``"block_word"`` if :meth:`pack` applies (MX, NVFP4: the block is fully described
            by its scale code and element codes), else ``""``.
    """

    format: str
    codes: torch.Tensor
    scales: torch.Tensor | None
    shape: tuple[int, ...]
    axis: int | None
    element_bits: int
    block_size: int = 0
    scale_bits: int = 0
    meta: Mapping[str, torch.Tensor] = field(default_factory=dict)
    packing: str = ""

    def pack(self) -> list[int]:
        """One integer word per block ``{scale, code[B-1], ..., code[0]}`` (code 0 in the LSBs).

        Defined for formats with a per-block scale code (MX, NVFP4); see
        :func:`masec.formats.packing.pack_mx_block_words`.
        """
        from masec.formats.packing import pack_mx_block_words

        if self.packing != "block_word" or self.scales is None:
            raise FormatError(
                f"{self.format}: block-word packing {{scale, codes}} is defined for MX and NVFP4 only "
                "(this format carries per-group metadata or no block scale code)"
            )
        return pack_mx_block_words(self.codes, self.scales, self.element_bits, scale_bits=self.scale_bits)


class NumberFormat(abc.ABC):
    """A number format: what the hardware holds for a float tensor, and how it is stored.

    Subclasses are frozen dataclasses. ``quantize(x)`` returns the float32 values the hardware
    would hold; ``decode(encode(x))`` equals ``quantize(x)`` bitwise (NaN payloads aside).
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Canonical format name, accepted by :func:`masec.formats.parse_format`."""

    @property
    @abc.abstractmethod
    def bits_per_element(self) -> float:
        """Storage bits per element including amortised per-block scale and metadata bits."""

    @abc.abstractmethod
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Float tensor in, float32 tensor of the same shape out: the values the hardware holds."""

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> Encoded:
        """Codes, scales and metadata for ``x``."""

    @abc.abstractmethod
    def decode(self, enc: Encoded) -> torch.Tensor:
        """float32 tensor of ``enc.shape`` from an :class:`Encoded` of this format."""

    def _check_encoded(self, enc: Encoded) -> None:
        if not isinstance(enc, Encoded):
            raise FormatError(f"decode expects an Encoded, got {type(enc).__name__}")
        if enc.format != self.name:
            raise FormatError(f"cannot decode {enc.format!r} data with format {self.name!r}")
