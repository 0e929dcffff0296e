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
block RAM. An ``mx_linear`` input fed more slowly than one row per burst (the linear takes a row in
its first pass, then re-reads its row buffer for the other passes without reading the stream) gets
one row of FIFO, so the producer runs on instead of stalling on backpressure (measured: the
stories260K FFN block 11,365 -> 9,745 cycles, nanoGPT 15,985 -> 12,835). Every other edge gets a
2-entry FIFO to cut combinational valid/ready paths.

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


def _row_period(inst: Instance, pred: dict) -> int:
    """Predicted cycles per output row of a producer (its own rate or that of what feeds it)."""
    rows = max(inst.out_types[0].rows, 1) if inst.out_types else 1
    span = pred["finish"][inst.name] - pred["start"][inst.name]
    return -(-max(span, inst.ideal_cycles, 1) // rows)


def _row_burst(ir: HwGraph, e, pred: dict) -> bool:
    """Whether ``e`` feeds a consumer that reads each input row in one burst and then computes for a
    while without reading (``mx_linear``: pass 0 takes the row from the stream, passes 1.. re-read
    its row buffer), from a producer that delivers a row more slowly than the burst takes."""
    dst = ir.instances[e.dst[0]]
    if dst.kernel != "mx_linear" or e.dst[1] != 0:
        return False
    passes = -(-dst.params["OUT"] // dst.params["P_OUT"])
    return passes > 1 and _row_period(ir.instances[e.src[0]], pred) > e.type.row_beats


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
            dst = e.dst[0]
            while ir.instances[dst].kernel == "mx_retile":   # a branch's retile: the wait is its consumer's
                dst = ir.out_edges(dst)[0].dst[0]
            lag = max(0, pred["start"][dst] - pred["start"][src.name])
            tensors = 1 + -(-lag // period)
            depth = e.type.beats * tensors
            why = (f"behind a fork: {tensors} whole tensors, the consumer starts {lag} cycles after the fork "
                   f"(predicted) at one inference per {period} cycles")
        elif _row_burst(ir, e, pred):
            # the consumer takes a row in one burst, then computes without reading: a row of FIFO lets
            # the slower producer run on meanwhile instead of stalling on backpressure
            depth = e.type.row_beats + FIFO_DEPTH
            why = (f"one row ({e.type.row_beats} beats): {e.dst[0]} reads a row in one burst, "
                   f"{src.name} makes one every {_row_period(src, pred)} cycles")
        else:
            depth, why = FIFO_DEPTH, "decoupling"
        ram = 1 if depth > BRAM_DEPTH else 0
        if (e.depth, e.ram_style, e.why) != (depth, ram, why):
            e.depth, e.ram_style, e.why = depth, ram, why
            changed = True
    return changed
