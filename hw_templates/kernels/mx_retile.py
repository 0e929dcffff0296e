"""MX retile: change the parallelism (lanes per beat) of an MX stream, same format and block size.

On tensors the kernel is the identity: ``(codes, scales)`` in, the same ``(codes, scales)`` out; only
the beat shape changes (``P_IN`` -> ``P_OUT`` lanes, ``B/P`` beats per block, scale on every beat).
:func:`retile_beats` is the beat-level model.

Usage by the compiler::

    ctx, params, module = instance_config(element_bits=8, block=32, lanes_in=4, lanes_out=16)
"""
from __future__ import annotations

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.sim.vectors import pack_lanes, unpack_lanes


def retile_model(codes, scales):
    """Tensor-level model: element codes and block scales are unchanged (``(codes, scales)``)."""
    return codes, scales


def retile_beats(beats: list[list[int]], width: int, lanes_in: int, lanes_out: int) -> list[list[int]]:
    """Beat-level model: ``[data, scale]`` beats of ``lanes_in`` lanes -> beats of ``lanes_out`` lanes.

    Elements keep stream order; every output beat carries the scale of the input beat(s) it came from
    (one block, since both lane counts divide the block size).
    """
    elems, elem_scale = [], []
    for data, scale in beats:
        vals = unpack_lanes(data, lanes_in, width)
        elems.extend(vals)
        elem_scale.extend([scale] * lanes_in)
    if len(elems) % lanes_out:
        raise ValueError(f"{len(elems)} elements do not fill beats of {lanes_out} lanes")
    return [[pack_lanes(elems[i:i + lanes_out], width), elem_scale[i + lanes_out - 1]]
            for i in range(0, len(elems), lanes_out)]


def instance_config(element_bits: int, block: int, lanes_in: int, lanes_out: int):
    """``(jinja_ctx, sv_params, module_name)`` of a retile from ``lanes_in`` to ``lanes_out`` lanes."""
    for p in (lanes_in, lanes_out):
        if p < 1 or block % p:
            raise ValueError(f"lanes {p} must divide the block size {block}")
    if max(lanes_in, lanes_out) % min(lanes_in, lanes_out):
        raise ValueError(f"lane counts {lanes_in} and {lanes_out} must divide one another")
    return {}, {"P_IN": int(lanes_in), "P_OUT": int(lanes_out), "W": int(element_bits), "B": int(block)}, "mx_retile"


SPEC = KernelSpec(
    name="mx_retile",
    template="mx_retile.sv.j2",
    doc="Change the lanes per beat of an MX stream (gather R beats into one, or split one into R); same "
        "format and block; full throughput on the wider side.",
    params=(ParamSpec("P_IN", "input lanes per beat; divides B", 4),
            ParamSpec("P_OUT", "output lanes per beat; divides B; P_IN and P_OUT divide one another", 8),
            ParamSpec("W", "element code width", 8),
            ParamSpec("B", "MX block size", 32)),
    ports=(PortSpec("s_x", "in", "mx", "P_IN lanes of W-bit codes + scale"),
           PortSpec("m_y", "out", "mx", "P_OUT lanes of W-bit codes + scale")),
    ops=(),
    model=f"{__name__}:retile_beats",
    examples=(
        {"label": "W8 P1->P8", "ctx": {}, "params": {"P_IN": 1, "P_OUT": 8, "W": 8, "B": 32}},
        {"label": "W8 P32->P4", "ctx": {}, "params": {"P_IN": 32, "P_OUT": 4, "W": 8, "B": 32}},
        {"label": "W4 P8->P32", "ctx": {}, "params": {"P_IN": 8, "P_OUT": 32, "W": 4, "B": 32}},
    ),
)
