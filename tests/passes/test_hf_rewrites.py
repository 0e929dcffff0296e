"""HuggingFace-style rewrites: rotate-half RoPE as interleaved ``rope`` (passes/transform/rope_half.py),
GPT-2's ``Conv1D`` (addmm) as ``linear``, tanh GELU (module and written out) as ``gelu_tanh``, add/mul
with a constant operand. Each: canonical ops, float equality (atol 1e-5), idempotence, refusals."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from masec import ops
from masec.frontend import export
from masec.passes.transform.canonicalize import canonicalize
from masec.passes.transform.rope_half import interleave_perm


def canon(model, *inputs):
    return canonicalize(export(model.eval(), inputs), inputs)


def op_names(gm) -> list[str]:
    return [ops.op_of(n) or getattr(n.target, "__name__", str(n.target))
            for n in gm.graph.nodes if n.op == "call_function"]


def check(model, inputs):
    with torch.no_grad():
        ref = model.eval()(*inputs)
        gm = canon(model, *inputs)
        out = gm(*inputs)
    assert torch.allclose(out, ref, atol=1e-5), float((out - ref).abs().max())
    code = gm.code
    canonicalize(gm, inputs)
    assert gm.code == code, "second canonicalize changed the graph"
    return gm


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class HFAttention(nn.Module):
    """HF Llama attention as written in transformers (rotate-half RoPE after the head transpose,
    cos/sin built in forward from inv_freq and position ids, GQA by expand, eager softmax)."""

    def __init__(self, dim=32, heads=4, kv_heads=2, bias=False, halves_differ=False, leak_q=False):
        super().__init__()
        self.h, self.kv, self.d = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, heads * self.d, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * self.d, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * self.d, bias=False)
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, self.d, 2).float() / self.d))
        self.halves_differ, self.leak_q = halves_differ, leak_q

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, -1, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, -1, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, -1, self.d).transpose(1, 2)
        pos = torch.arange(t, device=x.device)[None, :].float()
        freqs = pos[:, :, None] * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs * 1.5 if self.halves_differ else freqs), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        qr = q * cos + rotate_half(q) * sin
        kr = k * cos + rotate_half(k) * sin
        n_rep = self.h // self.kv
        kr = kr[:, :, None].expand(b, self.kv, n_rep, t, self.d).reshape(b, self.h, t, self.d)
        v = v[:, :, None].expand(b, self.kv, n_rep, t, self.d).reshape(b, self.h, t, self.d)
        att = torch.softmax(qr @ kr.transpose(2, 3) / math.sqrt(self.d), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, -1)
        return (y, qr) if self.leak_q else y


def test_interleave_perm():
    assert interleave_perm(8) == [0, 4, 1, 5, 2, 6, 3, 7]
    assert sorted(interleave_perm(16)) == list(range(16))


@pytest.mark.parametrize("bias", [False, True])
def test_rotate_half_rope_becomes_interleaved_rope(bias):
    torch.manual_seed(0)
    m = HFAttention(bias=bias)
    gm = check(m, (torch.randn(1, 8, 32),))
    names = op_names(gm)
    assert names.count("rope") == 2 and "neg.default" not in names and "cat.default" not in names, names
    assert set(names) <= {"linear", "view", "gather_rows", "rope", "matmul", "softmax"}, names
    # the tables are the first halves, and the projection rows are interleaved per head
    rope = [n for n in gm.graph.nodes if ops.op_of(n) == "rope"][0]
    assert getattr(gm, rope.args[1].target).shape[-1] == m.d // 2
    lin = rope.args[0]
    while ops.op_of(lin) != "linear":
        lin = lin.args[0]
    w = getattr(gm, lin.args[1].target)
    perm = interleave_perm(m.d)
    assert torch.equal(w[: m.d], m.q_proj.weight.detach()[perm]) or torch.equal(w[: m.d], m.k_proj.weight.detach()[perm])


def test_rotate_half_rope_refused_when_tables_halves_differ():
    gm = canon(HFAttention(halves_differ=True), torch.randn(1, 8, 32))
    assert "neg.default" in op_names(gm) and "rope" not in op_names(gm)   # left for the unsupported-op error


def test_rotate_half_rope_refused_when_rotated_q_is_used_elsewhere():
    """P^T can only be dropped when q and k meet in q @ k^T alone."""
    gm = canon(HFAttention(leak_q=True), torch.randn(1, 8, 32))
    assert "neg.default" in op_names(gm) and "rope" not in op_names(gm)   # left for the unsupported-op error


class Conv1D(nn.Module):
    """GPT-2's Conv1D: weight [in, out], x @ W + b through addmm on 2-D views."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.weight.size(-1),)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


