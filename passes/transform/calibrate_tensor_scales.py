"""calibrate_tensor_scales: the compile-time tensor scale of every NVFP4 activation.

Reads ``NodeMeta.formats["out"]`` (after ``assign_formats``) and the example inputs. Writes
``TensorFormat.ts_exp`` on every activation in ``nvfp4``: NVFP4's FP32 tensor scale is, in masec's
hardware, the power of two 2^ts_exp that ``mx_quantize.nvfp4_tensor_scale_exp`` gives for the
tensor's largest magnitude in the float32 model on the example inputs (rounded up, so block scales
stay <= 448 up to that amax). A ``view`` or ``relu`` passes its input's codes on and keeps its
scale. The producer's quantizer (``Y_TS_EXP``), the consumer's decode (``X_TS_EXP``), the
testbench's input quantization and the bit-exact reference all use this one value; the report
shows it (``nvfp4/B16 s_t=2^-5``).

    changed = calibrate_tensor_scales(gm, example_inputs)   # False the second time
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.fx as fx

from masec.errors import MasecError
from masec.meta import meta, set_meta

_PASS_ON = ("view", "relu")


class _Amax(fx.Interpreter):
    def __init__(self, gm, wanted):
        super().__init__(gm)
        self.wanted, self.amax = wanted, {}

    def run_node(self, n):
        out = super().run_node(n)
        if n in self.wanted:
            self.amax[n] = float(out.detach().abs().max()) if out.numel() else 0.0
        return out


def calibrate_tensor_scales(gm, example_inputs) -> bool:
    from masec.hw_templates.kernels.mx_quantize import nvfp4_tensor_scale_exp

    nodes = [n for n in gm.graph.nodes if "masec" in n.meta and meta(n).formats.get("out") is not None
             and meta(n).formats["out"].name == "nvfp4"]
    if not nodes:
        return False
    wanted = {n for n in nodes if meta(n).op not in _PASS_ON}
    run = _Amax(gm, wanted)
    with torch.no_grad():
        run.run(*example_inputs)
    changed = False
    for n in nodes:   # graph order: a view/relu's input is calibrated before it
        m = meta(n)
        f = m.formats["out"]
        if n in wanted:
            try:
                ts = nvfp4_tensor_scale_exp(run.amax[n])
            except ValueError as exc:
                raise MasecError(f"node `{n.name}` ({m.op}): port out: nvfp4 tensor scale: {exc} on the example "
                                 f"inputs; give this tensor another act format or other example inputs") from None
        else:
            ts = meta(n.args[0]).formats["out"].ts_exp
        if f.ts_exp != ts:
            set_meta(n, m.with_(formats={**m.formats, "out": replace(f, ts_exp=ts)}))
            changed = True
    return changed
