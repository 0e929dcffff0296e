"""masec's canonical ops: the float semantics of every op the compiler lowers to hardware.

The canonical graph is a ``torch.fx.GraphModule`` whose compute nodes call these functions, so
it stays executable: ``gm(*example_inputs)`` is the float32 model (the search's fake-quant runs
it too). Parameters (weights, norm gains, RoPE tables) are ``get_attr`` nodes; everything else
an op needs (eps, scale, causal, row indices) is a plain constant argument.

Each op is declared once, in :data:`OPS`: its function, which arguments are tensor streams and
which are parameters. Its lowering (kernel choice, bit-exact model, memories) lives in
``masec.lowering.<file>`` and registers under the same name; the patterns that produce it from
aten live in ``masec.passes.transform.canonicalize`` (one function per pattern, named after it).

Layout ops: ``view`` reinterprets the row-major element order under another shape (free in
hardware when the MX block divides both last dims); ``gather_rows`` picks whole rows of the last
axis by a constant index (head split/merge, transposes of non-last axes, GQA repeats) and is a
``stream_reorder`` corner turn in block RAM.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def linear(x, weight, bias=None):
    return F.linear(x, weight, bias)


def matmul(a, b, trans_b: bool = False):
    """``a @ b`` (or ``a @ b^T``) over the last two axes, same leading axes on both operands."""
    return torch.matmul(a, b.transpose(-2, -1) if trans_b else b)


def softmax(x, scale: float = 1.0, causal: bool = False, key_mask=None):
    """softmax(scale * x) over the last axis; ``causal`` keeps column j <= row i (row = axis -2);
    ``key_mask`` (a bool tensor over the last axis, True = keep) drops padded keys."""
    s = x * scale if scale != 1.0 else x
    if causal:
        t, n = s.shape[-2], s.shape[-1]
        keep = torch.ones(t, n, dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    if key_mask is not None:
        s = s.masked_fill(~key_mask.to(torch.bool), float("-inf"))
    return torch.softmax(s, dim=-1)


def rms_norm(x, weight, eps: float):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def layer_norm(x, weight, bias, eps: float):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def relu(x):
    return torch.relu(x)


def gelu(x):
    return F.gelu(x)


def gelu_tanh(x):
    """GELU, tanh form (GPT-2's ``gelu_new``, ``F.gelu(approximate="tanh")``)."""
    return F.gelu(x, approximate="tanh")


def silu(x):
    return F.silu(x)


def add(a, b):
    return a + b


def mul(a, b):
    return a * b


def rope(x, cos, sin):
    """Interleaved-pair rotary embedding: pairs ``(x[2i], x[2i+1])`` rotated by the tables
    ``cos``/``sin`` (shape broadcastable to ``x[..., ::2]``), as llama2.c / Meta LLaMA apply it."""
    xr, xi = x[..., 0::2], x[..., 1::2]
    return torch.stack([xr * cos - xi * sin, xr * sin + xi * cos], dim=-1).flatten(-2)


def embedding(ids, weight):
    return F.embedding(ids, weight)


def view(x, shape: tuple):
    return x.reshape(shape)


def gather_rows(x, index: tuple, shape: tuple):
    """Rows of the last axis picked by ``index`` (one input row per output row), reshaped to ``shape``."""
    rows = x.reshape(-1, x.shape[-1])
    return rows[torch.tensor(index, dtype=torch.long, device=x.device)].reshape(shape)


@dataclass(frozen=True)
class OpDecl:
    """One canonical op: its float function, which positional args are streams / parameters."""
    name: str
    fn: object
    streams: tuple[int, ...]          # positions of activation-stream arguments
    params: tuple[tuple[int, str], ...] = ()   # (position, port name) of parameter tensors
    layout: bool = False              # pure data movement (no arithmetic, no format of its own)


OPS: dict[str, OpDecl] = {d.name: d for d in (
    OpDecl("linear", linear, (0,), ((1, "weight"), (2, "bias"))),
    OpDecl("matmul", matmul, (0, 1)),
    OpDecl("softmax", softmax, (0,)),
    OpDecl("rms_norm", rms_norm, (0,), ((1, "weight"),)),
    OpDecl("layer_norm", layer_norm, (0,), ((1, "weight"), (2, "bias"))),
    OpDecl("relu", relu, (0,)),
    OpDecl("gelu", gelu, (0,)),
    OpDecl("silu", silu, (0,)),
    OpDecl("gelu_tanh", gelu_tanh, (0,)),
    OpDecl("add", add, (0, 1)),
    OpDecl("mul", mul, (0, 1)),
    OpDecl("rope", rope, (0,), ((1, "cos"), (2, "sin"))),
    OpDecl("embedding", embedding, (0,), ((1, "weight"),)),
    OpDecl("view", view, (0,), layout=True),
    OpDecl("gather_rows", gather_rows, (0,), layout=True),
)}

FN_TO_OP = {d.fn: d.name for d in OPS.values()}


def op_of(node) -> str | None:
    """The canonical op name of an fx node, or None."""
    if node.op == "call_function":
        return FN_TO_OP.get(node.target)
    return None
