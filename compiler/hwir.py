"""The hardware dataflow IR: kernel instances joined by typed stream edges.

Lowering (``masec.passes.hw.build_ir``) turns the canonical graph into an :class:`HwGraph`;
IR passes insert forks and size FIFOs; the bit-exact reference (:func:`run_reference`) executes
this same IR, so whatever a pass inserts is modeled; printers (``masec.design``, ``masec.emit``)
turn it into ``top.sv``, test vectors, scripts and the report without making decisions.

An instance knows its kernel, module, parameters, the stream types it was built for (the IR
checks every edge against them), its rate (ideal cycles for one inference), its buffering
(``"row"``: streams; ``"tensor"``: reads a whole input before the first output, e.g. a corner
turn or a matmul's B operand) and its parameter memories, which are kept apart from its
parameters so that streaming weights from off-chip memory can later be a pass.

    ir = build_ir(gm, config)                 # instances + edges
    values = run_reference(ir, example_inputs)   # (instance, port) -> MXValue / IntValue
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from math import prod
from typing import Callable

import networkx as nx
import torch

from masec.errors import MasecError
from masec.meta import TensorFormat


@dataclass(frozen=True)
class StreamType:
    """What flows on an edge: a tensor's logical shape in stream order (row-major, blocked along
    the last axis), its MX format (``None`` for a plain integer stream, e.g. token ids), lanes."""
    shape: tuple[int, ...]
    fmt: TensorFormat | None
    lanes: int
    int_bits: int = 0

    @property
    def is_mx(self) -> bool:
        return self.fmt is not None

    @property
    def element_bits(self) -> int:
        return _widths(self.fmt, self.lanes)[0] if self.fmt is not None else self.int_bits

    @property
    def data_bits(self) -> int:
        """Bits of a beat's data: the lanes' codes (M2XFP activations: and their subgroups' metadata)."""
        return _widths(self.fmt, self.lanes)[1] if self.fmt is not None else self.lanes * self.int_bits

    @property
    def scale_bits(self) -> int:
        return _widths(self.fmt, self.lanes)[2] if self.fmt is not None else 0

    @property
    def bus_bits(self) -> int:
        return self.data_bits + self.scale_bits

    @property
    def rows(self) -> int:
        return prod(self.shape[:-1]) if len(self.shape) > 1 else 1

    @property
    def row_beats(self) -> int:
        if self.fmt is None:
            return -(-self.shape[-1] // self.lanes)
        b = self.fmt.block_size
        return -(-self.shape[-1] // b) * (b // self.lanes)

    @property
    def beats(self) -> int:
        return self.rows * self.row_beats

    def same_beats(self, other: "StreamType") -> bool:
        """The same beats under a possibly different shape (a ``view`` between producer and edge)."""
        return (self.fmt, self.lanes, self.int_bits, self.beats, prod(self.shape)) == \
            (other.fmt, other.lanes, other.int_bits, other.beats, prod(other.shape))

    def with_shape(self, shape) -> "StreamType":
        return replace(self, shape=tuple(shape))

    def describe(self) -> str:
        if self.fmt is None:
            return f"int{self.int_bits} {tuple(self.shape)} x{self.lanes}"
        ts = f" s_t=2^{self.fmt.ts_exp}" if self.fmt.ts_exp is not None else ""
        return f"{self.fmt.name}/B{self.fmt.block_size}{ts} {tuple(self.shape)} x{self.lanes}"


@lru_cache(maxsize=None)
def _widths(fmt: TensorFormat, lanes: int) -> tuple[int, int, int]:
    """(element code bits, data bits, scale bits) of a stream of ``fmt`` with ``lanes`` lanes: the
    element mx_quantize emits for the format, the wire widths ``mx_linear.stream_widths`` gives."""
    from masec.hw_templates.kernels.mx_linear import stream_widths
    from masec.hw_templates.kernels.mx_quantize import output_format_params

    f = fmt.parse()
    try:
        data, scale = stream_widths(f, lanes)
    except ValueError as exc:
        raise MasecError(f"a {fmt.name} stream of {lanes} lanes: {exc}") from None
    return int(output_format_params(f)[1].bits), data, scale


@dataclass(frozen=True)
class IntValue:
    """A plain integer stream's values (token ids)."""
    values: torch.Tensor      # int64, logical shape
    bits: int

    @property
    def shape(self):
        return tuple(self.values.shape)


@dataclass
class Instance:
    """One kernel instance (or a top-level port: kernel ``"input"`` / ``"output"``)."""
    name: str
    kernel: str
    module: str = ""
    ctx: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    in_ports: tuple[str, ...] = ()
    out_ports: tuple[str, ...] = ()
    in_types: tuple[StreamType, ...] = ()
    out_types: tuple[StreamType, ...] = ()
    model: Callable | None = None          # list[value] -> list[value], bit-exact
    node: str = ""                         # canonical graph node it implements
    op: str = ""
    source: str = ""
    formats: dict = field(default_factory=dict)
    memories: dict = field(default_factory=dict)   # file name -> hex lines
    ideal_cycles: int = 0
    buffering: str = "row"                 # "row" | "tensor"
    latency: int = 0                       # extra cycles from first input to first output (model)
    renders: tuple = ()                    # Rendered SV modules this instance needs
    comment: str = ""
    path: str = ""                         # user module path ("layers.0.attention.wq") when known
    pipe_latency: int = 0                  # cycles its pipeline registers (SV parameter PIPE) add

    @property
    def is_port(self) -> bool:
        return self.kernel in ("input", "output")


@dataclass
class Edge:
    src: tuple[str, int]
    dst: tuple[str, int]
    type: StreamType
    depth: int = 2
    ram_style: int = 0
    why: str = ""          # why this FIFO depth
    pipe: int = 0          # the FIFO's PIPE (a register behind a block-RAM read; set_fifo_pipeline)
    slice_in: int = 0      # 1: a stream_reg_slice between the producer and the FIFO (set_fifo_pipeline)
    slice_out: int = 0     # 1: a stream_reg_slice between the FIFO and the consumer (set_fifo_pipeline)

    @property
    def slices(self) -> int:
        """Cycles of latency the edge's register slices add."""
        return self.slice_in + self.slice_out


@dataclass
class HwGraph:
    instances: dict[str, Instance] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, inst: Instance) -> Instance:
        if inst.name in self.instances:
            raise MasecError(f"internal error: two IR instances named {inst.name}")
        self.instances[inst.name] = inst
        return inst

    def connect(self, src: tuple[str, int], dst: tuple[str, int], t: StreamType) -> Edge:
        e = Edge(src, dst, t)
        self.edges.append(e)
        return e

    @property
    def inputs(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.kernel == "input"]

    @property
    def outputs(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.kernel == "output"]

    def in_edges(self, name: str) -> list[Edge]:
        return sorted((e for e in self.edges if e.dst[0] == name), key=lambda e: e.dst[1])

    def out_edges(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.src[0] == name]

    def nx(self) -> nx.MultiDiGraph:
        g = nx.MultiDiGraph()
        g.add_nodes_from(self.instances)
        for e in self.edges:
            g.add_edge(e.src[0], e.dst[0])
        return g

    def topo(self) -> list[Instance]:
        order = list(self.instances)
        pos = {n: i for i, n in enumerate(order)}
        return [self.instances[n] for n in nx.lexicographical_topological_sort(self.nx(), key=lambda n: pos[n])]

    def check(self) -> None:
        """Every edge's type equals what both ends were built for; every port is connected once."""
        for e in self.edges:
            s, d = self.instances[e.src[0]], self.instances[e.dst[0]]
            if not s.out_types[e.src[1]].same_beats(e.type) or d.in_types[e.dst[1]] != e.type:
                raise MasecError(f"internal error: edge {s.name}.{e.src[1]} -> {d.name}.{e.dst[1]} carries "
                                 f"{e.type.describe()} but {s.name} makes {s.out_types[e.src[1]].describe()} and "
                                 f"{d.name} reads {d.in_types[e.dst[1]].describe()}")
        for inst in self.instances.values():
            ins = [e.dst[1] for e in self.in_edges(inst.name)]
            if sorted(ins) != list(range(len(inst.in_types))):
                raise MasecError(f"internal error: instance {inst.name} inputs connected {ins}")
            for k in range(len(inst.out_types)):
                n = sum(1 for e in self.out_edges(inst.name) if e.src[1] == k)
                if n != 1:
                    raise MasecError(f"internal error: output {k} of {inst.name} feeds {n} edges (needs a fork)")


def run_reference(ir: HwGraph, example_inputs) -> dict[tuple[str, int], object]:
    """Execute the IR with every instance's bit-exact model. Inputs are quantized to their
    stream formats (exactly what the testbench streams in). Returns (instance, out port) -> value."""
    values: dict[tuple[str, int], object] = {}
    inputs = list(example_inputs)
    for inst in ir.topo():
        if inst.kernel == "input":
            outs = inst.model([inputs[inst.params["index"]]])
        else:
            args = [view_value(values[e.src], e.type) for e in ir.in_edges(inst.name)]
            if inst.kernel == "output":
                values[(inst.name, 0)] = args[0]
                continue
            outs = inst.model(args)
        for k, v in enumerate(outs):
            values[(inst.name, k)] = v
    return values


def view_value(v, t: StreamType):
    """A value under the shape an edge carries (a ``view`` keeps the beats, changes the shape)."""
    from masec.lowering import MXValue

    if isinstance(v, IntValue):
        return v if v.shape == tuple(t.shape) else IntValue(v.values.reshape(t.shape), v.bits)
    if tuple(v.shape) == tuple(t.shape):
        return v
    b = v.fmt.block_size
    last = t.shape[-1]
    rows = prod(t.shape[:-1]) if len(t.shape) > 1 else 1
    if last % b or v.shape[-1] % b:
        raise MasecError(f"internal error: view {v.shape} -> {t.shape} with block {b} is not free")
    meta = None if v.meta is None else v.meta.reshape(rows, last // b, -1)
    return MXValue(v.codes.reshape(rows, last // b, b), v.scales.reshape(rows, last // b), v.fmt, tuple(t.shape),
                   meta)
