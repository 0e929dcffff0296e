"""IR passes on streams: forks for fan-out, FIFO sizing.

``insert_forks(ir)``: an output that feeds several edges gets a ``stream_fork`` instance (the
bit-exact model copies the value to every branch). Idempotent: after it every output feeds one edge.

``size_fifos(ir)``: every edge gets a ``stream_fifo``. A branch behind a fork may have to run a
whole tensor ahead of its sibling (a residual path against a norm + linear + ... path, or q/k
against v into the attention matmuls, whose B operand is read in full before the first output),
so each FIFO behind a fork holds at least the whole tensor (its beat count) and the join can never
deadlock under any backpressure. From the IR's cycle model it also holds the tensors that arrive
while its consumer waits for the other branch (``1 + ceil(lag / period)`` tensors, lag = the
consumer's predicted start after the fork's, period = the bottleneck's cycles per inference), so
inferences stream back to back at the bottleneck's rate. Deep FIFOs (> ``BRAM_DEPTH`` entries) use
block RAM. Every other edge gets a 2-entry FIFO to cut combinational valid/ready paths.

    insert_forks(ir); size_fifos(ir); ir.check()
"""
from __future__ import annotations

from masec.hwir import HwGraph, Instance

FIFO_DEPTH = 2
BRAM_DEPTH = 64


def insert_forks(ir: HwGraph) -> bool:
    from masec.hw_templates.kernels.stream_fork import instance_config
    from masec.hw_templates.render import render

    changed = False
    for inst in list(ir.instances.values()):
        for k in range(len(inst.out_types)):
            outs = [e for e in ir.out_edges(inst.name) if e.src[1] == k]
            if len(outs) < 2:
                continue
            t = inst.out_types[k]
            n = len(outs)
            ctx, params, module = instance_config(n, t.data_bits, mx=t.is_mx)
            fork = ir.add(Instance(
                f"fork_{inst.name}" + (f"_{k}" if k else ""), "stream_fork", module, ctx, params, ("s_x",),
                tuple(f"m_y{i}" for i in range(n)), (t,), (t,) * n, (lambda ins, n=n: list(ins) * n),
                inst.node, "fork", inst.source, ideal_cycles=t.beats, renders=(render("stream_fork", module, **ctx),),
                comment=f"fan-out of {inst.name} to {', '.join(e.dst[0] for e in outs)}"))
            for i, e in enumerate(outs):
                e.src = (fork.name, i)   # a branch behind a view keeps its own shape (same beats)
            ir.connect((inst.name, k), (fork.name, 0), t)
            changed = True
    if changed:
        # keep instance order topological for readable printing: forks right after their producer
        order = []
        for name, inst in ir.instances.items():
            if inst.kernel == "stream_fork":
                continue
            order.append(name)
            order += [f for f, i in ir.instances.items() if i.kernel == "stream_fork" and
                      any(e.src[0] == name and e.dst[0] == f for e in ir.edges)]
        ir.instances = {n: ir.instances[n] for n in order}
    return changed


def size_fifos(ir: HwGraph) -> bool:
    from masec.passes.hw.cycles import predict_cycles

    pred = predict_cycles(ir)
    period = max(pred["bottleneck_cycles"], 1)
    changed = False
    for e in ir.edges:
        src = ir.instances[e.src[0]]
        if src.kernel == "stream_fork":
            # one whole tensor makes the join deadlock-free; to keep inferences streaming back to
            # back the branch also holds what arrives while its consumer waits for the other branch
            lag = max(0, pred["start"][e.dst[0]] - pred["start"][src.name])
            tensors = 1 + -(-lag // period)
            depth = e.type.beats * tensors
            why = (f"behind a fork: {tensors} whole tensors, the consumer starts {lag} cycles after the fork "
                   f"(predicted) at one inference per {period} cycles")
        else:
            depth, why = FIFO_DEPTH, "decoupling"
        ram = 1 if depth > BRAM_DEPTH else 0
        if (e.depth, e.ram_style, e.why) != (depth, ram, why):
            e.depth, e.ram_style, e.why = depth, ram, why
            changed = True
    return changed
