from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from masec.frontend import load_model_file, normalize, trace
from masec.meta import meta

MODELS = Path(__file__).parent / "models"


def test_callables_and_other_names():
    model, inputs = load_model_file(MODELS / "names.py", "my_net", "my_inputs")
    assert isinstance(model, nn.Module) and not model.training
    assert isinstance(inputs, tuple) and inputs[0].shape == (2, 32)


def test_canonical_ops_and_source_lines():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 16))

        def forward(self, x):
            y = F.linear(x, self.w)
            return torch.relu(y) * y + y

    gm = normalize(trace(M(), __file__), {"linear", "relu", "mul", "add", "constant"}, __file__)
    ops = [meta(n).op for n in gm.graph.nodes]
    assert ops == ["input", "constant", "linear", "relu", "mul", "add", "output"]
    lin = next(n for n in gm.graph.nodes if meta(n).op == "linear")
    assert meta(lin).source.startswith("test_frontend.py:") and "F.linear(x, self.w)" in meta(lin).source
