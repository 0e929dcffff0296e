"""The hardware-exact execution of a compiled graph, from the kernels' bit-exact models.

``run_reference(gm, example_inputs)`` quantizes each input to its format (exactly what the
testbench streams in) and runs every node's kernel model in graph order; the result is, bit for
bit, what the RTL must produce. ``float_outputs`` gives the float32 model's outputs beside it.
"""
from __future__ import annotations

import torch

from masec.lowering import MXValue, lowering_for
from masec.meta import meta


def run_reference(gm, example_inputs) -> dict[str, MXValue]:
    values: dict[str, MXValue] = {}
    inputs = iter(example_inputs)
    for node in gm.graph.nodes:
        m = meta(node)
        if node.op == "placeholder":
            values[node.name] = MXValue.from_float(next(inputs), m.formats["out"])
        elif node.op in ("output", "get_attr"):
            continue  # parameters are read by the lowerings of the ops that use them
        else:
            low = lowering_for(node)
            args = [values[a.name] for a in low.tensor_args(node)]
            values[node.name] = low.reference(gm, node, args)
    return values


def output_nodes(gm) -> list:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    args = out.args[0]
    return list(args) if isinstance(args, (tuple, list)) else [args]


def float_outputs(gm, example_inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        res = gm(*example_inputs)
    return list(res) if isinstance(res, (tuple, list)) else [res]


def accuracy(gm, example_inputs, values: dict) -> list[dict]:
    """Distance of the hardware-exact outputs from the float32 model, per model output.

    ``rel_rms`` = ||hw - float|| / ||float||, ``sqnr_db`` = 20 log10(1 / rel_rms), ``max_abs``.
    """
    import math

    rows = []
    for node, ref in zip(output_nodes(gm), float_outputs(gm, example_inputs)):
        hw = values[node.name].to_float()
        ref = ref.detach().to(torch.float32)
        err = (hw - ref).double()
        norm = ref.double().norm().item()
        rel = err.norm().item() / norm if norm else float("nan")
        rows.append({"output": node.name, "rel_rms": rel, "max_abs": err.abs().max().item(),
                     "sqnr_db": (20 * math.log10(1 / rel)) if rel and rel == rel else float("inf")})
    return rows
