import pytest
import torch
import torch.nn as nn

from masec.config import CompileConfig
from masec.errors import PassError
from masec.frontend import normalize, trace
from masec.lowering import supported_ops
from masec.meta import meta
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.transform.annotate_formats import annotate_formats
from masec.passes.transform.select_kernels import select_kernels


def prepared(model, x, **cfg):
    gm = normalize(trace(model), supported_ops())
    shape_prop(gm, (x,))
    config = CompileConfig(model_file="m.py", out="o", **cfg).validated()
    annotate_formats(gm, config)
    return gm, config


def test_linear_and_relu_get_their_kernels_with_memories_and_cycles():
    gm, cfg = prepared(nn.Sequential(nn.Linear(64, 40), nn.ReLU()), torch.randn(3, 64), parallelism=8)
    gm, changed = select_kernels(gm, cfg)
    assert changed
    lin, relu = [meta(n) for n in gm.graph.nodes if n.op == "call_module"]
    assert lin.kernel.kernel == "mx_linear" and relu.kernel.kernel == "mx_relu"
    p = lin.kernel.params_dict
    assert (p["IN"], p["OUT"], p["P_IN"], p["P_OUT"], p["HAS_BIAS"]) == (64, 40, 8, 8, 1)
    assert p["W_MEM"] == "_0_w.mem"
    assert lin.kernel.ideal_cycles == 3 * (40 // 8) * (64 // 8)
    assert select_kernels(gm, cfg) == (gm, False)


def test_broadcast_add_is_refused_with_the_node_name():
    class M(nn.Module):
        def forward(self, x, y):
            return x + y

    gm = normalize(trace(M()), supported_ops())
    shape_prop(gm, (torch.randn(2, 32), torch.randn(1, 32)))
    cfg = CompileConfig(model_file="m.py", out="o").validated()
    annotate_formats(gm, cfg)
    with pytest.raises(PassError, match="node `add`.*broadcasting is not supported"):
        select_kernels(gm, cfg)
