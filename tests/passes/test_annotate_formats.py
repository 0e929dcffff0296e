import torch
import torch.nn as nn

from masec.config import CompileConfig
from masec.frontend import normalize, trace
from masec.meta import TensorFormat, meta
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.transform.annotate_formats import annotate_formats


def test_every_port_gets_the_configured_format_and_rerun_changes_nothing():
    gm = normalize(trace(nn.Sequential(nn.Linear(32, 48), nn.ReLU())), {"linear", "relu"})
    shape_prop(gm, (torch.randn(2, 32),))
    cfg = CompileConfig(model_file="m.py", out="o", format="mxfp8_e4m3", block_size=16).validated()
    gm, changed = annotate_formats(gm, cfg)
    assert changed
    want = TensorFormat("mxfp8_e4m3", 16, -1, "even")
    lin = next(n for n in gm.graph.nodes if meta(n).op == "linear")
    assert meta(lin).formats == {"out": want, "weight": want, "bias": want}
    relu = next(n for n in gm.graph.nodes if meta(n).op == "relu")
    assert meta(relu).formats == {"out": want}
    assert annotate_formats(gm, cfg) == (gm, False)
