"""insert_retiles: an ``mx_retile`` on every MX edge whose consumer was built for other lanes.

Reads the IR after ``build_ir`` (and ``insert_forks``): every edge carries its producer's lanes,
every instance's ``in_types`` the lanes it was built for (``NodeMeta.folding``). Where the two
differ, the edge gets an ``mx_retile`` instance (same format and block, ``P_IN`` -> ``P_OUT``
lanes; its bit-exact model is the identity on codes and scales), so ``HwGraph.check()`` holds and
the reference, the vectors and ``top.sv`` include it. Behind a fork the retile sits on the branch,
after the branch's FIFO. Idempotent: after it every edge's lanes match its consumer's.

    insert_forks(ir); insert_retiles(ir); size_fifos(ir); ir.check()
"""
from __future__ import annotations

from dataclasses import replace

from masec.errors import MasecError
from masec.hwir import HwGraph, Instance


def insert_retiles(ir: HwGraph) -> bool:
    from masec.hw_templates.kernels import mx_retile
    from masec.hw_templates.render import render

    changed = False
    for e in list(ir.edges):
        dst = ir.instances[e.dst[0]]
        want = dst.in_types[e.dst[1]]
        t = e.type
        if not t.is_mx or want.lanes == t.lanes:
            continue
        if t.fmt.name == "m2xfp4_a":
            raise MasecError(f"edge {e.src[0]} -> {dst.name}: an m2xfp4_a stream of {t.lanes} lanes meets a consumer "
                             f"built for {want.lanes}, and masec has no retile for M2XFP streams (its metadata is "
                             f"per subgroup of 8); give both the same lanes (--parallelism or lanes = N)")
        if replace(want, lanes=t.lanes) != t:
            raise MasecError(f"internal error: edge {e.src[0]} -> {dst.name} carries {t.describe()}, "
                             f"{dst.name} reads {want.describe()}: more than the lanes differ")
        try:
            ctx, params, module = mx_retile.instance_config(t.element_bits, t.fmt.block_size, t.lanes, want.lanes)
        except ValueError as exc:
            raise MasecError(f"internal error: retile {e.src[0]} -> {dst.name}: {exc}") from None
        name = f"retile_{dst.name}_{e.dst[1]}"
        inst = ir.add(Instance(
            name, "mx_retile", module, ctx, params, ("s_x",), ("m_y",), (t,), (want,),
            lambda ins: list(ins), dst.node, "retile", dst.source, ideal_cycles=max(t.beats, want.beats),
            renders=(render("mx_retile", module, **ctx),),
            comment=f"lanes {t.lanes} -> {want.lanes} for {dst.name} (input {e.dst[1]})", path=dst.path))
        ir.connect((inst.name, 0), e.dst, want)
        e.dst = (inst.name, 0)
        changed = True
    if changed:
        # keep instance order readable: each retile right before its consumer
        order = []
        for n, inst in ir.instances.items():
            if inst.kernel == "mx_retile":
                continue
            order += [r for r, i in ir.instances.items() if i.kernel == "mx_retile" and
                      any(x.src[0] == r and x.dst[0] == n for x in ir.edges)]
            order.append(n)
        ir.instances = {n: ir.instances[n] for n in order}
    return changed
