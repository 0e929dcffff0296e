import pytest
import torch
import torch.nn as nn

from masec.config import CompileConfig
from masec.errors import UnsupportedOpError
from masec.frontend import export, normalize
from masec.meta import meta
from masec.ops import OPS
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.transform.assign_formats import assign_formats
from masec.passes.transform.canonicalize import canonicalize
from masec.passes.transform.select_kernels import select_kernels


def prepared(model, inputs, **cfg):
    gm = export(model.eval(), inputs)
    canonicalize(gm, inputs)
    normalize(gm, "m.py")
    shape_prop(gm, inputs)
    config = CompileConfig(model_file="m.py", out="o", **cfg).validated()
    assign_formats(gm, config)
    return gm, config


def test_linear_and_relu_get_their_kernels_with_memories_and_cycles():
    gm, cfg = prepared(nn.Sequential(nn.Linear(64, 40), nn.ReLU()), (torch.randn(3, 64),), parallelism=8)
    gm, changed = select_kernels(gm, cfg)
    assert changed
    lin, relu = [meta(n) for n in gm.graph.nodes if n.op == "call_function"]
    assert lin.kernel.kernel == "mx_linear" and relu.kernel.kernel == "mx_relu"
    p = lin.kernel.params_dict
    assert (p["IN"], p["OUT"], p["P_IN"], p["P_OUT"], p["HAS_BIAS"]) == (64, 40, 8, 8, 1)
    assert p["W_MEM"].endswith("_w.mem") and p["B_MEM"].endswith("_b.mem")
    assert lin.kernel.ideal_cycles == 3 * (40 // 8) * (64 // 8)
    assert select_kernels(gm, cfg) == (gm, False)


def test_layout_ops_get_no_kernel():
    class M(nn.Module):
        def forward(self, x):
            return torch.relu(x.view(2, 4, 16).transpose(0, 1))

    gm, cfg = prepared(M(), (torch.randn(8, 16),))
    select_kernels(gm, cfg)
    kinds = {meta(n).op: meta(n).kernel for n in gm.graph.nodes if n.op == "call_function"}
    assert "gather_rows" in kinds and kinds["relu"].kernel == "mx_relu"
    assert all(k is None for op, k in kinds.items() if OPS[op].layout)


def test_broadcast_add_is_refused_with_the_node_name_and_line():
    class M(nn.Module):
        def forward(self, x, y):
            return torch.relu(x) + torch.relu(y)

    with pytest.raises(UnsupportedOpError, match=r"node `add\w*` .*test_select_kernels.py:\d+: .*torch.relu\(x\) \+"):
        prepared(M(), (torch.randn(2, 32), torch.randn(1, 32)))