def test_conv1d_addmm_becomes_linear():
    gm = check(Conv1D(24, 16), (torch.randn(1, 8, 16),))
    assert op_names(gm) == ["linear"]


class NewGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GeluTanhModule(nn.Module):
    def forward(self, x):
        return F.gelu(x, approximate="tanh")


@pytest.mark.parametrize("act", [NewGELU(), GeluTanhModule(), nn.GELU(approximate="tanh")])
def test_tanh_gelu_forms(act):
    m = nn.Sequential(nn.Linear(16, 32), act)
    assert op_names(check(m, (torch.randn(2, 16),))) == ["linear", "gelu_tanh"]


class LearnedPositions(nn.Module):
    """GPT-2 style: token embedding + wpe(arange(T)), then a constant gain."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(32, 16)
        self.wpe = nn.Embedding(8, 16)
        self.gain = nn.Parameter(torch.rand(16) + 0.5)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)[None]
        return (self.wte(ids) + self.wpe(pos)) * self.gain


def test_add_mul_with_constant_operand():
    ids = torch.randint(0, 32, (1, 8))
    gm = check(LearnedPositions(), (ids,))
    assert op_names(gm) == ["embedding", "add", "mul"]
    for n in gm.graph.nodes:
        if ops.op_of(n) in ("add", "mul"):
            const = [a for a in n.args if a.op == "get_attr"]
            assert len(const) == 1 and tuple(getattr(gm, const[0].target).shape) == (1, 8, 16)


LEARNED_POSITIONS_FILE = '''
import torch
import torch.nn as nn


class LearnedPositions(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.wte = nn.Embedding(32, 16)
        self.wpe = nn.Embedding(8, 16)
        self.gain = nn.Parameter(torch.rand(16) + 0.5)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)[None]
        return (self.wte(ids) + self.wpe(pos)) * self.gain


model = LearnedPositions()
example_inputs = (torch.randint(0, 32, (1, 8), generator=torch.Generator().manual_seed(4)),)
'''


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3"])
def test_constant_operands_stream_from_roms_bit_exactly(tmp_path, seed, fmt):
    """add/mul with a constant: the constant gets its consumer's act format, becomes a stream_rom
    whose model is the encoded constant, and the design simulates bit-exactly under backpressure."""
    from masec.backend import compile_model
    from masec.config import CompileConfig
    from masec.lowering import MXValue
    from masec.simulate import simulate

    f = tmp_path / "learned_positions.py"
    f.write_text(LEARNED_POSITIONS_FILE)
    out = tmp_path / "out"
    res = compile_model(CompileConfig(model_file=str(f), out=str(out), format=fmt, seed=seed))
    roms = [i for i in res.ir.instances.values() if i.kernel == "stream_rom"]
    assert len(roms) == 2
    for rom in roms:
        (t,) = rom.out_types
        assert t.fmt.name == fmt and t.shape == (1, 8, 16)
        const = getattr(res.gm, rom.node)
        want = MXValue.from_float(const, t.fmt)
        (got,) = rom.model([])
        assert torch.equal(got.codes, want.codes) and torch.equal(got.scales, want.scales)
        assert (out / "rtl" / f"{rom.name}.mem").exists()
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message
