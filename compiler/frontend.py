"""Frontend: load the user's ``model.py``, capture it with ``torch.export``, name every node's op.

The model-file contract (README "Your model file"): ``model.py`` defines ``model`` (an
``nn.Module`` or a zero-argument callable returning one) and ``example_inputs`` (a tensor, a
tuple of tensors, or a zero-argument callable returning them). ``--model`` / ``--inputs`` pick
other names.

Every node leaves with ``node.meta["masec"] = NodeMeta(op=<canonical op>, source=<user line>)``.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import traceback
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from masec.errors import MasecError, UnsupportedOpError
from masec.meta import NodeMeta, set_meta

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
    return load_model_namespace(path, model_name, inputs_name)[:2]


def load_model_namespace(path, model_name: str = "model", inputs_name: str = "example_inputs"):
    """``(nn.Module, inputs_tuple, imported module)``: the third gives optional names (``tokenizer``)."""
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
    checked = []
    for i, t in enumerate(inputs):
        what = f"{path}: `{inputs_name}`[{i}] (shape {tuple(t.shape)}, {str(t.dtype).replace('torch.', '')})"
        if t.numel() == 0:
            raise MasecError(f"{what} is empty; give example inputs with at least one element (they fix the "
                             f"shapes the hardware is built for)")
        if t.is_floating_point():
            if not torch.isfinite(t).all():
                raise MasecError(f"{what} contains NaN or Inf; masec's MX kernels compute finite values only "
                                 f"(docs/formats.md), so give finite example inputs")
            t = t.to(torch.float32)
        elif t.dtype == torch.bool or t.is_complex():
            raise MasecError(f"{what}: inputs must be float tensors (activations) or integer tensors (token ids "
                             f"into an embedding)")
        else:
            t = t.to(torch.int64)
        checked.append(t)
    return model.eval(), tuple(checked), module


def export(model: nn.Module, inputs: tuple, path: str = "model.py") -> fx.GraphModule:
    """``torch.export`` the model with static shapes from ``inputs``; an fx GraphModule whose
    parameters and buffers are ``get_attr`` nodes and whose nodes carry the user's stack traces."""
    import torch.export

    import logging

    quiet = [logging.getLogger(name) for name in ("torch", "torch._dynamo", "torch.fx", "torch.export")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:   # torch.export logs warnings and partial graphs on failure; masec says one line
            lg.setLevel(logging.CRITICAL)
        logging.disable(logging.CRITICAL)
        with torch.no_grad(), _stderr_held() as held:
            ep = torch.export.export(model, tuple(inputs), strict=False)
        sys.stderr.write(held.text())   # a successful export's messages (the model's own prints) go on
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        target = str(Path(path).resolve())
        user = [f for f in tb if str(Path(f.filename).resolve()) == target] or \
               [f for f in tb if "site-packages" not in f.filename and "/torch/" not in f.filename
                and "/masec/" not in f.filename and "compiler/" not in f.filename]
        where = f" at {Path(user[-1].filename).name}:{user[-1].lineno} ({user[-1].line})" if user else ""
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MasecError(f"{path}: torch.export cannot capture the model{where}: {type(exc).__name__}: {reason}. "
                         f"Data-dependent Python control flow (if/for on tensor values) cannot be compiled; "
                         f"rewrite it with tensor ops") from None
    finally:
        logging.disable(logging.NOTSET)
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    gm = ep.module()
    return gm


class _Held:
    def __init__(self, f, buf):
        self.f, self.buf = f, buf

    def text(self) -> str:
        self.f.seek(0)
        return self.f.read().decode(errors="replace") + self.buf.getvalue()


class _stderr_held:
    """Hold what is written to file descriptor 2 (torch's C++ and Python logs) while exporting."""

    def __enter__(self) -> _Held:
        import io
        import os
        import tempfile

        sys.stderr.flush()
        self.tmp = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.tmp.fileno(), 2)
        self.py_stderr, self.buf = sys.stderr, io.StringIO()
        sys.stderr = self.buf
        return _Held(self.tmp, self.buf)

    def __exit__(self, *exc):
        import os

        sys.stderr = self.py_stderr
        os.dup2(self.saved, 2)
        os.close(self.saved)
        return False


def user_source(node, path: str = "") -> str:
    return _user_frame(node.meta.get("stack_trace"), path)


def module_path(node) -> str:
    """The dotted path of the innermost user module that produced ``node`` ('' at top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path).replace("._modules['", ".").replace("']", "")
    return path.strip(".")


def normalize(gm: fx.GraphModule, path: str = "model.py") -> fx.GraphModule:
    """Give every node its ``NodeMeta(op, source, path)``; raise UnsupportedOpError naming the first
    node that is not a canonical op after the rewrites."""
    from masec.lowering import supported_ops
    from masec.ops import OPS, op_of

    supported = supported_ops() | {name for name, d in OPS.items() if d.layout}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            op = "input"
        elif node.op == "output":
            op = "output"
        elif node.op == "get_attr":
            op = "constant"
        else:
            op = op_of(node)
        source = user_source(node, path)
        if op is None or (op not in supported and op not in ("input", "output", "constant")):
            where = f" at {source}" if source else ""
            what = getattr(node.target, "__name__", str(node.target))
            raise UnsupportedOpError(
                f"{path}: node `{node.name}` ({what}){where} is not supported; "
                f"supported ops: {', '.join(sorted(supported))}")
        set_meta(node, NodeMeta(op=op, source=source, path=module_path(node)))
    _name_by_module(gm)
    return gm


def _name_by_module(gm: fx.GraphModule) -> None:
    """Rename compute nodes after the user's modules: ``layers_0_attention_wq`` for the linear of
    ``layers.0.attention.wq``; ``layers_0_attention_softmax`` (``_1``, ...) where a module holds
    several ops. Report rows, SV instances and memory files then read like the model."""
    from masec.meta import meta

    compute = [n for n in gm.graph.nodes if n.op == "call_function"]
    by_path: dict[str, list] = {}
    for n in compute:
        by_path.setdefault(meta(n).path, []).append(n)
    for path, nodes in by_path.items():
        if not path:
            continue
        stem = re.sub(r"[^A-Za-z0-9_]", "_", path)
        if len(nodes) == 1:
            nodes[0]._rename(stem)
            continue
        counts: dict[str, int] = {}
        for n in nodes:
            op = meta(n).op
            k = counts.get(op, 0)
            counts[op] = k + 1
            n._rename(f"{stem}_{op}" + (f"_{k}" if k else ""))
    gm.recompile()
