"""canonicalize: every rewrite on a tiny module written the way people write it.

Each case exports the module, canonicalizes it and checks (1) the canonical op sequence,
(2) that the canonical GraphModule still computes the original float function and (3) that a
second canonicalize changes nothing (same graph code).
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from masec import ops
from masec.frontend import export
from masec.passes.transform.canonicalize import canonicalize

torch.manual_seed(0)


def canon(model, *inputs):
    gm = export(model.eval(), inputs)
    return canonicalize(gm, inputs)


def op_seq(gm) -> list[str]:
    return [ops.op_of(n) or getattr(n.target, "__name__", str(n.target))
            for n in gm.graph.nodes if n.op == "call_function"]


def nodes(gm, op):
    return [n for n in gm.graph.nodes if ops.op_of(n) == op]


def check(model, inputs, expected):
    """Canonicalize, compare the op sequence, the float output (atol 1e-5) and idempotence."""
    model.eval()
    with torch.no_grad():
        ref = model(*inputs)
    gm = canon(model, *inputs)
    assert op_seq(gm) == expected, gm.code
    with torch.no_grad():
        got = gm(*inputs)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    gots = got if isinstance(got, (tuple, list)) else (got,)
    assert len(refs) == len(gots)
    for r, g in zip(refs, gots):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    code = gm.code
    canonicalize(gm, inputs)
    assert gm.code == code, "a second canonicalize changed the graph"
    return gm


X = torch.randn(2, 8, 32)


# ----------------------------------------------------------------------------------------- norms

class RMSNormWritten(nn.Module):
    def __init__(self, weight: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(32) + 0.5) if weight else None

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
        return y * self.weight if self.weight is not None else y


@pytest.mark.parametrize("weight", [True, False], ids=["weight", "no_weight"])
def test_rms_norm_written_out(weight):
    gm = check(RMSNormWritten(weight), (X,), ["rms_norm"])
    (n,) = nodes(gm, "rms_norm")
    assert n.args[2] == pytest.approx(1e-5)
    w = getattr(gm, n.args[1].target)
    assert w.shape == (32,)
    if not weight:
        assert torch.equal(w, torch.ones(32))


def test_rms_norm_divided_by_sqrt():
    class M(nn.Module):
        def forward(self, x):
            return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + 1e-6)

    check(M(), (X,), ["rms_norm"])


def test_layer_norm_written_out():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.rand(32) + 0.5)
            self.bias = nn.Parameter(torch.rand(32))

        def forward(self, x):
            mu = x.mean(-1, keepdim=True)
            var = ((x - mu) ** 2).mean(-1, keepdim=True)
            return (x - mu) / torch.sqrt(var + 1e-5) * self.weight + self.bias

    check(M(), (X,), ["layer_norm"])


def test_layer_norm_module_with_bias():
    check(nn.LayerNorm(32), (X,), ["layer_norm"])


# ----------------------------------------------------------------------------------- activations

def test_x_times_sigmoid_x_is_silu():
    class M(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    check(M(), (X,), ["silu"])


class GeluErf(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form = form

    def forward(self, x):
        if self.form == "x*(1+erf)*0.5":
            return x * (1.0 + torch.erf(x / math.sqrt(2.0))) * 0.5
        if self.form == "0.5*(x*(1+erf(x*c)))":
            return 0.5 * (x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0)))))
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))   # HF/BERT's gelu


@pytest.mark.parametrize("form", [
    "x*(1+erf)*0.5",
    "0.5*(x*(1+erf(x*c)))",
    "x*0.5*(1+erf)",
])
def test_gelu_erf_written_out(form):
    check(GeluErf(form), (X,), ["gelu"])


def test_gelu_module_erf_form():
    check(nn.GELU(), (X,), ["gelu"])


# -------------------------------------------------------------------------------------------- RoPE

def precompute_freqs_cis(dim, end, theta=10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end)
    freqs = torch.outer(t, freqs).float()
    return torch.cos(freqs), torch.sin(freqs)


def reshape_for_broadcast(freqs_cis, x):
    ndim = x.ndim
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(shape)


def apply_rotary_emb(xq, xk, freqs_cos, freqs_sin):
    """llama2.c's model.py, verbatim."""
    xq_r, xq_i = xq.float().reshape(xq.shape[:-1] + (-1, 2)).unbind(-1)
    xk_r, xk_i = xk.float().reshape(xk.shape[:-1] + (-1, 2)).unbind(-1)
    freqs_cos = reshape_for_broadcast(freqs_cos, xq_r)
    freqs_sin = reshape_for_broadcast(freqs_sin, xq_r)
    xq_out_r = xq_r * freqs_cos - xq_i * freqs_sin
    xq_out_i = xq_r * freqs_sin + xq_i * freqs_cos
    xk_out_r = xk_r * freqs_cos - xk_i * freqs_sin
    xk_out_i = xk_r * freqs_sin + xk_i * freqs_cos
    xq_out = torch.stack([xq_out_r, xq_out_i], dim=-1).flatten(3)
    xk_out = torch.stack([xk_out_r, xk_out_i], dim=-1).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)


