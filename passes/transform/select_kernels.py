"""Kernel selection: choose the hardware kernel and its parameters for every compute node.

Reads: ``NodeMeta.op``, ``.shape``, ``.formats``, ``.folding`` (the node's lanes from
``passes.hw.fold``; without it, the global ``--parallelism`` capped by the smallest block).
Writes: ``NodeMeta.kernel`` (a KernelChoice from the op's lowering, which reads the kernel
manifest). Idempotent::

    gm, changed = select_kernels(gm, config)   # meta(node).kernel.kernel == "mx_linear"
"""
from __future__ import annotations

from dataclasses import replace

from masec.errors import MasecError, PassError
from masec.lowering import lowering_for
from masec.meta import meta, set_meta


def node_lanes(gm, node, config) -> int:
    """The lanes of ``node``: its Folding record, else the global lane count."""
    from masec.passes.hw.build_ir import effective_lanes

    f = meta(node).folding
    return f.lanes if f is not None else effective_lanes(gm, config.parallelism)


def choose_at(gm, node, config, lanes: int):
    """The KernelChoice of ``node`` at ``lanes`` lanes (what its lowering picks); MasecError if illegal.

    Every kernel streams whole blocks per beat group: the lanes divide the block of each MX stream
    it reads and writes; the lowering and the kernel check the rest (RoPE: even lanes dividing head_dim).
    """
    low = lowering_for(node)
    blocks = sorted({f.block_size for f in [meta(a).formats.get("out") for a in low.tensor_args(node)]
                     + [meta(node).formats.get("out")] if f is not None})
    if lanes < 1 or any(b % lanes for b in blocks):
        raise MasecError(f"lanes {lanes} must divide the block size of every stream it reads and writes "
                         f"({', '.join(map(str, blocks))})")
    try:
        return low.choose(gm, node, replace(config, parallelism=lanes))
    except ValueError as exc:   # a kernel's instance_config refusing the parameters
        raise MasecError(str(exc)) from None


def select_kernels(gm, config):
    from masec.ops import OPS

    changed = False
    for node in gm.graph.nodes:
        m = meta(node)
        if node.op in ("placeholder", "output", "get_attr") or OPS[m.op].layout:
            continue
        try:
            choice = choose_at(gm, node, config, node_lanes(gm, node, config))
        except MasecError as exc:
            raise PassError(f"node `{node.name}` ({m.op}{', ' + m.source if m.source else ''}): {exc}") from None
        if m.kernel != choice:
            set_meta(node, m.with_(kernel=choice))
            changed = True
    return gm, changed
