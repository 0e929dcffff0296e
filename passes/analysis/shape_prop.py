"""Shape propagation: run the example inputs through the graph, record every node's output shape.

Reads: ``NodeMeta.op``. Writes: ``NodeMeta.shape``, ``NodeMeta.dtype``. Example::

    shape_prop(gm, example_inputs)   # then meta(node).shape == (batch, 64) for a Linear(.., 64)
"""
from __future__ import annotations

import torch
from torch.fx.passes.shape_prop import ShapeProp

from masec.errors import PassError
from masec.meta import meta, set_meta


def shape_prop(gm, example_inputs) -> dict[str, tuple[int, ...]]:
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as exc:
        node = next((n for n in gm.graph.nodes if "tensor_meta" not in n.meta and n.op != "output"), None)
        at = f" at node `{node.name}` ({meta(node).source or node.op})" if node is not None else ""
        raise PassError(f"running the example inputs through the model failed{at}: {type(exc).__name__}: {exc}") from None
    shapes = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            continue  # the output node's shapes are those of its arguments
        tm = node.meta.get("tensor_meta")
        if node.op == "get_attr" and tm is None:
            v = gm
            for part in node.target.split("."):
                v = getattr(v, part)
            set_meta(node, meta(node).with_(shape=tuple(v.shape), dtype=str(v.dtype).replace("torch.", "")))
            continue
        if tm is None or not hasattr(tm, "shape"):
            raise PassError(f"node `{node.name}` does not produce a single tensor; masec streams one tensor per edge")
        shape = tuple(int(s) for s in tm.shape)
        set_meta(node, meta(node).with_(shape=shape, dtype=str(tm.dtype).replace("torch.", "")))
        shapes[node.name] = shape
    return shapes