class Rope(nn.Module):
    def __init__(self, hd=8, max_t=32):
        super().__init__()
        c, s = precompute_freqs_cis(hd, max_t)
        self.register_buffer("freqs_cos", c, persistent=False)
        self.register_buffer("freqs_sin", s, persistent=False)

    def forward(self, xq, xk):
        seqlen = xq.shape[1]
        return apply_rotary_emb(xq, xk, self.freqs_cos[:seqlen], self.freqs_sin[:seqlen])


def test_rope_interleaved_llama2c():
    q, k = torch.randn(1, 8, 4, 8), torch.randn(1, 8, 2, 8)
    gm = check(Rope(), (q, k), ["rope", "rope"])
    for n in nodes(gm, "rope"):
        cos = getattr(gm, n.args[1].target)
        assert cos.shape[-1] == 4 and 8 in cos.shape   # sliced to T = 8 at compile time


# --------------------------------------------------------------------------------------- attention

Q, K, V = (torch.randn(1, 2, 8, 16) for _ in range(3))


class Sdpa(nn.Module):
    def __init__(self, mask=None, causal=False):
        super().__init__()
        self.causal = causal
        if mask is not None:
            self.register_buffer("mask", mask)
        else:
            self.mask = None

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, dropout_p=0.0, is_causal=self.causal)


def softmax_args(gm):
    (sm,) = nodes(gm, "softmax")
    _, scale, causal, key_mask = sm.args
    return scale, causal, (getattr(gm, key_mask.target) if key_mask is not None else None)


def assert_attention(gm, causal, keep=None):
    m1, m2 = nodes(gm, "matmul")
    assert m1.args[2] is True and m2.args[2] is False     # q @ k^T read as trans_b; p @ v
    scale, c, km = softmax_args(gm)
    assert scale == pytest.approx(1 / math.sqrt(16)) and c is causal
    if keep is None:
        assert km is None
    else:
        assert torch.equal(km.to(torch.bool), keep)


def test_sdpa_is_causal():
    gm = check(Sdpa(causal=True), (Q, K, V), ["matmul", "softmax", "matmul"])
    assert_attention(gm, True)


KEEP = torch.tensor([True] * 6 + [False] * 2)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_sdpa_constant_padding_mask_becomes_a_key_mask(kind):
    if kind == "bool":
        mask = KEEP.expand(8, 8).clone()
    else:
        mask = torch.zeros(8, 8).masked_fill(~KEEP, float("-inf"))
    gm = check(Sdpa(mask=mask), (Q, K, V), ["matmul", "softmax", "matmul"])
    assert_attention(gm, False, KEEP)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_sdpa_constant_causal_mask_becomes_causal(kind):
    tril = torch.ones(8, 8, dtype=torch.bool).tril()
    mask = tril if kind == "bool" else torch.zeros(8, 8).masked_fill(~tril, float("-inf"))
    gm = check(Sdpa(mask=mask), (Q, K, V), ["matmul", "softmax", "matmul"])
    assert_attention(gm, True)


