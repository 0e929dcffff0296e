"""build_ir: lower the canonical graph (formats assigned) to the hardware dataflow IR.

Reads ``NodeMeta`` (op, shape, formats, kernel) of every node. Writes a new
:class:`masec.hwir.HwGraph`: one ``input`` instance per model input (an MX stream, or a plain
integer stream of ``id_width(vocab)`` bits for token ids), one kernel instance per compute node
(from its lowering), a ``stream_reorder`` corner turn per ``gather_rows``, one ``output``
instance per model output, and an edge per tensor use. Lanes are per node (``NodeMeta.folding``,
else the global lane count); an edge carries its producer's lanes, and where the consumer was
built for other lanes ``insert_retiles`` puts an ``mx_retile`` on it. ``view`` makes no instance: the edge
after it carries the new shape over the same beats (legal because ``assign_formats`` made the
block divide both last dims).

    ir = build_ir(gm, config)   # then insert_forks(ir), size_fifos(ir), ir.check()
"""
from __future__ import annotations

import re
from dataclasses import replace
import torch

from masec.errors import MasecError
from masec.hwir import HwGraph, Instance, IntValue, StreamType
from masec.lowering import MXValue, lowering_for
from masec.meta import meta


def ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else f"n_{s}"


def effective_lanes(gm, parallelism: int) -> int:
    """The global lane count (no ``--budget``): ``--parallelism``, capped by the smallest block."""
    blocks = [f.block_size for n in gm.graph.nodes for f in meta(n).formats.values()]
    return min([parallelism] + blocks)


def _mx_consumers(node) -> list:
    """The nodes that read ``node``'s stream, looking through ``view`` (which makes no instance)."""
    out = []
    for u in node.users:
        if u.op == "call_function" and meta(u).op == "view":
            out += _mx_consumers(u)
        else:
            out.append(u)
    return out


def input_lanes(gm, node, default: int) -> int:
    """Lanes of a model input port: the widest of its consumers (a retile narrows it for the others),
    so the port never sets the rate; ``default`` (the global lanes) when no consumer has a Folding."""
    lanes = [meta(u).folding.lanes for u in _mx_consumers(node)
             if u.op == "call_function" and meta(u).folding is not None]
    return max(lanes) if lanes else default


def _int_bits(gm, node) -> int:
    from masec.hw_templates.kernels.mx_embedding import id_width

    bits = []
    for user in node.users:
        if meta(user).op != "embedding" or user.args[0] is not node:
            raise MasecError(f"integer input `{node.name}` feeds `{user.name}` ({meta(user).op}); an integer "
                             f"(token id) input can only feed an embedding")
        bits.append(id_width(int(meta(user.args[1]).shape[0])))
    return max(bits) if bits else 1


def _input_instance(gm, node, index: int, lanes: int) -> Instance:
    m = meta(node)
    fmt = m.formats.get("out")
    if fmt is None:
        bits = _int_bits(gm, node)
        t = StreamType(m.shape, None, 1, bits)

        def model(xs, bits=bits):
            return [IntValue(xs[0].to(torch.int64), bits)]
    else:
        t = StreamType(m.shape, fmt, lanes)

        def model(xs, fmt=fmt):
            return [MXValue.from_float(xs[0], fmt)]
    return Instance(f"in_{ident(node.name)}", "input", params={"index": index, "port": f"s_{ident(node.name)}"},
                    out_ports=("in",), out_types=(t,), model=model, node=node.name, op="input", source=m.source,
                    formats=dict(m.formats), comment=f"model input {node.name}")


def _reorder_instance(node, src_t: StreamType) -> Instance:
    from masec.hw_templates.kernels import stream_reorder as R
    from masec.hw_templates.render import render

    x, index, shape = node.args
    m = meta(node)
    out_t = replace(src_t, shape=tuple(shape))
    mem = f"{ident(node.name)}_idx.mem"
    n_in = src_t.rows
    ctx, params, module = R.instance_config(src_t.bus_bits, src_t.row_beats, n_in, list(index), mem)
    idx = torch.tensor(index, dtype=torch.long)

    def model(ins):
        (v,) = ins
        if isinstance(v, IntValue):
            return [IntValue(v.values.reshape(-1, v.shape[-1])[idx].reshape(shape), v.bits)]
        return [MXValue(v.codes[idx], v.scales[idx], v.fmt, tuple(shape))]

    return Instance(ident(node.name), "stream_reorder", module, ctx, params, ("s_x",), ("m_y",), (src_t,), (out_t,),
                    model, node.name, "gather_rows", m.source, dict(m.formats),
                    {mem: R.index_mem_text(list(index), n_in).splitlines()},
                    ideal_cycles=max(src_t.beats, out_t.beats), buffering="tensor",
                    latency=src_t.beats, renders=(render("stream_reorder", module, **ctx),),
                    comment=f"{node.name}: corner turn {src_t.shape} -> {tuple(shape)} in block RAM"
                            + (f" ({m.source})" if m.source else ""), path=m.path)


