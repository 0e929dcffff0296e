"""canonicalize: rewrite an exported aten graph into masec's canonical ops (``masec.ops``).

Reads an fx GraphModule from ``torch.export`` (``get_attr`` parameters, aten call_function
nodes); writes the same graph with every computation expressed in canonical ops, constants
folded and layout ops composed. Runs in phases, each to a fixed point (idempotent: a second run
changes nothing):

1. ``cleanup``: assertion/guard nodes dropped, dtype no-ops (``.float()`` on float32,
   ``type_as``, ``contiguous``, ``clone``, eval-mode ``dropout``) bypassed.
2. ``fold_constants``: every node that depends on no model input is evaluated once and becomes a
   constant (masks from ``triu``/``tril``/``torch.ones``, RoPE tables sliced by ``T``, shape math).
3. structural patterns (``PATTERNS``): written-out RMSNorm, x*sigmoid(x), interleaved RoPE,
   ``scaled_dot_product_attention``, fused-projection ``split``/``chunk``.
4. direct ops and folds (``DIRECT``): aten ops with a canonical twin, matmul with a constant
   operand as linear, ``k.transpose(-2, -1)`` into ``matmul(trans_b=True)``, constant scales and
   masks into softmax, and layout (view/reshape/transpose/permute/expand/select) as ``view`` or
   ``gather_rows``.
5. ``compose_layout``: chains of layout ops become one; identities vanish.

    gm = canonicalize(export(model, inputs), inputs)
    [n.target.__name__ for n in gm.graph.nodes if n.op == "call_function"]  # ['rms_norm', 'linear', ...]

A rewrite that does not apply leaves the node alone; what is left that is not canonical is
reported by ``masec.frontend.normalize`` with the user's source line.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx

from masec import ops
from masec.errors import MasecError
from masec.passes.transform.rope_half import rope_half_at_matmul

aten = torch.ops.aten

_META_KEYS = ("stack_trace", "nn_module_stack")
#: an additive mask value at or below this drops the key (exp underflows to 0 in float32)
MASK_NEG = -1e4


# ---------------------------------------------------------------------------------------- helpers

class _Ctx:
    """The graph being rewritten, with real-tensor values of every node from the example inputs."""

    def __init__(self, gm: fx.GraphModule, inputs: tuple):
        self.gm = gm
        self.inputs = inputs
        self.vals: dict[fx.Node, object] = {}
        self.n_const = 0

    def propagate(self) -> None:
        vals = self.vals = {}

        class _Run(fx.Interpreter):
            def run_node(self, n):
                r = super().run_node(n)
                vals[n] = r
                return r

        with torch.no_grad():
            _Run(self.gm).run(*self.inputs)

    def val(self, n):
        if not isinstance(n, fx.Node):
            return n
        if n not in self.vals:
            self.propagate()
        return self.vals[n]

    def shape(self, n) -> tuple:
        return tuple(self.val(n).shape)

    def is_const(self, n) -> bool:
        return isinstance(n, fx.Node) and n.op == "get_attr"

    def const(self, value: torch.Tensor, like: fx.Node) -> fx.Node:
        """A new constant (a buffer of the GraphModule) inserted before ``like``."""
        name = f"_masec_const_{self.n_const}"
        while hasattr(self.gm, name):
            self.n_const += 1
            name = f"_masec_const_{self.n_const}"
        self.n_const += 1
        self.gm.register_buffer(name, value.detach().clone(), persistent=False)
        with self.gm.graph.inserting_before(_first_user_anchor(like)):
            node = self.gm.graph.get_attr(name)
        self.vals[node] = getattr(self.gm, name)
        return node

    def call(self, fn, args: tuple, like: fx.Node, kwargs=None) -> fx.Node:
        with self.gm.graph.inserting_before(like):
            node = self.gm.graph.call_function(fn, tuple(args), kwargs or {})
        node.meta.update({k: like.meta[k] for k in _META_KEYS if k in like.meta})
        try:  # its value from its arguments' values: no whole-graph propagation for a new node
            args_v = fx.node.map_arg(tuple(args), lambda a: self.vals[a])
            kwargs_v = fx.node.map_arg(kwargs or {}, lambda a: self.vals[a])
            with torch.no_grad():
                self.vals[node] = fn(*args_v, **kwargs_v)
        except KeyError:
            pass
        return node

    def replace(self, old: fx.Node, new: fx.Node) -> bool:
        old.replace_all_uses_with(new)
        if not old.users:
            self.gm.graph.erase_node(old)
        self.gm.graph.eliminate_dead_code()
        self.vals.pop(old, None)
        return True


def _first_user_anchor(n: fx.Node) -> fx.Node:
    """Constants are inserted before the first node of the graph that is not a placeholder."""
    for m in n.graph.nodes:
        if m.op != "placeholder":
            return m
    return n


def _is(n, *targets) -> bool:
    return isinstance(n, fx.Node) and n.op == "call_function" and n.target in targets


def _scalar(ctx: _Ctx, a):
    """A Python number from a literal or a 0-d / single-element constant, else None."""
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return float(a)
    if ctx.is_const(a):
        v = ctx.val(a)
        if isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_floating_point():
            return float(v.reshape(()))
    return None


def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


# ------------------------------------------------------------------------------ phase 1: cleanup

_DROP = {aten._assert_tensor_metadata.default, aten._assert_scalar.default} if hasattr(aten, "_assert_scalar") \
    else {aten._assert_tensor_metadata.default}
_IDENTITY = (aten.contiguous.default, aten.clone.default, aten.alias.default, aten.detach.default,
             aten.type_as.default, aten.to.dtype, aten.to.dtype_layout, aten._to_copy.default,
             aten.lift_fresh_copy.default, aten.dropout.default)


def cleanup(ctx: _Ctx) -> bool:
    g = ctx.gm.graph
    changed = False
    for n in list(g.nodes):
        if n.op == "call_module" and str(n.target).startswith("_guards"):
            g.erase_node(n)
            changed = True
        elif n.op == "call_function" and n.target in _DROP:
            g.erase_node(n)
            changed = True
        elif _is(n, aten.view.default):
            n.target = aten.reshape.default  # once contiguous() is gone, a view may need a copy
            changed = True
        elif _is(n, *_IDENTITY):
            src = n.args[0]
            if n.target is aten.dropout.default and (len(n.args) > 2 and n.args[2]):
                continue  # training-mode dropout stays (and is refused)
            out, inp = ctx.val(n), ctx.val(src)
            if isinstance(out, torch.Tensor) and isinstance(inp, torch.Tensor) and out.dtype == inp.dtype:
                changed |= ctx.replace(n, src)
    if changed:
        g.eliminate_dead_code()
    return changed


# ----------------------------------------------------------------------- phase 2: constant folding

def fold_constants(ctx: _Ctx) -> bool:
    """Evaluate every call_function node that depends on no placeholder; keep tensors as buffers."""
    g = ctx.gm.graph
    dynamic: set[fx.Node] = set()
    changed = False
    for n in list(g.nodes):
        if n.op == "placeholder":
            dynamic.add(n)
            continue
        if n.op != "call_function":
            if any(a in dynamic for a in n.all_input_nodes):
                dynamic.add(n)
            continue
        if any(a in dynamic for a in n.all_input_nodes):
            dynamic.add(n)
            continue
        if ops.op_of(n) is not None:
            continue  # a canonical op on parameters only (rare) is left for its lowering
        v = ctx.val(n)
        if isinstance(v, torch.Tensor) and n.users:
            c = ctx.const(v, n)
            changed |= ctx.replace(n, c)
    return changed


# ------------------------------------------------------------------- phase 3: structural patterns

def rms_norm_written_out(ctx: _Ctx, n: fx.Node) -> bool:
    """``x * rsqrt(mean(x**2, -1, keepdim) + eps) [* w]`` (or ``x / sqrt(...)``) -> rms_norm."""
    if not _is(n, aten.rsqrt.default, aten.sqrt.default):
        return False
    add = n.args[0]
    if not _is(add, aten.add.Tensor, aten.add.Scalar) or _scalar(ctx, add.args[1]) is None:
        return False
    eps = _scalar(ctx, add.args[1])
    mean = add.args[0]
    if not _is(mean, aten.mean.dim) or list(mean.args[1]) not in ([-1], [len(ctx.shape(mean)) - 1]):
        return False
    sq = mean.args[0]
    if _is(sq, aten.pow.Tensor_Scalar) and sq.args[1] == 2:
        x = sq.args[0]
    elif _is(sq, aten.mul.Tensor) and sq.args[0] is sq.args[1]:
        x = sq.args[0]
    else:
        return False
    users = list(n.users)
    if len(users) != 1:
        return False
    u = users[0]
    want = aten.mul.Tensor if n.target is aten.rsqrt.default else aten.div.Tensor
    if not _is(u, want) or x not in u.args or (want is aten.div.Tensor and u.args[0] is not x):
        return False
    c = ctx.shape(x)[-1]
    out, weight = u, None
    if len(u.users) == 1:
        w_node = next(iter(u.users))
        if _is(w_node, aten.mul.Tensor):
            other = w_node.args[1] if w_node.args[0] is u else w_node.args[0]
            if ctx.is_const(other) and tuple(ctx.shape(other)) == (c,):
                out, weight = w_node, other
    if weight is None:
        weight = ctx.const(torch.ones(c), n)
    return ctx.replace(out, ctx.call(ops.rms_norm, (x, weight, eps), out))


def layer_norm_written_out(ctx: _Ctx, n: fx.Node) -> bool:
    """``(x - mean(x)) / sqrt(var(x) + eps) [* w] [+ b]`` with ``var`` as ``mean((x - mean)**2)``,
    ``var(unbiased=False)`` or ``pow``, and ``* rsqrt(...)`` for ``/ sqrt(...)`` -> layer_norm."""
    if not _is(n, aten.sub.Tensor):
        return False
    x, mu = n.args[0], n.args[1]
    if not (_is(mu, aten.mean.dim) and mu.args[0] is x and _keepdim_last(ctx, mu)):
        return False
    c = ctx.shape(x)[-1]
    centers = [u for u in mu.users if _is(u, aten.sub.Tensor) and u.args[0] is x and u.args[1] is mu]
    # the variance: mean(d*d) / mean(d**2) / var(x, -1, unbiased=False, keepdim)
    var_nodes = []
    for u in [v for d in centers for v in d.users]:
        if _is(u, aten.pow.Tensor_Scalar) and u.args[1] == 2 or _is(u, aten.mul.Tensor) and u.args[0] is u.args[1]:
            var_nodes += [m for m in u.users if _is(m, aten.mean.dim) and _keepdim_last(ctx, m)]
    for u in x.users:
        if _is(u, aten.var.correction) and u.kwargs.get("correction", 1) == 0 and u.kwargs.get("keepdim"):
            var_nodes.append(u)
    for var in var_nodes:
        for add in var.users:
            if not _is(add, aten.add.Tensor, aten.add.Scalar) or _scalar(ctx, add.args[1]) is None:
                continue
            eps = _scalar(ctx, add.args[1])
            for r in add.users:
                if _is(r, aten.sqrt.default):
                    norm = [u for u in r.users if _is(u, aten.div.Tensor) and u.args[0] in centers and u.args[1] is r]
                elif _is(r, aten.rsqrt.default):
                    norm = [u for u in r.users if _is(u, aten.mul.Tensor) and r in u.args
                            and any(a in centers for a in u.args)]
                else:
                    continue
                if not norm:
                    continue
                out, w, b = norm[0], None, None
                if len(out.users) == 1:
                    u = next(iter(out.users))
                    o = u.args[1] if u.args[0] is out else u.args[0]
                    if _is(u, aten.mul.Tensor) and ctx.is_const(o) and tuple(ctx.shape(o)) == (c,):
                        out, w = u, o
                if len(out.users) == 1:
                    u = next(iter(out.users))
                    o = u.args[1] if u.args[0] is out else u.args[0]
                    if _is(u, aten.add.Tensor) and ctx.is_const(o) and tuple(ctx.shape(o)) == (c,):
                        out, b = u, o
                w = w if w is not None else ctx.const(torch.ones(c), n)
                b = b if b is not None else ctx.const(torch.zeros(c), n)
                return ctx.replace(out, ctx.call(ops.layer_norm, (x, w, b, eps), out))
    return False


def _keepdim_last(ctx: _Ctx, mean: fx.Node) -> bool:
    dims = list(mean.args[1]) if len(mean.args) > 1 else []
    keep = mean.args[2] if len(mean.args) > 2 else mean.kwargs.get("keepdim", False)
    return bool(keep) and dims in ([-1], [len(ctx.shape(mean)) - 1])


def silu_written_out(ctx: _Ctx, n: fx.Node) -> bool:
    """``x * sigmoid(x)`` -> silu."""
    if not _is(n, aten.mul.Tensor):
        return False
    a, b = n.args[0], n.args[1]
    for x, s in ((a, b), (b, a)):
        if _is(s, aten.sigmoid.default) and s.args[0] is x:
            return ctx.replace(n, ctx.call(ops.silu, (x,), n))
    return False


def _half_x_times_one_plus(ctx: _Ctx, n: fx.Node, x: fx.Node):
    """The node computing ``0.5 * x * (1 + n)`` in any association (``x * 0.5 * (1 + n)`` as HF and
    BERT write it included), walking up from ``n``; None when the users of ``n`` do not form it."""
    cur, seen_x, seen_half, seen_one = n, False, False, False
    for _ in range(4):
        if len(cur.users) != 1:
            return None
        u = next(iter(cur.users))
        other = u.args[1] if u.args[0] is cur else u.args[0]
        if _is(u, aten.add.Tensor, aten.add.Scalar) and _scalar(ctx, other) == 1.0 and not seen_one:
            seen_one = True
        elif _is(u, aten.mul.Tensor) and other is x and not seen_x:
            seen_x = True
        elif (_is(u, aten.mul.Tensor) and _is(other, aten.mul.Tensor, aten.mul.Scalar) and x in other.args
              and _scalar(ctx, other.args[1] if other.args[0] is x else other.args[0]) == 0.5
              and not (seen_x or seen_half)):
            seen_x = seen_half = True   # x * 0.5 * (1.0 + ...)
        elif _is(u, aten.mul.Tensor) and _scalar(ctx, other) == 0.5 and not seen_half:
            seen_half = True
        else:
            return None
        cur = u
        if seen_x and seen_half and seen_one:
            return cur
    return None


def gelu_written_out(ctx: _Ctx, n: fx.Node) -> bool:
    """``0.5 * x * (1 + erf(x / sqrt(2)))`` (any association) -> gelu (erf form)."""
    if not _is(n, aten.erf.default):
        return False
    inner = n.args[0]
    if _is(inner, aten.div.Tensor) and abs((_scalar(ctx, inner.args[1]) or 0) - math.sqrt(2)) < 1e-6:
        x = inner.args[0]
    elif _is(inner, aten.mul.Tensor) and abs((_scalar(ctx, inner.args[1]) or 0) - 1 / math.sqrt(2)) < 1e-6:
        x = inner.args[0]
    else:
        return False
    out = _half_x_times_one_plus(ctx, n, x)
    return out is not None and ctx.replace(out, ctx.call(ops.gelu, (x,), out))


def gelu_tanh_written_out(ctx: _Ctx, n: fx.Node) -> bool:
    """``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))`` (any association; GPT-2's
    ``gelu_new``) -> gelu_tanh."""
    if not _is(n, aten.tanh.default):
        return False
    inner = n.args[0]
    if not _is(inner, aten.mul.Tensor):
        return False
    c = _scalar(ctx, inner.args[1]) if _scalar(ctx, inner.args[1]) is not None else _scalar(ctx, inner.args[0])
    poly = inner.args[0] if _scalar(ctx, inner.args[1]) is not None else inner.args[1]
    if c is None or abs(c - math.sqrt(2 / math.pi)) > 1e-6 or not _is(poly, aten.add.Tensor):
        return False
    x = None
    for xx, cube in ((poly.args[0], poly.args[1]), (poly.args[1], poly.args[0])):
        if not _is(cube, aten.mul.Tensor):
            continue
        k = _scalar(ctx, cube.args[1]) if _scalar(ctx, cube.args[1]) is not None else _scalar(ctx, cube.args[0])
        p3 = cube.args[0] if _scalar(ctx, cube.args[1]) is not None else cube.args[1]
        if k is None or abs(k - 0.044715) > 1e-9:
            continue
        if _is(p3, aten.pow.Tensor_Scalar) and p3.args[0] is xx and p3.args[1] in (3, 3.0):
            x = xx
            break
    if x is None:
        return False

    out = _half_x_times_one_plus(ctx, n, x)
    return out is not None and ctx.replace(out, ctx.call(ops.gelu_tanh, (x,), out))


def rope_interleaved(ctx: _Ctx, n: fx.Node) -> bool:
    """llama2.c / Meta RoPE on interleaved pairs:
    ``a, b = x.reshape(..., -1, 2).unbind(-1); stack([a*c - b*s, a*s + b*c], -1).flatten(k)`` -> rope."""
    if not _is(n, aten.stack.default) or len(n.args[0]) != 2:
        return False
    rank_in = len(ctx.shape(n.args[0][0]))
    if _dim(n.args[1] if len(n.args) > 1 else 0, rank_in + 1) != rank_in:
        return False
    p, q = n.args[0]
    if not (_is(p, aten.sub.Tensor) and _is(q, aten.add.Tensor)):
        return False

    def prod(m):
        if not _is(m, aten.mul.Tensor):
            return None
        a, b = m.args[0], m.args[1]
        if ctx.is_const(b) and not ctx.is_const(a):
            return a, b
        if ctx.is_const(a) and not ctx.is_const(b):
            return b, a
        return None

    terms = [prod(p.args[0]), prod(p.args[1]), prod(q.args[0]), prod(q.args[1])]
    if any(t is None for t in terms):
        return False
    (a1, c1), (b1, s1), (x3, y3), (x4, y4) = terms
    # a*s + b*c in either order
    if x3 is a1 and x4 is b1:
        s2, c2 = y3, y4
    elif x3 is b1 and x4 is a1:
        c2, s2 = y3, y4
    else:
        return False
    if not (torch.equal(ctx.val(c1), ctx.val(c2)) and torch.equal(ctx.val(s1), ctx.val(s2))):
        return False
    if not (_is(a1, operator.getitem) and _is(b1, operator.getitem) and a1.args[0] is b1.args[0]
            and a1.args[1] == 0 and b1.args[1] == 1):
        return False
    unbind = a1.args[0]
    if not _is(unbind, aten.unbind.int) or _dim(unbind.args[1] if len(unbind.args) > 1 else 0,
                                               len(ctx.shape(unbind.args[0]))) != len(ctx.shape(unbind.args[0])) - 1:
        return False
    pairs = unbind.args[0]
    if ctx.shape(pairs)[-1] != 2 or not _is(pairs, aten.view.default, aten.reshape.default, aten._unsafe_view.default):
        return False
    x = pairs.args[0]
    xs = ctx.shape(x)
    if ctx.shape(pairs)[:-2] != xs[:-1]:
        return False
    flat = [u for u in n.users]
    if len(flat) != 1 or ctx.shape(flat[0]) != xs:
        return False
    out = flat[0]
    return ctx.replace(out, ctx.call(ops.rope, (x, c1, s1), out))


def sdpa(ctx: _Ctx, n: fx.Node) -> bool:
    """``scaled_dot_product_attention(q, k, v, attn_mask, dropout, is_causal, scale)`` ->
    matmul(q, k, trans_b) -> softmax(scale, causal, mask) -> matmul(p, v)."""
    if not _is(n, aten.scaled_dot_product_attention.default):
        return False
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    a = dict(zip(names, n.args))
    a.update(n.kwargs)
    q, k, v = a["query"], a["key"], a["value"]
    if a.get("dropout_p", 0.0) not in (0, 0.0) or a.get("enable_gqa", False):
        return False
    scale = a.get("scale") or 1.0 / math.sqrt(ctx.shape(q)[-1])
    s = ctx.call(ops.matmul, (q, k, True), n)
    mask = a.get("attn_mask")
    if mask is not None:
        if not ctx.is_const(mask):
            return False
        mv = ctx.val(mask)
        # SDPA's boolean mask keeps True; a float mask is added
        add = ctx.call(aten.masked_fill.Scalar, (s, ctx.const(~mv, n), float("-inf")), n) if mv.dtype == torch.bool \
            else ctx.call(aten.add.Tensor, (s, mask), n)
        s = add
    p = ctx.call(ops.softmax, (s, float(scale), bool(a.get("is_causal", False)), None), n)
    return ctx.replace(n, ctx.call(ops.matmul, (p, v, False), n))


def split_projection(ctx: _Ctx, n: fx.Node) -> bool:
    """A fused projection split along its output features (nanoGPT's ``c_attn(x).split(C, dim=2)``,
    ``chunk``) becomes one linear per part, each with its slice of the weight and bias."""
    if not _is(n, aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default):
        return False
    src = n.args[0]
    if not _is(src, aten.linear.default, ops.linear):
        return False
    rank = len(ctx.shape(src))
    dim = _dim(n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0), rank)
    if dim != rank - 1 or not ctx.is_const(src.args[1]):
        return False
    pieces = ctx.val(n)
    sizes = [p.shape[-1] for p in pieces]
    w = ctx.val(src.args[1])
    b = src.args[2] if len(src.args) > 2 else None
    bv = ctx.val(b) if b is not None else None
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for u in list(n.users):
        if not _is(u, operator.getitem):
            return False
    for u in list(n.users):
        i = u.args[1]
        lo, hi = starts[i], starts[i] + sizes[i]
        wn = ctx.const(w[lo:hi], u)
        bn = ctx.const(bv[lo:hi], u) if bv is not None else None
        ctx.replace(u, ctx.call(ops.linear, (src.args[0], wn, bn), u))
    return True


PATTERNS = (rms_norm_written_out, layer_norm_written_out, silu_written_out, gelu_written_out, rope_interleaved, sdpa, split_projection,
            gelu_tanh_written_out, rope_half_at_matmul)


# ------------------------------------------------------------------- phase 4: direct ops and folds

_DIRECT_UNARY = {aten.relu.default: ops.relu, aten.silu.default: ops.silu}
_VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints,
          aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default)
_ROW_MOVES = (aten.transpose.int, aten.permute.default, aten.expand.default, aten.repeat_interleave.self_int,
              aten.select.int, aten.slice.Tensor, aten.t.default, aten.swapaxes.default if hasattr(aten, "swapaxes")
              else aten.transpose.int)


def direct(ctx: _Ctx, n: fx.Node) -> bool:
    """aten ops with a canonical twin."""
    if n.op != "call_function":
        return False
    t = n.target
    if t in _DIRECT_UNARY:
        return ctx.replace(n, ctx.call(_DIRECT_UNARY[t], (n.args[0],), n))
    if t is aten.gelu.default:
        approx = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
        if approx not in ("none", "tanh"):
            return False
        return ctx.replace(n, ctx.call(ops.gelu if approx == "none" else ops.gelu_tanh, (n.args[0],), n))
    if t is aten.addmm.default:
        return _addmm(ctx, n)
    if t is aten.linear.default:
        w = n.args[1]
        b = n.args[2] if len(n.args) > 2 else None
        if not ctx.is_const(w) or (b is not None and not ctx.is_const(b)):
            return False
        return ctx.replace(n, ctx.call(ops.linear, (n.args[0], w, b), n))
    if t is aten.embedding.default:
        if not ctx.is_const(n.args[0]):
            return False
        return ctx.replace(n, ctx.call(ops.embedding, (n.args[1], n.args[0]), n))
    if t is aten.layer_norm.default:
        x, shape = n.args[0], n.args[1]
        c = ctx.shape(x)[-1]
        if list(shape) != [c]:
            return False
        w = n.args[2] if len(n.args) > 2 and n.args[2] is not None else ctx.const(torch.ones(c), n)
        b = n.args[3] if len(n.args) > 3 and n.args[3] is not None else ctx.const(torch.zeros(c), n)
        eps = n.args[4] if len(n.args) > 4 else 1e-5
        return ctx.replace(n, ctx.call(ops.layer_norm, (x, w, b, float(eps)), n))
    if hasattr(aten, "rms_norm") and t is aten.rms_norm.default:
        x, shape = n.args[0], n.args[1]
        c = ctx.shape(x)[-1]
        if list(shape) != [c]:
            return False
        w = n.args[2] if len(n.args) > 2 and n.args[2] is not None else ctx.const(torch.ones(c), n)
        eps = n.args[3] if len(n.args) > 3 and n.args[3] is not None else torch.finfo(torch.float32).eps
        return ctx.replace(n, ctx.call(ops.rms_norm, (x, w, float(eps)), n))
    if t in (aten.softmax.int, aten._softmax.default):
        rank = len(ctx.shape(n))
        if _dim(n.args[1], rank) != rank - 1:
            from masec.errors import UnsupportedOpError
            from masec.frontend import user_source

            where = user_source(n)
            raise UnsupportedOpError(f"node `{n.name}` (softmax over dim={n.args[1]})"
                                     + (f" at {where}" if where else "")
                                     + ": masec streams rows, so softmax must run over the last axis (dim=-1)")
        return ctx.replace(n, ctx.call(ops.softmax, (n.args[0], 1.0, False, None), n))
    if t in (aten.add.Tensor, aten.mul.Tensor) and len(n.args) == 2 and not n.kwargs:
        a, b = n.args
        if all(isinstance(v, fx.Node) and not ctx.is_const(v) for v in (a, b)) and ctx.shape(a) == ctx.shape(b):
            return ctx.replace(n, ctx.call(ops.add if t is aten.add.Tensor else ops.mul, (a, b), n))
        return _const_operand(ctx, n)
    if t in (aten.matmul.default, aten.mm.default, aten.bmm.default):
        a, b = n.args
        if ctx.is_const(b) and ctx.val(b).dim() == 2:
            return ctx.replace(n, ctx.call(ops.linear, (a, ctx.const(ctx.val(b).t().contiguous(), n), None), n))
        if ctx.is_const(a) or ctx.is_const(b):
            return False
        src = _last_two_swapped(ctx, b)
        if src is not None:
            return ctx.replace(n, ctx.call(ops.matmul, (a, src, True), n))
        return ctx.replace(n, ctx.call(ops.matmul, (a, b, False), n))
    return False


def _addmm(ctx: _Ctx, n: fx.Node) -> bool:
    """``addmm(bias, x2d, W)`` with constant ``W [in, out]`` and bias (HF GPT-2's ``Conv1D``) ->
    ``linear(x, W^T, bias)``; when ``x2d`` is ``x`` viewed to 2-D and the result is viewed back to
    ``x``'s leading axes, the linear takes ``x`` and replaces that view."""
    bias, x2d, w = n.args[:3]
    if n.kwargs.get("beta", 1) != 1 or n.kwargs.get("alpha", 1) != 1 or not ctx.is_const(w) or not ctx.is_const(bias):
        return False
    if ctx.val(w).dim() != 2 or ctx.val(bias).shape != (ctx.val(w).shape[1],):
        return False
    wt = ctx.const(ctx.val(w).t().contiguous(), n)
    x, out = x2d, n
    views = (aten.view.default, aten.reshape.default, aten._unsafe_view.default, ops.view)
    users = list(n.users)
    if _is(x2d, *views) and len(users) == 1 and _is(users[0], *views):
        src = x2d.args[0]
        if ctx.shape(src)[-1] == ctx.shape(x2d)[-1] and \
                ctx.shape(users[0]) == tuple(ctx.shape(src)[:-1]) + (ctx.shape(n)[-1],):
            x, out = src, users[0]
    return ctx.replace(out, ctx.call(ops.linear, (x, wt, bias), out))


def _feeds_softmax(n: fx.Node) -> bool:
    """``n`` reaches a softmax through single-user scale/mask ops (left for ``softmax_folds``)."""
    cur = n
    for _ in range(4):
        if len(cur.users) != 1:
            return False
        cur = next(iter(cur.users))
        if _is(cur, aten.softmax.int, aten._softmax.default, ops.softmax):
            return True
        if not _is(cur, aten.add.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.masked_fill.Scalar,
                   aten.masked_fill.Tensor, aten.where.self):
            return False
    return False


def _const_operand(ctx: _Ctx, n: fx.Node) -> bool:
    """add/mul of a stream and a constant tensor (GPT-2's ``x + wpe(arange(T))``, a constant gain)
    -> ``add``/``mul`` with the constant broadcast to the stream's shape (streamed from a ROM).
    Scalars and masks/scales in front of a softmax are left to the folds."""
    a, b = n.args
    if not all(isinstance(v, fx.Node) for v in (a, b)) or ctx.is_const(a) == ctx.is_const(b):
        return False
    x, c = (a, b) if ctx.is_const(b) else (b, a)
    cv = ctx.val(c)
    if not isinstance(cv, torch.Tensor) or not cv.is_floating_point() or cv.numel() < 2:
        return False
    if ctx.shape(n) != ctx.shape(x) or _feeds_softmax(n):
        return False
    full = ctx.const(torch.broadcast_to(cv, ctx.shape(x)).contiguous(), n)
    args = (x, full) if c is b else (full, x)
    return ctx.replace(n, ctx.call(ops.add if n.target is aten.add.Tensor else ops.mul, args, n))


def _last_two_swapped(ctx: _Ctx, b):
    """``src`` when ``b`` is ``src`` with its last two axes swapped (``transpose(-2, -1)``, ``.mT``)."""
    if _is(b, aten.transpose.int):
        r = len(ctx.shape(b))
        if {_dim(b.args[1], r), _dim(b.args[2], r)} == {r - 2, r - 1}:
            return b.args[0]
    if _is(b, aten.permute.default):
        perm = [_dim(d, len(b.args[1])) for d in b.args[1]]
        r = len(perm)
        if perm == list(range(r - 2)) + [r - 1, r - 2]:
            return b.args[0]
    if _is(b, aten.t.default):
        return b.args[0]
    return None


def softmax_folds(ctx: _Ctx, n: fx.Node) -> bool:
    """Constant scales and constant masks in front of a softmax move into its arguments."""
    if not _is(n, ops.softmax):
        return False
    x, scale, causal, key_mask = n.args
    if len(x.users) != 1:
        return False
    if _is(x, aten.mul.Tensor, aten.div.Tensor, aten.mul.Scalar, aten.div.Scalar):
        c = _scalar(ctx, x.args[1])
        if c is None and x.target in (aten.mul.Tensor, aten.mul.Scalar):
            c, src = _scalar(ctx, x.args[0]), x.args[1]
        else:
            src = x.args[0]
        if c is None or c <= 0:
            return False
        f = c if x.target in (aten.mul.Tensor, aten.mul.Scalar) else 1.0 / c
        return ctx.replace(n, ctx.call(ops.softmax, (src, scale * f, causal, key_mask), n))
    drop = None
    if _is(x, aten.add.Tensor):
        a, b = x.args
        s, m = (a, b) if ctx.is_const(b) else (b, a)
        if not ctx.is_const(m):
            return False
        mv = ctx.val(m)
        # 0 keeps; -inf, or a huge negative (HF's (1 - mask) * -10000 / finfo.min), drops: after it
        # exp() underflows to exactly 0 in float32 for any score below ~1e4
        if not torch.all((mv == 0) | (mv <= MASK_NEG)):
            return False
        drop = mv <= MASK_NEG
    elif _is(x, aten.masked_fill.Scalar, aten.masked_fill.Tensor):
        s, m, v = x.args
        fill = _scalar(ctx, v)
        if not ctx.is_const(m) or fill is None or fill > MASK_NEG:
            return False
        drop = ctx.val(m).to(torch.bool)
    else:
        return False
    shape = ctx.shape(s)
    drop = torch.broadcast_to(drop, shape).reshape(-1, shape[-2], shape[-1])
    t, m_ = shape[-2], shape[-1]
    causal_drop = ~torch.ones(t, m_, dtype=torch.bool).tril()
    if torch.equal(drop, causal_drop.expand_as(drop)):
        return ctx.replace(n, ctx.call(ops.softmax, (s, scale, True, key_mask), n))
    if torch.all(drop == drop[:1, :1, :]):
        keep = ~drop[0, 0]
        if key_mask is not None:
            keep = keep & ctx.val(key_mask)
        if causal:
            # causal drop is already applied: the rest must be a key mask
            pass
        return ctx.replace(n, ctx.call(ops.softmax, (s, scale, causal, ctx.const(keep, n)), n))
    # causal plus a key mask
    rest = drop & ~causal_drop
    if torch.equal(drop, (causal_drop | rest)) and torch.all(rest == rest[:1, -1:, :]):
        keep = ~rest[0, -1]
        return ctx.replace(n, ctx.call(ops.softmax, (s, scale, True, ctx.const(keep, n)), n))
    return False


def layout(ctx: _Ctx, n: fx.Node) -> bool:
    """view-like ops -> ``view``; row moves that keep the last axis -> ``gather_rows``."""
    if n.op != "call_function":
        return False
    if n.target in _VIEWS:
        v = ctx.val(n)
        if not isinstance(v, torch.Tensor):
            return False
        return ctx.replace(n, ctx.call(ops.view, (n.args[0], tuple(v.shape)), n))
    if n.target in _ROW_MOVES:
        x = n.args[0]
        if ctx.is_const(x):
            return False
        xs, ys = ctx.shape(x), ctx.shape(n)
        if not xs or not ys or xs[-1] != ys[-1]:
            return False
        rank = len(xs)
        if n.target is aten.transpose.int and rank - 1 in {_dim(n.args[1], rank), _dim(n.args[2], rank)}:
            return False
        if n.target is aten.permute.default and _dim(n.args[1][-1], rank) != rank - 1:
            return False
        if n.target in (aten.select.int, aten.slice.Tensor) and _dim(n.args[1], rank) == rank - 1:
            return False
        if n.target is aten.t.default:
            return False
        rows = torch.arange(math.prod(xs[:-1]) if rank > 1 else 1).reshape(*xs[:-1], 1)
        args = list(n.args)
        if n.target is aten.expand.default:
            args[1] = list(args[1][:-1]) + [1]
        idx = n.target(rows, *args[1:], **n.kwargs)
        index = tuple(int(i) for i in idx.reshape(-1).tolist())
        return ctx.replace(n, ctx.call(ops.gather_rows, (x, index, tuple(ys)), n))
    return False


DIRECT = (direct, softmax_folds, layout)


# --------------------------------------------------------------------------- phase 5: layout chains

def compose_layout(ctx: _Ctx, n: fx.Node) -> bool:
    if _is(n, ops.view):
        x = n.args[0]
        if tuple(ctx.shape(x)) == tuple(n.args[1]):
            return ctx.replace(n, x)
        if _is(x, ops.view):
            return ctx.replace(n, ctx.call(ops.view, (x.args[0], n.args[1]), n))
        if _is(x, ops.gather_rows) and ctx.shape(x)[-1] == n.args[1][-1]:
            return ctx.replace(n, ctx.call(ops.gather_rows, (x.args[0], x.args[1], n.args[1]), n))
        return False
    if _is(n, ops.gather_rows):
        x, index, shape = n.args
        if index == tuple(range(len(index))) and ctx.shape(x)[-1] == shape[-1] and \
                math.prod(ctx.shape(x)) == math.prod(shape):
            return ctx.replace(n, ctx.call(ops.view, (x, shape), n))
        if _is(x, ops.gather_rows):
            inner = x.args[1]
            return ctx.replace(n, ctx.call(ops.gather_rows, (x.args[0], tuple(inner[i] for i in index), shape), n))
        if _is(x, ops.view) and ctx.shape(x.args[0])[-1] == ctx.shape(x)[-1]:
            return ctx.replace(n, ctx.call(ops.gather_rows, (x.args[0], index, shape), n))
    return False


# ----------------------------------------------------------------------------------------- driver

def _run(ctx: _Ctx, rules, limit: int = 1000) -> bool:
    """Sweep the graph applying ``rules`` until a whole sweep changes nothing."""
    changed_any = False
    for _ in range(limit):
        changed = False
        for n in list(ctx.gm.graph.nodes):
            if n.graph is None or n._erased:
                continue
            for rule in rules:
                if rule(ctx, n):
                    changed = changed_any = True
                    break
        if not changed:
            return changed_any
    raise MasecError("internal error: canonicalize did not reach a fixed point")


def canonicalize(gm: fx.GraphModule, inputs: tuple) -> fx.GraphModule:
    """Rewrite ``gm`` in place to canonical ops (see the module docstring); returns it."""
    ctx = _Ctx(gm, tuple(inputs))
    ctx.propagate()
    while True:
        changed = cleanup(ctx)
        changed |= fold_constants(ctx)
        changed |= _run(ctx, PATTERNS)
        changed |= _run(ctx, DIRECT)
        changed |= _run(ctx, (compose_layout,))
        if not changed:
            break
        ctx.propagate()
    _drop_unused_constants(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


def _drop_unused_constants(gm: fx.GraphModule) -> None:
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [b for b, _ in gm.named_buffers(recurse=False)]:
        if name.startswith("_masec_const_") and name not in used:
            delattr(gm, name)
