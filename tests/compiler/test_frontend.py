"""Frontend: model-file loading, torch.export capture, canonical op names and user source lines."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from masec.errors import MasecError, UnsupportedOpError
from masec.frontend import export, load_model_file, module_path, normalize
from masec.meta import meta
from masec.passes.transform.canonicalize import canonicalize

MODELS = Path(__file__).parent / "models"


def front(model, inputs, path=__file__):
    gm = export(model.eval(), inputs, path)
    canonicalize(gm, inputs)
    return normalize(gm, path)


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

    gm = front(M(), (torch.randn(2, 16),))
    ops = [meta(n).op for n in gm.graph.nodes]
    assert ops == ["constant", "input", "linear", "relu", "mul", "add", "output"]
    lin = next(n for n in gm.graph.nodes if meta(n).op == "linear")
    assert meta(lin).source.startswith("test_frontend.py:") and "F.linear(x, self.w)" in meta(lin).source


def test_module_paths_name_the_user_module():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x):
            return self.fc(x)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Inner(), Inner()])

        def forward(self, x):
            return self.layers[1](self.layers[0](x))

    gm = front(Outer(), (torch.randn(2, 16),))
    lins = [n for n in gm.graph.nodes if meta(n).op == "linear"]
    assert [module_path(n) for n in lins] == ["layers.0.fc", "layers.1.fc"]
    assert [meta(n).path for n in lins] == ["layers.0.fc", "layers.1.fc"]


def test_unsupported_op_names_node_line_and_supported_ops():
    class M(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    with pytest.raises(UnsupportedOpError) as exc:
        front(M(), (torch.randn(2, 16),))
    msg = str(exc.value)
    assert "`sin`" in msg and "test_frontend.py:" in msg and "torch.sin(x)" in msg
    assert "supported ops:" in msg and "linear" in msg and "softmax" in msg


def test_data_dependent_control_flow_names_the_line():
    class M(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x

    with pytest.raises(MasecError, match=r"cannot capture the model at test_frontend.py:\d+ \(if x.sum\(\) > 0:\)"):
        export(M(), (torch.randn(2, 16),), __file__)


@pytest.mark.parametrize("inputs,needle", [
    ("torch.zeros(0, 32)", "is empty"),
    ("torch.full((2, 32), float('nan'))", "NaN or Inf"),
    ("torch.ones(2, 32, dtype=torch.bool)", "inputs must be float tensors"),
])
def test_bad_example_inputs_are_refused(tmp_path, inputs, needle):
    f = tmp_path / "m.py"
    f.write_text(f"import torch\nmodel = torch.nn.Linear(32, 32)\nexample_inputs = {inputs}\n")
    with pytest.raises(MasecError, match=needle):
        load_model_file(f)


def test_float64_inputs_become_float32_and_int_inputs_int64(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\nmodel = torch.nn.Linear(32, 32)\n"
                 "example_inputs = (torch.randn(2, 32, dtype=torch.float64), torch.arange(3, dtype=torch.int32))\n")
    _, (x, ids) = load_model_file(f)
    assert x.dtype == torch.float32 and ids.dtype == torch.int64