def _rom_instance(gm, node, lanes: int, user, k: int) -> Instance:
    """A constant used as a stream (``add(x, const)``): a ``stream_rom`` that streams its encoded
    beats, one tensor per inference. Named, placed and reported after its consumer ``user`` (arg ``k``)."""
    from masec.hw_templates.kernels import stream_rom as R
    from masec.hw_templates.render import render
    from masec.lowering.base import Lowering
    from masec.sim.mxstream import mx_stream

    m = meta(node)
    fmt = m.formats["out"]
    t = StreamType(m.shape, fmt, lanes)
    value = MXValue.from_float(Lowering.const(gm, node).detach().to(torch.float32), fmt)
    beats = mx_stream(value.codes, value.scales, t.element_bits, lanes).beats
    words = [(b[1] << t.data_bits) | b[0] for b in beats]
    um = meta(user)
    name = f"{ident(user.name)}_const{k}"
    mem = f"{name}.mem"
    ctx, params, module = R.instance_config(t.bus_bits, len(words), mem)
    return Instance(name, "stream_rom", module, ctx, params, (), ("m_y",), (), (t,),
                    lambda ins, value=value: [value], node.name, "constant", um.source, dict(m.formats),
                    {mem: R.rom_mem_text(words, t.bus_bits).splitlines()}, ideal_cycles=len(words),
                    renders=(render("stream_rom", module, **ctx),),
                    comment=f"{node.name}: constant {tuple(m.shape)} of {user.name} streamed from a ROM"
                            + (f" ({um.source})" if um.source else ""), path=um.path)


def build_ir(gm, config, full: bool = True) -> HwGraph:
    """``full=False`` (the folding pass's trial builds) skips parameter memories and SV renderings."""
    ir = HwGraph()
    lanes = effective_lanes(gm, config.parallelism)
    src: dict = {}        # fx node -> ((instance, port), StreamType)
    n_inputs = 0
    for node in gm.graph.nodes:
        m = meta(node)
        if node.op == "get_attr":
            continue
        if node.op == "placeholder":
            inst = ir.add(_input_instance(gm, node, n_inputs, input_lanes(gm, node, lanes)))
            n_inputs += 1
            src[node] = ((inst.name, 0), inst.out_types[0])
            continue
        if node.op == "output":
            args = node.args[0]
            args = list(args) if isinstance(args, (tuple, list)) else [args]
            if not args:
                raise MasecError("the model returns no tensor; masec needs at least one output")
            for i, arg in enumerate(args):
                if arg not in src:
                    raise MasecError(f"model output {i} (`{getattr(arg, 'name', arg)}`) is a constant or a "
                                     f"parameter, not computed from the inputs; masec streams computed outputs")
                port, t = src[arg]
                name = "y" if len(args) == 1 else f"y{i}"
                inst = ir.add(Instance(f"out_{name}", "output", params={"index": i, "port": f"m_{name}"},
                                       in_ports=("out",), in_types=(t,), node=arg.name, op="output",
                                       comment=f"model output {i}: {arg.name}"))
                ir.connect(port, (inst.name, 0), t)
            continue
        if m.op == "view":
            port, t = src[node.args[0]]
            src[node] = (port, t.with_shape(m.shape))
            continue
        if m.op == "gather_rows":
            port, t = src[node.args[0]]
            in_t = t if m.folding is None or not t.is_mx else replace(t, lanes=m.folding.lanes)
            inst = ir.add(_reorder_instance(node, in_t))
            ir.connect(port, (inst.name, 0), t)
            src[node] = ((inst.name, 0), inst.out_types[0])
            continue
        low = lowering_for(node)
        choice = m.kernel
        args = low.tensor_args(node)
        in_types = tuple(
            StreamType(meta(a).shape, meta(a).formats.get("out"), choice.lanes_in if meta(a).formats.get("out")
                       else 1, 0 if meta(a).formats.get("out") else src[a][1].int_bits) for a in args)
        out_t = StreamType(m.shape, m.formats["out"], choice.lanes_out)

        def model(ins, node=node, low=low):
            return [low.reference(gm, node, ins)]

        inst = ir.add(Instance(
            ident(node.name), choice.kernel, choice.module, choice.ctx_dict, choice.params_dict, low.in_ports,
            (low.out_port,), in_types, (out_t,), model, node.name, m.op, m.source, dict(m.formats),
            low.memories(gm, node) if full else {}, choice.ideal_cycles, low.buffering, 0,
            tuple(low.render(choice)) if full else (),
            f"{node.name}: {m.op} -> {m.formats['out'].name}" + (f" ({m.source})" if m.source else ""), m.path))
        for k, a in enumerate(args):
            if a not in src and a.op == "get_attr":
                rom = ir.add(_rom_instance(gm, a, choice.lanes_in, node, k))
                src[a] = ((rom.name, 0), rom.out_types[0])
            port, t = src[a]
            ir.connect(port, (inst.name, k), t)
        src[node] = ((inst.name, 0), out_t)
    return ir
