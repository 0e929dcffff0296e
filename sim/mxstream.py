"""Convert MX tensors (element codes + E8M0 scales) to and from stream beats (docs/streams.md).

``codes`` has shape ``[..., nblocks, B]`` (unsigned bit patterns), ``scales`` ``[..., nblocks]``;
a block goes as ``B / P`` beats of ``P`` lanes, lane 0 in the least significant bits, each beat
carrying its block's scale.
"""
from __future__ import annotations

import torch

from masec.sim.vectors import StreamVectors, pack_lanes, unpack_lanes


def mx_beats(codes, scales, width: int, lanes: int, meta=None) -> list[list[int]]:
    """Beats ``[data, scale]`` for an MX tensor streamed with ``lanes`` lanes of ``width`` bits.

    ``meta`` ``[..., nblocks, B / 8]``: M2XFP activations' 2-bit metadata per subgroup of 8 lanes,
    packed above the codes (subgroup g of the beat at ``[lanes*width + 2g +: 2]``, ``lanes`` a
    multiple of 8), as mx_quantize emits it."""
    codes = torch.as_tensor(codes).to(torch.int64)
    scales = torch.as_tensor(scales).to(torch.int64)
    block = codes.shape[-1]
    if block % lanes:
        raise ValueError(f"parallelism {lanes} must divide the block size {block}")
    flat_codes = codes.reshape(-1, block // lanes, lanes).tolist()
    flat_scales = scales.reshape(-1).tolist()
    if meta is not None:
        if lanes % 8:
            raise ValueError(f"an M2XFP stream needs a multiple of 8 lanes, got {lanes}")
        flat_meta = torch.as_tensor(meta).to(torch.int64).reshape(-1, block // lanes, lanes // 8).tolist()
    beats = []
    for b, (blk, sc) in enumerate(zip(flat_codes, flat_scales)):
        for k, lane_vals in enumerate(blk):
            data = pack_lanes(lane_vals, width)
            if meta is not None:
                data |= pack_lanes(flat_meta[b][k], 2) << (lanes * width)
            beats.append([data, int(sc)])
    return beats


def mx_stream(codes, scales, width: int, lanes: int, notes=None, meta=None) -> StreamVectors:
    return StreamVectors(("data", "scale"), mx_beats(codes, scales, width, lanes, meta), {"data": (lanes, width)},
                         notes)


def mx_from_beats(beats, width: int, lanes: int, block: int, lead_shape=()) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`mx_beats`: ``(codes [..., nblocks, B], scales [..., nblocks])``."""
    per_block = block // lanes
    if len(beats) % per_block:
        raise ValueError(f"{len(beats)} beats is not a whole number of {per_block}-beat blocks")
    codes, scales = [], []
    for b in range(0, len(beats), per_block):
        blk = []
        for data, _ in beats[b:b + per_block]:
            blk.extend(unpack_lanes(data, lanes, width))
        codes.append(blk)
        scales.append(beats[b][1])
    c = torch.tensor(codes, dtype=torch.int64)
    s = torch.tensor(scales, dtype=torch.int64)
    if lead_shape:
        c = c.reshape(*lead_shape, -1, block)
        s = s.reshape(*lead_shape, -1)
    return c, s


def plain_stream(values, width: int, lanes: int = 1) -> StreamVectors:
    """A plain (scale-less) stream of integers, ``lanes`` per beat."""
    vals = [int(v) for v in torch.as_tensor(values).reshape(-1).tolist()]
    if len(vals) % lanes:
        raise ValueError(f"{len(vals)} values do not fill beats of {lanes} lanes")
    beats = [[pack_lanes(vals[i:i + lanes], width)] for i in range(0, len(vals), lanes)]
    return StreamVectors(("data",), beats, {"data": (lanes, width)})
