"""Frontend: load the user's ``model.py``, trace it with torch.fx, normalize every node's op.

The model-file contract (README "Your model file"): ``model.py`` defines ``model`` (an
``nn.Module`` or a zero-argument callable returning one) and ``example_inputs`` (a tensor, a
tuple of tensors, or a zero-argument callable returning them). ``--model`` / ``--inputs`` pick
other names.

Every node leaves with ``node.meta["masec"] = NodeMeta(op=<canonical op>, source=<user line>)``.
"""
from __future__ import annotations

import importlib.util
import operator
import sys
import traceback
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from masec.errors import MasecError, UnsupportedOpError
from masec.meta import NodeMeta, set_meta

#: nn.Module types -> canonical op
MODULE_OPS: dict[type, str] = {
    nn.Linear: "linear", nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Softmax: "softmax",
    nn.LayerNorm: "layer_norm", nn.Embedding: "embedding", nn.Identity: "identity",
}
if hasattr(nn, "RMSNorm"):
    MODULE_OPS[nn.RMSNorm] = "rms_norm"

#: functions / methods -> canonical op
FUNCTION_OPS: dict[object, str] = {
    F.linear: "linear", F.relu: "relu", torch.relu: "relu", F.gelu: "gelu", F.silu: "silu",
    operator.add: "add", torch.add: "add", operator.mul: "mul", torch.mul: "mul",
    operator.matmul: "matmul", torch.matmul: "matmul", F.softmax: "softmax", torch.softmax: "softmax",
    F.layer_norm: "layer_norm", F.embedding: "embedding",
}
METHOD_OPS: dict[str, str] = {"relu": "relu", "add": "add", "mul": "mul", "matmul": "matmul", "softmax": "softmax"}


def _user_frame(stack_trace: str | None, model_file: str = "") -> str:
    """The innermost frame of the user's code in an fx stack trace, as 'file:line: code'.

    Frames in the model file win; otherwise the innermost frame outside torch and masec.
    """
    if not stack_trace:
        return ""
    lines = [ln.strip() for ln in stack_trace.strip().splitlines()]
    frames = []
    for i, ln in enumerate(lines):
        if ln.startswith('File "'):
            try:
                fname = ln.split('"')[1]
                lineno = ln.split("line ")[1].split(",")[0]
            except IndexError:
                continue
            code = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith('File "') else ""
            frames.append((fname, lineno, code))
    target = str(Path(model_file).resolve()) if model_file else None
    mine = [f for f in frames if target and str(Path(f[0]).resolve()) == target]
    if not mine:
        mine = [f for f in frames if "/torch/" not in f[0] and "site-packages" not in f[0] and "/masec/" not in f[0]]
    if not mine:
        return ""
    fname, lineno, code = mine[-1]
    return f"{Path(fname).name}:{lineno}: {code}".rstrip(": ")


def load_model_file(path, model_name: str = "model", inputs_name: str = "example_inputs"):
    """Import ``path`` and return ``(module, inputs_tuple)``; raise MasecError naming what is wrong."""
    path = Path(path)
    if not path.exists():
        raise MasecError(f"{path}: no such model file")
    if path.suffix != ".py" or not path.is_file():
        raise MasecError(f"{path}: the model file must be a Python file (model.py) defining "
                         f"`{model_name}` and `{inputs_name}`")
    mod_name = f"masec_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code failed: show where
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if f.filename == str(path)), str(path))
        raise MasecError(f"{path}: importing the model file failed at {where}: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.pop(0)

    def get(name, what):
        if not hasattr(module, name):
            flag = "--model" if what == "model" else "--inputs"
            raise MasecError(f"{path}: defines no `{name}` ({what}); define it or name another with {flag} NAME")
        return getattr(module, name)

    model = get(model_name, "model")
    if not isinstance(model, nn.Module) and callable(model):
        model = model()
    if not isinstance(model, nn.Module):
        raise MasecError(f"{path}: `{model_name}` must be an nn.Module or a zero-argument callable returning one, "
                         f"got {type(model).__name__}")
    inputs = get(inputs_name, "inputs")
    if callable(inputs) and not isinstance(inputs, torch.Tensor):
        inputs = inputs()
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not (isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs)):
        raise MasecError(f"{path}: `{inputs_name}` must be a tensor or a tuple of tensors "
                         f"(or a zero-argument callable returning them)")
    return model.eval(), tuple(inputs)


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True


def trace(model: nn.Module, path: str = "model.py") -> fx.GraphModule:
    """Symbolically trace ``model``; an untraceable model raises MasecError naming the line."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        user = [f for f in tb if "site-packages" not in f.filename and "/torch/" not in f.filename
                and "masec" not in f.filename]
        where = f" at {Path(user[-1].filename).name}:{user[-1].lineno} ({user[-1].line})" if user else ""
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MasecError(f"{path}: torch.fx cannot trace the model{where}: {reason}. "
                         f"Data-dependent Python control flow (if/for on tensor values) is not traceable; "
                         f"rewrite it with tensor ops") from None
    return fx.GraphModule(model, graph, model.__class__.__name__)


def canonical_op(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if node.op == "get_attr":
        return "constant"
    if node.op == "call_module":
        sub = gm.get_submodule(node.target)
        for cls in type(sub).__mro__:
            if cls in MODULE_OPS:
                return MODULE_OPS[cls]
        return None
    if node.op == "call_function":
        return FUNCTION_OPS.get(node.target)
    if node.op == "call_method":
        return METHOD_OPS.get(node.target)
    return None


def describe_target(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} module `{node.target}`"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)}"
    return f"{node.op} {node.target}"


def normalize(gm: fx.GraphModule, supported: set[str], path: str = "model.py") -> fx.GraphModule:
    """Give every node its canonical op; raise UnsupportedOpError for the first op masec cannot build."""
    for node in gm.graph.nodes:
        op = canonical_op(gm, node)
        source = _user_frame(node.stack_trace, path)
        if op is None or (op not in supported and op not in ("input", "output", "constant")):
            where = f" at {source}" if source else ""
            raise UnsupportedOpError(
                f"{path}: node `{node.name}` ({describe_target(gm, node)}){where} is not supported; "
                f"supported ops: {', '.join(sorted(supported))}")
        set_meta(node, NodeMeta(op=op, source=source))
    return gm
