"""Float32 outputs of the canonical graph and the distance of the hardware-exact outputs from them.

The hardware-exact execution itself is :func:`masec.hwir.run_reference` (it runs the IR).
"""
from __future__ import annotations

import math

import torch

from masec.hwir import IntValue, view_value


def float_outputs(gm, example_inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        res = gm(*example_inputs)
    # tensors in output order (a tuple, or a pytree such as HF's ModelOutput with use_cache=False)
    return [t for t in torch.utils._pytree.tree_leaves(res) if isinstance(t, torch.Tensor)]


def hardware_outputs(ir, values) -> list[torch.Tensor]:
    """The decoded hardware-exact value of every model output (in output order)."""
    outs = []
    for inst in ir.outputs:
        v = view_value(values[(inst.name, 0)], inst.in_types[0])
        outs.append(v.values if isinstance(v, IntValue) else v.to_float())
    return outs


def accuracy(gm, ir, example_inputs, values: dict) -> list[dict]:
    """Distance of the hardware-exact outputs from the float32 model, per model output.

    ``rel_rms`` = ||hw - float|| / ||float||, ``sqnr_db`` = 20 log10(1 / rel_rms), ``max_abs``.
    """
    rows = []
    for inst, hw, ref in zip(ir.outputs, hardware_outputs(ir, values), float_outputs(gm, example_inputs)):
        ref = ref.detach().to(torch.float32)
        err = (hw.to(torch.float32) - ref).double()
        norm = ref.double().norm().item()
        rel = err.norm().item() / norm if norm else float("nan")
        rows.append({"output": inst.node, "rel_rms": rel, "max_abs": err.abs().max().item(),
                     "sqnr_db": (20 * math.log10(1 / rel)) if rel and rel == rel else float("inf")})
    return rows
