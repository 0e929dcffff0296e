"""rope_half: rotate-half RoPE (HuggingFace Llama) as masec's interleaved-pair ``rope``.

HF applies RoPE in ``[B, H, T, D]`` layout after the head transpose::

    q_embed = q * cos + rotate_half(q) * sin,    rotate_half(x) = cat((-x[..., D/2:], x[..., :D/2]), -1)

with ``cos = cat(freqs, freqs).cos()`` (both halves equal). masec's RoPE kernel (``mx_rope``)
rotates interleaved pairs ``(x[2i], x[2i+1])``. With ``P`` the per-head permutation that
interleaves the halves (``z[2i] = q[i]``, ``z[2i+1] = q[i + D/2]``), exactly::

    rotate_half_rope(q) = P^T · rope_interleaved(P · q, cos[..., :D/2], sin[..., :D/2])

``P`` folds into the rows of the projection that made ``q`` (head by head: output feature
``h*D + k`` takes row ``h*D + perm[k]``, bias likewise), and ``P^T`` on the output can be dropped
when the rotated q and k only meet in ``matmul(q, k, trans_b=True)``: ``(Pq)·(Pk) = q·k``.

The rule :func:`rope_half_at_matmul` matches at such a matmul (``aten.matmul(a, b.transpose(-2,
-1))`` or ``ops.matmul(a, b, True)``), traces both operands back through layout ops that keep the
last axis (views, transposes/permutes of other axes, expand, GQA repeats, ``gather_rows``) to a
rotate-half pattern, and each pattern's input back (through layout ops that keep ``head_dim``) to
a linear with a constant weight whose output features split into heads of ``D``. Only then does it
permute those weight rows (and bias) and replace each pattern by ``ops.rope``. Anything else
(the tables' halves differ, the rotated tensor or the projection has other users, a layout op
moves elements inside the last axis, D odd) leaves the graph unchanged, so the user gets the
unsupported-op error with their line. The float model is unchanged up to float rounding.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from masec import ops

aten = torch.ops.aten

_VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints,
          aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default)
_MOVES = (aten.transpose.int, aten.permute.default, aten.expand.default, aten.repeat_interleave.self_int,
          aten.select.int, aten.slice.Tensor)
_ADD = (aten.add.Tensor, ops.add)
_MUL = (aten.mul.Tensor, ops.mul)
_LINEAR = (aten.linear.default, ops.linear)


def _is(n, *targets) -> bool:
    return isinstance(n, fx.Node) and n.op == "call_function" and n.target in targets


def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _keeps_last_axis(ctx, n: fx.Node) -> bool:
    """``n`` is a layout op whose output rows are whole input rows of the same last axis (every
    element keeps its position inside its row)."""
    if _is(n, ops.view, ops.gather_rows) or _is(n, *_VIEWS):
        return len(ctx.shape(n)) > 0 and ctx.shape(n)[-1] == ctx.shape(n.args[0])[-1]
    if not _is(n, *_MOVES):
        return False
    xs, ys = ctx.shape(n.args[0]), ctx.shape(n)
    if not xs or not ys or xs[-1] != ys[-1]:
        return False
    rank = len(xs)
    if n.target is aten.transpose.int:
        return rank - 1 not in {_dim(n.args[1], rank), _dim(n.args[2], rank)}
    if n.target is aten.permute.default:
        return _dim(n.args[1][-1], rank) == rank - 1
    if n.target in (aten.select.int, aten.slice.Tensor):
        return _dim(n.args[1], rank) != rank - 1
    if n.target is aten.repeat_interleave.self_int:
        d = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim")
        return d is not None and _dim(d, rank) != rank - 1
    return True   # expand keeps the last size (checked above)


def _last_two_swapped(ctx, b):
    if _is(b, aten.transpose.int):
        r = len(ctx.shape(b))
        if {_dim(b.args[1], r), _dim(b.args[2], r)} == {r - 2, r - 1}:
            return b.args[0]
    if _is(b, aten.permute.default):
        r = len(b.args[1])
        if [_dim(d, r) for d in b.args[1]] == list(range(r - 2)) + [r - 1, r - 2]:
            return b.args[0]
    return None


def _down_to_rotation(ctx, n):
    """From a matmul operand back through single-user layout ops keeping the last axis to the node
    that produced it; returns (that node, the layout chain) ."""
    chain = []
    while _keeps_last_axis(ctx, n):
        chain.append(n)
        n = n.args[0]
        if len(n.users) != 1:
            return None, chain
    return n, chain


def _const_term(ctx, m):
    """``m = x * c`` with a constant ``c`` (either order): (x, c) or None."""
    if not _is(m, *_MUL):
        return None
    a, b = m.args[0], m.args[1]
    if ctx.is_const(b) and isinstance(a, fx.Node) and not ctx.is_const(a):
        return a, b
    if ctx.is_const(a) and isinstance(b, fx.Node) and not ctx.is_const(b):
        return b, a
    return None


def _slice_of(ctx, s, x, d: int):
    """``s = x[..., lo:hi]``: (lo, hi) or None."""
    if not _is(s, aten.slice.Tensor) or s.args[0] is not x:
        return None
    rank = len(ctx.shape(x))
    if _dim(s.args[1] if len(s.args) > 1 else 0, rank) != rank - 1:
        return None
    if len(s.args) > 4 and s.args[4] != 1:
        return None
    lo = s.args[2] if len(s.args) > 2 and s.args[2] is not None else 0
    hi = s.args[3] if len(s.args) > 3 and s.args[3] is not None else d
    return max(0, min(lo, d)), max(0, min(hi, d))


def _rotation(ctx, r):
    """``r = x * cos + rotate_half(x) * sin`` (any order of the sum and the products), with
    ``rotate_half(x) = cat((-x[..., h:], x[..., :h]), -1)``: (x, cos, sin) or None."""
    if not _is(r, *_ADD):
        return None
    for p, q in ((r.args[0], r.args[1]), (r.args[1], r.args[0])):
        t1, t2 = _const_term(ctx, p), _const_term(ctx, q)
        if t1 is None or t2 is None:
            continue
        (x, cos), (rot, sin) = t1, t2
        if not _is(rot, aten.cat.default) or len(rot.args[0]) != 2:
            continue
        xs = ctx.shape(x)
        d = xs[-1] if xs else 0
        if d < 2 or d % 2 or ctx.shape(rot) != xs or ctx.shape(r) != xs:
            continue
        if _dim(rot.args[1] if len(rot.args) > 1 else 0, len(xs)) != len(xs) - 1:
            continue
        neg, lo_half = rot.args[0]
        if not _is(neg, aten.neg.default):
            continue
        if _slice_of(ctx, neg.args[0], x, d) != (d // 2, d) or _slice_of(ctx, lo_half, x, d) != (0, d // 2):
            continue
        return x, cos, sin
    return None


def _up_to_linear(ctx, x, d: int):
    """From the rotated input back through layout ops keeping ``d`` to a linear with constant
    weight whose output features split into heads of ``d``: (linear, chain) or None."""
    n, chain = x, []
    while True:
        if _is(n, *_LINEAR):
            break
        if not (_is(n, ops.view, ops.gather_rows) or _is(n, *_VIEWS) or _is(n, *_MOVES)):
            return None
        src = n.args[0]
        if not isinstance(src, fx.Node) or len(src.users) != 1:
            return None
        ys, xs = ctx.shape(n), ctx.shape(src)
        if not ys or ys[-1] != d:
            return None
        if xs[-1] != d:
            # the head split: a view of [..., H*D] as [..., H, D] (row-major: feature f -> head f // D)
            if not (_is(n, ops.view) or _is(n, *_VIEWS)) or xs[-1] % d or not _is(src, *_LINEAR):
                return None
        elif not _keeps_last_axis(ctx, n):
            return None
        chain.append(n)
        n = src
    w = n.args[1]
    b = n.args[2] if len(n.args) > 2 else None
    if not ctx.is_const(w) or (b is not None and not ctx.is_const(b)):
        return None
    if ctx.shape(n)[-1] % d:
        return None
    return n, chain


def _half_table(ctx, c, xshape):
    """``c`` (broadcastable to ``xshape``) with equal halves on the last axis: its first half, or None."""
    v = ctx.val(c)
    d = xshape[-1]
    try:
        full = torch.broadcast_to(v, xshape)
    except RuntimeError:
        return None
    if v.shape[-1] != d or v.dim() > len(xshape):
        return None
    h = d // 2
    if not torch.equal(v[..., :h], v[..., h:]):
        return None
    del full
    return v[..., :h].contiguous()


def interleave_perm(d: int) -> list[int]:
    """``perm[k]``: the rotate-half index that interleaved position ``k`` takes (z[k] = q[perm[k]])."""
    h = d // 2
    return [i // 2 + (h if i % 2 else 0) for i in range(d)]


def rope_half_at_matmul(ctx, n: fx.Node) -> bool:
    """At ``q @ k^T``: both operands rotate-half RoPE of head-split linears -> ``ops.rope`` of
    head-interleaved linears (see the module docstring)."""
    if _is(n, aten.matmul.default):
        a = n.args[0]
        b = _last_two_swapped(ctx, n.args[1])
        if b is None or len(n.args[1].users) != 1:
            return False
    elif _is(n, ops.matmul) and len(n.args) > 2 and n.args[2] is True:
        a, b = n.args[0], n.args[1]
    else:
        return False
    if not isinstance(a, fx.Node) or not isinstance(b, fx.Node) or len(a.users) != 1 or len(b.users) != 1:
        return False
    found = []
    for operand in (a, b):
        r, _ = _down_to_rotation(ctx, operand)
        if r is None or len(r.users) != 1:
            return False
        rot = _rotation(ctx, r)
        if rot is None:
            return False
        x, cos, sin = rot
        xs = ctx.shape(x)
        d = xs[-1]
        # x's users are exactly the pattern's: x * cos and the two slices
        if len(x.users) != 3:
            return False
        up = _up_to_linear(ctx, x, d)
        if up is None:
            return False
        c_half, s_half = _half_table(ctx, cos, xs), _half_table(ctx, sin, xs)
        if c_half is None or s_half is None:
            return False
        found.append((r, x, c_half, s_half, up[0], d))
    if found[0][5] != found[1][5]:
        return False
    d = found[0][5]
    perm = interleave_perm(d)
    done = set()
    for r, x, c_half, s_half, lin, _ in found:
        if lin not in done:
            done.add(lin)
            w = ctx.val(lin.args[1])
            heads = w.shape[0] // d
            idx = torch.tensor([h * d + p for h in range(heads) for p in perm], dtype=torch.long)
            lin.update_arg(1, ctx.const(w[idx].contiguous(), lin))
            if len(lin.args) > 2 and lin.args[2] is not None:
                lin.update_arg(2, ctx.const(ctx.val(lin.args[2])[idx].contiguous(), lin))
        cn, sn = ctx.const(c_half, r), ctx.const(s_half, r)
        ctx.replace(r, ctx.call(ops.rope, (x, cn, sn), r))
    # values downstream of the permuted projections are now stale in element order, not in shape
    # (all that later rules read of non-constant nodes); the next propagation refreshes them
    return True
