import pytest
import torch
import torch.nn as nn

from masec.errors import PassError
from masec.frontend import normalize, trace
from masec.meta import meta
from masec.passes.analysis.shape_prop import shape_prop

OPS = {"linear", "relu"}


def test_records_every_node_shape():
    gm = normalize(trace(nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 8))), OPS)
    shapes = shape_prop(gm, (torch.randn(5, 32),))
    assert list(shapes.values()) == [(5, 32), (5, 48), (5, 48), (5, 8)]
    assert [meta(n).shape for n in gm.graph.nodes if n.op != "output"] == list(shapes.values())
    assert all(meta(n).dtype == "float32" for n in gm.graph.nodes if n.op != "output")


def test_wrong_example_input_names_the_node():
    gm = normalize(trace(nn.Sequential(nn.Linear(32, 48))), OPS)
    with pytest.raises(PassError, match="example inputs.*node `_0`"):
        shape_prop(gm, (torch.randn(5, 31),))
