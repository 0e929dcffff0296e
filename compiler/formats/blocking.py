"""Split a tensor into blocks along one axis and put it back.

The block axis is moved last, zero-padded to a multiple of the block size and viewed as
``[..., nblocks, block]`` (microxcaling ``_reshape_to_blocks``); padding is cropped on the way
back. Zero padding never changes a block's max |x|.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from masec.formats.errors import FormatError

# Kernels walk the [N, B] block matrix in row chunks of about this many elements so that their
# temporaries stay in cache (a 4096x4096 tensor is ~64 chunks, not a loop over blocks).
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class Blocking:
    """How a tensor of ``shape`` was blocked along ``axis`` (non-negative) into ``block``-sized blocks."""

    shape: tuple[int, ...]
    axis: int
    block: int

    @property
    def length(self) -> int:
        """Length of the block axis."""
        return self.shape[self.axis]

    @property
    def nblocks(self) -> int:
        """Blocks per row, ceil(length / block)."""
        return -(-self.length // self.block)

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """The other dimensions, in order (the block axis removed)."""
        return self.shape[: self.axis] + self.shape[self.axis + 1 :]

    @property
    def blocked_shape(self) -> tuple[int, ...]:
        """``lead_shape + (nblocks, block)``: the shape of codes."""
        return self.lead_shape + (self.nblocks, self.block)


def normalize_axis(axis: int, ndim: int) -> int:
    """``axis`` as a non-negative index into ``ndim`` dimensions (FormatError if out of range)."""
    if not -ndim <= axis < ndim:
        raise FormatError(f"block axis {axis} out of range for a {ndim}-d tensor")
    return axis % ndim


def check_block_size(block: int) -> int:
    """Return ``block`` if it is a power of two >= 2, else raise :class:`FormatError`."""
    if not isinstance(block, int) or isinstance(block, bool) or block < 2 or block & (block - 1):
        raise FormatError(f"block size must be a power of two >= 2, got {block!r}")
    return block


def as_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a float32 tensor (the datapath input type); float64 is rounded to nearest even."""
    x = torch.as_tensor(x)
    if x.is_complex():
        raise FormatError("complex tensors are not supported")
    return x if x.dtype == torch.float32 else x.to(torch.float32)


def to_blocks(x: torch.Tensor, axis: int, block: int) -> tuple[torch.Tensor, Blocking]:
    """Blocks of float32 ``x``: a contiguous ``[N, block]`` tensor and its :class:`Blocking`.

    A 0-d tensor is treated as shape (1,) (callers pass the original shape to :func:`from_blocks`).
    """
    x = as_float32(x)
    if x.dim() == 0:
        x = x.reshape(1)
    ax = normalize_axis(axis, x.dim())
    b = Blocking(tuple(x.shape), ax, block)
    xm = x.movedim(ax, -1)
    pad = b.nblocks * block - b.length
    if pad:
        xm = torch.nn.functional.pad(xm, (0, pad))
    return xm.contiguous().view(-1, block), b


def from_blocks(blocks: torch.Tensor, b: Blocking, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Inverse of :func:`to_blocks` for a ``[N, block]`` tensor; ``shape`` overrides the result shape."""
    y = blocks.reshape(*b.lead_shape, b.nblocks * b.block)
    if b.nblocks * b.block != b.length:
        y = y[..., : b.length]
    y = y.movedim(-1, b.axis)
    if not y.is_contiguous():
        y = y.contiguous()
    return y.reshape(shape) if shape is not None else y


def row_chunks(n_rows: int, block: int):
    """Row ranges ``(start, stop)`` covering ``n_rows`` rows of ``block`` elements in cache-sized chunks."""
    step = max(1, CHUNK_ELEMENTS // block)
    return [(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]
