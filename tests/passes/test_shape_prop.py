import pytest
import torch
import torch.nn as nn

from masec.errors import PassError
from masec.frontend import export, normalize
from masec.meta import meta
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.transform.canonicalize import canonicalize


def canonical(model, inputs):
    gm = export(model.eval(), inputs)
    canonicalize(gm, inputs)
    return normalize(gm, "m.py")


def test_records_every_node_shape():
    gm = canonical(nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 8)), (torch.randn(5, 32),))
    shapes = shape_prop(gm, (torch.randn(5, 32),))
    computed = [n for n in gm.graph.nodes if n.op in ("placeholder", "call_function")]
    assert [shapes[n.name] for n in computed] == [(5, 32), (5, 48), (5, 48), (5, 8)]
    assert [meta(n).shape for n in computed] == [(5, 32), (5, 48), (5, 48), (5, 8)]
    params = [n for n in gm.graph.nodes if n.op == "get_attr"]
    assert sorted(meta(n).shape for n in params) == [(8,), (8, 48), (48,), (48, 32)]
    assert all(meta(n).dtype == "float32" for n in gm.graph.nodes if n.op != "output")


def test_wrong_example_input_names_the_node():
    gm = canonical(nn.Sequential(nn.Linear(32, 48)), (torch.randn(5, 32),))
    lin = next(n for n in gm.graph.nodes if meta(n).op == "linear")
    with pytest.raises(PassError, match=f"example inputs.*node `{lin.name}`"):
        shape_prop(gm, (torch.randn(5, 31),))
