"""Build the top-level dataflow design from an annotated graph.

Reads ``NodeMeta.kernel`` and ``NodeMeta.formats`` of every node. One kernel instance per
compute node; a FIFO on every kernel-to-kernel edge; a fork where a tensor feeds several
consumers. Reconvergent paths (a fork whose branches meet again, e.g. a residual connection)
cannot deadlock: every FIFO behind a fork holds a whole tensor (its beat count), so one branch
can run a full tensor ahead of the other.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import networkx as nx

from masec.errors import MasecError
from masec.hw_templates.kernels.stream_fork import instance_config as fork_config
from masec.lowering import beats_of, lowering_for
from masec.meta import meta

FIFO_DEPTH = 2


def _ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else f"n_{s}"


@dataclass
class Stream:
    """Signals of one MX stream inside the top: <base>_valid/_ready/_data/_scale."""
    base: str
    lanes: int
    width: int

    @property
    def data_bits(self) -> int:
        return self.lanes * self.width

    def sig(self, what: str) -> str:
        return f"{self.base}_{what}"


@dataclass
class Design:
    top: str
    ports: list[dict] = field(default_factory=list)
    wires: list[dict] = field(default_factory=list)
    assigns: list[dict] = field(default_factory=list)
    instances: list[dict] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)    # {name, node, lanes, width, fmt}
    outputs: list[dict] = field(default_factory=list)


def graph_of(gm) -> nx.MultiDiGraph:
    """A networkx view of the dataflow graph (never the source of truth)."""
    g = nx.MultiDiGraph()
    for node in gm.graph.nodes:
        g.add_node(node.name)
        for k, arg in enumerate(_tensor_args(node)):
            g.add_edge(arg.name, node.name, key=k)
    return g


def _tensor_args(node):
    if node.op == "output":
        args = node.args[0]
        args = args if isinstance(args, (tuple, list)) else (args,)
        return [a for a in args if hasattr(a, "op")]
    if node.op in ("placeholder", "get_attr"):
        return []
    return lowering_for(node).tensor_args(node)


def _range(bits: int) -> str:
    return f"[{bits - 1}:0] " if bits > 1 else ""


def build_design(gm, config, top: str = "top") -> Design:
    d = Design(top)
    lanes = config.parallelism
    consumers: dict[str, list[tuple]] = {n.name: [] for n in gm.graph.nodes}
    for node in gm.graph.nodes:
        for k, arg in enumerate(_tensor_args(node)):
            consumers[arg.name].append((node, k))
    producer_stream: dict[str, Stream] = {}

    def add_stream_wires(s: Stream):
        d.wires += [{"name": s.sig("valid"), "range": ""}, {"name": s.sig("ready"), "range": ""},
                    {"name": s.sig("data"), "range": _range(s.data_bits)}, {"name": s.sig("scale"), "range": "[7:0] "}]

    def width_of(node) -> int:
        return meta(node).formats["out"].parse().element.bits

    # sources: top-level inputs and kernel outputs
    for node in gm.graph.nodes:
        m = meta(node)
        if node.op == "placeholder":
            name = _ident(node.name)
            s = Stream(f"in_{name}", lanes, width_of(node))
            add_stream_wires(s)
            d.ports += [{"dir": "input ", "name": f"s_{name}_valid_i", "range": ""},
                        {"dir": "output", "name": f"s_{name}_ready_o", "range": ""},
                        {"dir": "input ", "name": f"s_{name}_data_i", "range": _range(s.data_bits)},
                        {"dir": "input ", "name": f"s_{name}_scale_i", "range": "[7:0] "}]
            d.assigns += [{"lhs": s.sig("valid"), "rhs": f"s_{name}_valid_i"},
                          {"lhs": f"s_{name}_ready_o", "rhs": s.sig("ready")},
                          {"lhs": s.sig("data"), "rhs": f"s_{name}_data_i"},
                          {"lhs": s.sig("scale"), "rhs": f"s_{name}_scale_i"}]
            d.inputs.append({"name": f"s_{name}", "node": node.name, "lanes": lanes, "width": s.width,
                             "format": m.formats["out"].name, "shape": list(m.shape)})
            producer_stream[node.name] = s
        elif node.op not in ("output", "get_attr"):
            s = Stream(f"{_ident(node.name)}_y", m.kernel.lanes_out, width_of(node))
            add_stream_wires(s)
            producer_stream[node.name] = s

    # fan-out: forks
    edge_source: dict[tuple[str, str, int], Stream] = {}
    forked: set[str] = set()
    for name, cons in consumers.items():
        if not cons:
            continue
        src = producer_stream[name]
        if len(cons) == 1:
            c, k = cons[0]
            edge_source[(name, c.name, k)] = src
            continue
        forked.add(name)
        n = len(cons)
        ctx, params, module = fork_config(n, src.data_bits)
        conns = [("s_x_valid_i", src.sig("valid")), ("s_x_ready_o", src.sig("ready")),
                 ("s_x_data_i", src.sig("data")), ("s_x_scale_i", src.sig("scale"))]
        for i, (c, k) in enumerate(cons):
            branch = Stream(f"{src.base}_f{i}", src.lanes, src.width)
            add_stream_wires(branch)
            conns += [(f"m_y{i}_valid_o", branch.sig("valid")), (f"m_y{i}_ready_i", branch.sig("ready")),
                      (f"m_y{i}_data_o", branch.sig("data")), (f"m_y{i}_scale_o", branch.sig("scale"))]
            edge_source[(name, c.name, k)] = branch
        d.instances.append({"module": module, "name": f"u_fork_{src.base}", "render": ("stream_fork", module, ctx),
                            "comment": f"fan-out of {name} to {', '.join(c.name for c, _ in cons)}",
                            "params": sorted(params.items()), "conns": conns})

    # edges: FIFOs into kernels, assigns into top outputs
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            continue
        args = _tensor_args(node)
        if node.op == "output":
            for i, arg in enumerate(args):
                src = edge_source[(arg.name, node.name, i)]
                oname = "y" if len(args) == 1 else f"y{i}"
                d.ports += [{"dir": "output", "name": f"m_{oname}_valid_o", "range": ""},
                            {"dir": "input ", "name": f"m_{oname}_ready_i", "range": ""},
                            {"dir": "output", "name": f"m_{oname}_data_o", "range": _range(src.data_bits)},
                            {"dir": "output", "name": f"m_{oname}_scale_o", "range": "[7:0] "}]
                d.assigns += [{"lhs": f"m_{oname}_valid_o", "rhs": src.sig("valid")},
                              {"lhs": src.sig("ready"), "rhs": f"m_{oname}_ready_i"},
                              {"lhs": f"m_{oname}_data_o", "rhs": src.sig("data")},
                              {"lhs": f"m_{oname}_scale_o", "rhs": src.sig("scale")}]
                am = meta(arg)
                d.outputs.append({"name": f"m_{oname}", "node": arg.name, "lanes": src.lanes, "width": src.width,
                                  "format": am.formats["out"].name, "shape": list(am.shape)})
            continue
        m = meta(node)
        low = lowering_for(node)
        choice = m.kernel
        conns = []
        for k, (arg, port) in enumerate(zip(args, low.in_ports)):
            src = edge_source[(arg.name, node.name, k)]
            am = meta(arg)
            depth = beats_of(am.shape, am.formats["out"], src.lanes) if arg.name in forked else FIFO_DEPTH
            dst = f"{_ident(node.name)}_in{k}"
            d.wires += [{"name": f"{dst}_valid", "range": ""}, {"name": f"{dst}_ready", "range": ""},
                        {"name": f"{dst}_bus", "range": _range(src.data_bits + 8)}]
            d.instances.append({
                "module": "stream_fifo", "name": f"u_fifo_{dst}", "render": ("stream_fifo", "stream_fifo", {}),
                "comment": f"edge {arg.name} -> {node.name} (input {k}), depth {depth}"
                           + (" (whole tensor: behind a fork)" if arg.name in forked else ""),
                "params": [("WIDTH", src.data_bits + 8), ("DEPTH", depth)],
                "conns": [("s_x_valid_i", src.sig("valid")), ("s_x_ready_o", src.sig("ready")),
                          ("s_x_data_i", f"{{{src.sig('scale')}, {src.sig('data')}}}"),
                          ("m_y_valid_o", f"{dst}_valid"), ("m_y_ready_i", f"{dst}_ready"), ("m_y_data_o", f"{dst}_bus")]})
            conns += [(f"{port}_valid_i", f"{dst}_valid"), (f"{port}_ready_o", f"{dst}_ready"),
                      (f"{port}_data_i", f"{dst}_bus[{src.data_bits - 1}:0]"),
                      (f"{port}_scale_i", f"{dst}_bus[{src.data_bits + 7}:{src.data_bits}]")]
        out = producer_stream[node.name]
        op_ = low.out_port
        conns += [(f"{op_}_valid_o", out.sig("valid")), (f"{op_}_ready_i", out.sig("ready")),
                  (f"{op_}_data_o", out.sig("data")), (f"{op_}_scale_o", out.sig("scale"))]
        params = [(k, _sv_value(v)) for k, v in choice.params]
        d.instances.append({"module": choice.module, "name": f"u_{_ident(node.name)}",
                            "comment": f"{node.name}: {m.op} in {m.formats['out'].name}"
                                       + (f" ({m.source})" if m.source else ""),
                            "params": params, "conns": conns})
    if not d.outputs:
        raise MasecError("the model returns no tensor; masec needs at least one output")
    return d


def _sv_value(v) -> str:
    if isinstance(v, bool):
        return "1'b1" if v else "1'b0"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)
