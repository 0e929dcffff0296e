"""Kernel selection: choose the hardware kernel and its parameters for every compute node.

Reads: ``NodeMeta.op``, ``.shape``, ``.formats``. Writes: ``NodeMeta.kernel`` (a KernelChoice
from the op's lowering, which reads the kernel manifest). Idempotent::

    gm, changed = select_kernels(gm, config)   # meta(node).kernel.kernel == "mx_linear"
"""
from __future__ import annotations

from masec.errors import MasecError, PassError
from masec.lowering import lowering_for
from masec.meta import meta, set_meta


def select_kernels(gm, config):
    from dataclasses import replace

    from masec.ops import OPS
    from masec.passes.hw.build_ir import effective_lanes

    config = replace(config, parallelism=effective_lanes(gm, config.parallelism))
    changed = False
    for node in gm.graph.nodes:
        m = meta(node)
        if node.op in ("placeholder", "output", "get_attr") or OPS[m.op].layout:
            continue
        try:
            choice = lowering_for(node).choose(gm, node, config)
        except MasecError as exc:
            raise PassError(f"node `{node.name}` ({m.op}{', ' + m.source if m.source else ''}): {exc}") from None
        if m.kernel != choice:
            set_meta(node, m.with_(kernel=choice))
            changed = True
    return gm, changed
