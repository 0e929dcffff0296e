"""Printer of ``top.sv``: the hardware IR rendered through ``hw_templates/sv/top.sv.j2``.

It makes no decisions: every instance, parameter, FIFO depth and port comes from the IR. This
module only lays the IR out as the template's context (edges with their bit ranges, instance
port connections), so the template can print each signal once.

Every edge ``eK`` has a producer side ``eK_p_{valid,ready,bus}`` and a consumer side
``eK_c_{valid,ready,bus}`` with a ``stream_fifo`` between them; ``bus`` is ``{scale, data}`` for
an MX stream and ``data`` for a plain one. MX kernel ports take ``bus[D-1:0]`` and ``bus[W-1:D]``;
infrastructure ports (``plain`` in the manifest) take the whole bus.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from masec.hwir import HwGraph


@dataclass
class TopView:
    top: str
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)
    instances: list[dict] = field(default_factory=list)


def _port_kind(kernel: str, port: str) -> str:
    from masec.hw_templates.manifest import kernel as spec_of

    for p in spec_of(kernel).ports:
        if p.name == port:
            return p.kind
    return "mx"


def _sv_value(v) -> str:
    if isinstance(v, bool):
        return "1'b1" if v else "1'b0"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, int) and v < 0:
        return f"-{-v}"
    return str(v)


def top_view(ir: HwGraph, top: str = "top") -> TopView:
    view = TopView(top)
    eid = {id(e): f"e{k}" for k, e in enumerate(ir.edges)}
    for k, e in enumerate(ir.edges):
        t = e.type
        view.edges.append({"name": eid[id(e)], "width": t.bus_bits, "data_bits": t.data_bits, "mx": t.is_mx,
                           "depth": e.depth, "ram_style": e.ram_style, "pipe": e.pipe,
                           "slice_in": e.slice_in, "slice_out": e.slice_out,
                           "comment": f"{e.src[0]} -> {e.dst[0]}: {t.describe()}, {t.beats} beats; "
                                      f"FIFO depth {e.depth} ({e.why})"})
    for inst in ir.instances.values():
        if inst.kernel == "input":
            (e,) = ir.out_edges(inst.name)
            t = inst.out_types[0]
            view.inputs.append({"port": inst.params["port"], "edge": eid[id(e)], "data_bits": t.data_bits,
                                "mx": t.is_mx, "comment": inst.comment})
            continue
        if inst.kernel == "output":
            (e,) = ir.in_edges(inst.name)
            t = e.type
            view.outputs.append({"port": inst.params["port"], "edge": eid[id(e)], "data_bits": t.data_bits,
                                 "mx": t.is_mx, "comment": inst.comment})
            continue
        conns = []
        for e in ir.in_edges(inst.name):
            port = inst.in_ports[e.dst[1]]
            conns.append({"port": port, "dir": "in", "edge": eid[id(e)], "mx": e.type.is_mx,
                          "split": e.type.is_mx and _port_kind(inst.kernel, port) != "plain",
                          "data_bits": e.type.data_bits, "width": e.type.bus_bits})
        for e in sorted(ir.out_edges(inst.name), key=lambda e: e.src[1]):
            port = inst.out_ports[e.src[1]]
            conns.append({"port": port, "dir": "out", "edge": eid[id(e)], "mx": e.type.is_mx,
                          "split": e.type.is_mx and _port_kind(inst.kernel, port) != "plain",
                          "data_bits": e.type.data_bits, "width": e.type.bus_bits})
        view.instances.append({"module": inst.module, "name": f"u_{inst.name}", "comment": inst.comment,
                               "params": [(k, _sv_value(v)) for k, v in sorted(inst.params.items())],
                               "conns": conns})
    return view
