"""Format annotation: give every tensor port of every node its number format.

Reads: ``NodeMeta.op``. Writes: ``NodeMeta.formats`` — ``"out"`` for every node's output, and
``"weight"`` / ``"bias"`` (or the kernel's other parameter ports) for nodes with parameters.
Today one format for the whole graph (the precision search will choose per node). Idempotent::

    gm, changed = annotate_formats(gm, config)   # changed is False the second time
"""
from __future__ import annotations

from masec.meta import meta, set_meta

#: parameter ports per canonical op (besides the activation output)
PARAM_PORTS = {"linear": ("weight", "bias"), "layer_norm": ("weight", "bias"), "rms_norm": ("weight",),
               "embedding": ("weight",)}


def annotate_formats(gm, config):
    fmt = config.tensor_format()
    changed = False
    for node in gm.graph.nodes:
        m = meta(node)
        want = {"out": fmt}
        for port in PARAM_PORTS.get(m.op, ()):
            want[port] = fmt
        if m.op in ("output", "constant"):
            want = {}  # outputs keep the formats of the tensors they return
        if m.formats != want:
            set_meta(node, m.with_(formats=want))
            changed = True
    return gm, changed