class ExplicitAttention(nn.Module):
    """A registered causal-mask buffer larger than T, sliced by T in forward."""

    def __init__(self, form, block=16):
        super().__init__()
        self.form = form
        self.register_buffer("bias", torch.tril(torch.ones(block, block)).view(1, 1, block, block))
        self.register_buffer("mask", torch.triu(torch.full((1, 1, block, block), float("-inf")), diagonal=1))

    def forward(self, q, k, v):
        T = q.size(2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        if self.form == "masked_fill":   # nanoGPT
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        else:                            # llama2.c
            att = att + self.mask[:, :, :T, :T]
        att = F.softmax(att, dim=-1)
        return att @ v


@pytest.mark.parametrize("form", ["masked_fill", "additive"])
def test_explicit_attention_with_a_sliced_causal_mask_buffer(form):
    gm = check(ExplicitAttention(form), (Q, K, V), ["matmul", "softmax", "matmul"])
    assert_attention(gm, True)


class Scaled(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form = form

    def forward(self, q, k):
        a = torch.matmul(q, k.transpose(-2, -1))
        a = a / math.sqrt(q.size(-1)) if self.form == "div" else a * (1.0 / math.sqrt(q.size(-1)))
        return a.softmax(-1)


@pytest.mark.parametrize("form", ["div", "mul"])
def test_scale_folds_into_softmax(form):
    gm = check(Scaled(form), (Q, K), ["matmul", "softmax"])
    scale, causal, km = softmax_args(gm)
    assert scale == pytest.approx(0.25) and causal is False and km is None


def test_k_transpose_becomes_matmul_trans_b():
    class M(nn.Module):
        def forward(self, q, k):
            return q @ k.transpose(-2, -1)

    gm = check(M(), (Q, K), ["matmul"])
    (m,) = nodes(gm, "matmul")
    assert m.args[2] is True and m.args[1].op == "placeholder"


def test_matmul_with_a_constant_operand_is_a_linear():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.randn(32, 16))

        def forward(self, x):
            return torch.matmul(x, self.w)

    gm = check(M(), (X,), ["linear"])
    (lin,) = nodes(gm, "linear")
    assert getattr(gm, lin.args[1].target).shape == (16, 32)


# ------------------------------------------------------------------------------ fused projections

class FusedQKV(nn.Module):
    def __init__(self, form, bias=True):
        super().__init__()
        self.form = form
        self.c_attn = nn.Linear(32, 96, bias=bias)

    def forward(self, x):
        if self.form == "split":
            q, k, v = self.c_attn(x).split(32, dim=2)
        else:
            q, k, v = self.c_attn(x).chunk(3, -1)
        return q + k * v


@pytest.mark.parametrize("form", ["split", "chunk"])
def test_fused_qkv_becomes_three_linears(form):
    m = FusedQKV(form)
    gm = check(m, (X,), ["linear", "linear", "linear", "mul", "add"])
    lins = nodes(gm, "linear")
    for i, lin in enumerate(lins):
        assert all(a is lins[0].args[0] for a in (lin.args[0],))
        w, b = getattr(gm, lin.args[1].target), getattr(gm, lin.args[2].target)
        assert w.shape == (32, 32) and b.shape == (32,)
    got = sorted(tuple(getattr(gm, lin.args[1].target)[0, :3].tolist()) for lin in lins)
    want = sorted(tuple(m.c_attn.weight[32 * i, :3].tolist()) for i in range(3))
    assert got == want


# ----------------------------------------------------------------------------------------- layout

class Layout(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form = form

    def forward(self, x):
        B, T, C = x.size()
        if self.form == "transpose":
            return x.view(B, T, 4, C // 4).transpose(1, 2)
        if self.form == "permute":
            return x.view(B, T, 4, C // 4).permute(0, 2, 1, 3)
        if self.form == "expand":
            y = x.view(B, T, 2, C // 2)
            return y[:, :, :, None, :].expand(B, T, 2, 2, C // 2).reshape(B, T, 4, C // 2)
        if self.form == "repeat_interleave":
            return x.view(B, T, 2, C // 2).repeat_interleave(2, dim=2)
        raise ValueError(self.form)


@pytest.mark.parametrize("form", ["transpose", "permute", "expand", "repeat_interleave"])
def test_moves_of_non_last_axes_are_gather_rows(form):
    gm = check(Layout(form), (X,), ["view", "gather_rows"])
    (g,) = nodes(gm, "gather_rows")
    x, index, shape = g.args
    rows = X.reshape(-1, X.shape[-1] // (4 if form in ("transpose", "permute") else 2))
    assert len(index) == math.prod(shape[:-1]) and max(index) < rows.shape[0]


def test_transpose_index_is_the_head_split_order():
    gm = canon(Layout("transpose"), torch.randn(1, 3, 8))
    (g,) = nodes(gm, "gather_rows")
    # (1, 3, 4, 2) rows t*4 + h read back as (1, 4, 3, 2): output row h*3 + t = input row t*4 + h
    assert g.args[1] == tuple(t * 4 + h for h in range(4) for t in range(3))


def test_view_chains_compose_into_one_view():
    class M(nn.Module):
        def forward(self, x):
            B, T, C = x.shape
            return x.view(B, T, 4, C // 4).view(B, T * 4, C // 4).reshape(B, T, C).contiguous().view(B * T, C)

    gm = check(M(), (X,), ["view"])
    (v,) = nodes(gm, "view")
    assert v.args[0].op == "placeholder" and tuple(v.args[1]) == (16, 32)


def test_identity_views_vanish():
    class M(nn.Module):
        def forward(self, x):
            B, T, C = x.shape
            return torch.relu(x.view(B, T, 4, C // 4).view(B, T, C))

    check(M(), (X,), ["relu"])


def test_head_split_and_merge_round_trip_cancels():
    class M(nn.Module):
        def forward(self, x):
            B, T, C = x.size()
            h = x.view(B, T, 4, C // 4).transpose(1, 2)
            return torch.relu(h.transpose(1, 2).contiguous().view(B, T, C))

    check(M(), (X,), ["relu"])
