"""Accuracy of the compiled design on held-out data: the model file's ``evaluate(model)`` run on
the float32 model and on the hardware-exact model (the IR's bit-exact reference), plus the top-1
agreement of their next-token predictions (``masec compile --evaluate``).

    acc = evaluate_design(module, gm, ir, eval_tokens=512)
    acc["float32"], acc["hardware_exact"], acc["top1_agreement"]     # 7.69, 7.9, 0.93
"""
from __future__ import annotations

import inspect

import torch

from masec.errors import MasecError
from masec.hwir import run_reference
from masec.reference import hardware_outputs


class HardwareExactModel(torch.nn.Module):
    """Called like the user's model (inputs -> output tensor), computed by the IR's bit-exact
    reference; also runs the float32 canonical graph on the same inputs to count how often their
    argmax over the last axis agrees."""

    def __init__(self, gm, ir, progress=None):
        super().__init__()
        # not submodules: an exported GraphModule refuses .eval()/.train()
        object.__setattr__(self, "gm", gm)
        object.__setattr__(self, "ir", ir)
        self.progress = progress
        self.agree = 0
        self.total = 0
        self.calls = 0

    def forward(self, *inputs):
        values = run_reference(self.ir, inputs)
        hw = hardware_outputs(self.ir, values)[0]
        with torch.no_grad():
            fl = self.gm(*inputs)
            fl = fl[0] if isinstance(fl, (tuple, list)) else fl
        hw = hw.reshape(fl.shape).to(fl.dtype)
        self.agree += int((hw.argmax(-1) == fl.argmax(-1)).sum())
        self.total += hw.argmax(-1).numel()
        self.calls += 1
        if self.progress:
            self.progress(self.calls)
        return hw


class FloatModel(torch.nn.Module):
    """The float32 canonical graph, callable like the user's model (and safe to ``.eval()``)."""

    def __init__(self, gm):
        super().__init__()
        object.__setattr__(self, "gm", gm)

    def forward(self, *inputs):
        out = self.gm(*inputs)
        return out[0] if isinstance(out, (tuple, list)) else out


def evaluate_design(module, gm, ir, eval_tokens: int | None = None, progress=None) -> dict:
    fn = getattr(module, "evaluate", None)
    if fn is None:
        raise MasecError("--evaluate: the model file defines no `evaluate(model) -> float` (e.g. perplexity on "
                         "held-out text); define one or drop --evaluate")
    kwargs = {}
    if eval_tokens and "n_tokens" in inspect.signature(fn).parameters:
        kwargs["n_tokens"] = int(eval_tokens)
    with torch.no_grad():
        f32 = float(fn(FloatModel(gm), **kwargs))
        hw_model = HardwareExactModel(gm, ir, progress)
        hw = float(fn(hw_model, **kwargs))
    return {"metric": getattr(module, "metric_name", "metric"), "float32": f32, "hardware_exact": hw,
            "relative_change": (hw - f32) / abs(f32) if f32 else float("nan"),
            "top1_agreement": hw_model.agree / hw_model.total if hw_model.total else float("nan"),
            "positions": hw_model.total, "eval_tokens": kwargs.get("n_tokens")}
