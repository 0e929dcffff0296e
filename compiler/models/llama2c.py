"""llama2.c checkpoints ("v0" format) and tokenizers, e.g. the pretrained stories260K.

Format (data/README.md): 7 little-endian int32 ``dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len``, then float32 tensors: token embedding [vocab, dim]; per layer,
stacked over layers: attention RMSNorm [L, dim], wq [L, dim, dim], wk/wv [L, kv_dim, dim],
wo [L, dim, dim], FFN RMSNorm [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden],
w3 [L, hidden, dim]; final RMSNorm [dim]; then RoPE tables (unused: recomputed, theta 10000).
A negative vocab_size means an unshared classifier follows.

    ck = load_checkpoint(data_file("stories260k", "stories260K.bin"))
    ck.config.dim, ck.layers[0]["w1"].shape     # 64, (172, 64)
    tok = load_tokenizer(data_file("stories260k", "tok512.bin"), ck.config.vocab_size)
    tok.encode("Once upon a time", bos=True)
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from masec.errors import MasecError


# compiler/models/llama2c.py -> the repository root (the ``masec`` package is the compiler/ folder).
REPO_DATA = Path(__file__).resolve().parents[2] / "data"


def data_dir() -> Path:
    """The data folder: ``$MASEC_DATA`` when set, else the repository's own ``data/`` folder
    (stories260k/stories260K.bin, stories260k/tok512.bin, text/tinystories_valid.txt)."""
    env = os.environ.get("MASEC_DATA")
    return Path(env) if env else REPO_DATA


def data_file(*parts: str) -> Path:
    """``data_dir() / parts...``; a missing file raises a MasecError that says what to set."""
    path = data_dir().joinpath(*parts)
    if not path.is_file():
        where = "$MASEC_DATA" if os.environ.get("MASEC_DATA") else "the repository's data/ folder"
        raise MasecError(f"{path}: no such data file in {where}; set MASEC_DATA to a folder that "
                         f"holds {'/'.join(parts)} (the repository ships one in data/)")
    return path


@dataclass(frozen=True)
class Llama2cConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.dim * self.n_kv_heads // self.n_heads


@dataclass
class Checkpoint:
    config: Llama2cConfig
    tok_embeddings: torch.Tensor         # [vocab, dim]
    layers: list[dict[str, torch.Tensor]]  # attention_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3
    norm: torch.Tensor                   # [dim]
    classifier: torch.Tensor             # [vocab, dim] (the embedding when shared)


def load_checkpoint(path) -> Checkpoint:
    path = Path(path)
    if not path.exists():
        raise MasecError(f"{path}: no such llama2.c checkpoint (set MASEC_DATA to a data folder "
                         "holding stories260k/stories260K.bin, or pass an existing checkpoint path)")
    raw = path.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = struct.unpack("<7i", raw[:28])
    cfg = Llama2cConfig(dim, hidden, n_layers, n_heads, n_kv, abs(vocab), seq, vocab > 0)
    data = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = 1
        for s in shape:
            n *= s
        if pos + n > data.numel():
            raise MasecError(f"{path}: truncated checkpoint (wanted {n} more floats at offset {pos})")
        t = data[pos:pos + n].view(*shape).clone()
        pos += n
        return t

    L, kv = n_layers, cfg.kv_dim
    emb = take(cfg.vocab_size, dim)
    stacks = {"attention_norm": take(L, dim), "wq": take(L, dim, dim), "wk": take(L, kv, dim),
              "wv": take(L, kv, dim), "wo": take(L, dim, dim), "ffn_norm": take(L, dim),
              "w1": take(L, hidden, dim), "w2": take(L, dim, hidden), "w3": take(L, hidden, dim)}
    norm = take(dim)
    take(seq, cfg.head_dim // 2)  # freq_cis_real
    take(seq, cfg.head_dim // 2)  # freq_cis_imag
    classifier = emb if cfg.shared_classifier else take(cfg.vocab_size, dim)
    layers = [{k: v[i] for k, v in stacks.items()} for i in range(L)]
    return Checkpoint(cfg, emb, layers, norm, classifier)


@dataclass
class Tokenizer:
    vocab: list[str]
    scores: list[float]

    def __post_init__(self):
        self._index = {s: i for i, s in enumerate(self.vocab)}

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """llama2.c's encode: a leading space token, characters (bytes as <0xXX> fallback), then
        greedy merges of the adjacent pair whose merged string has the highest score."""
        ids = [1] if bos else []
        toks: list[int] = []
        for ch in (" " + text) if text else "":  # llama2.c's dummy-prefix space
            if ch in self._index:
                toks.append(self._index[ch])
            else:  # byte fallback: ids 3..258 are <0x00>..<0xFF>
                toks.extend(b + 3 for b in ch.encode("utf-8"))
        while True:
            best, best_i = -1e10, -1
            for i in range(len(toks) - 1):
                j = self._index.get(self.vocab[toks[i]] + self.vocab[toks[i + 1]])
                if j is not None and self.scores[j] > best:
                    best, best_i, best_id = self.scores[j], i, j
            if best_i < 0:
                break
            toks[best_i:best_i + 2] = [best_id]
        return ids + toks + ([2] if eos else [])

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in ids if i > 2)


def load_tokenizer(path, vocab_size: int) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise MasecError(f"{path}: no such llama2.c tokenizer (set MASEC_DATA to a data folder "
                         "holding stories260k/tok512.bin, or pass an existing tokenizer path)")
    raw = path.read_bytes()
    pos = 4  # max_token_length
    vocab, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", raw, pos)
        pos += 8
        vocab.append(raw[pos:pos + n].decode("utf-8", errors="replace"))
        pos += n
        scores.append(score)
    return Tokenizer(vocab, scores)


def _rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def forward(ck: Checkpoint, ids: list[int], capture: dict | None = None) -> torch.Tensor:
    """Float32 forward of a llama2.c model over one sequence; returns logits ``[T, vocab]``.

    RMSNorm (eps 1e-5), RoPE on interleaved pairs (theta 10000), grouped-query causal attention,
    SwiGLU FFN, residuals. When ``capture`` is a dict it receives, per layer ``l``:
    ``attn_norm_in.l`` [T, dim], ``scores.l`` (pre-softmax, scaled) [H, T, T], ``ffn_norm_in.l``,
    ``gate.l`` (W1 x, the SiLU input) [T, hidden]; and ``final_norm_in`` [T, dim].
    """
    cfg = ck.config
    dim, nh, nkv, hd = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    T = len(ids)
    x = ck.tok_embeddings[torch.tensor(ids)]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * freqs[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(v, heads):
        v = v.view(T, heads, hd // 2, 2)
        a, b = v[..., 0], v[..., 1]
        return torch.stack((a * cos[:, None] - b * sin[:, None], a * sin[:, None] + b * cos[:, None]), -1).view(T, -1)

    def keep(name, t):
        if capture is not None:
            capture[name] = t.detach().clone()

    mask = torch.full((T, T), float("-inf")).triu(1)
    with torch.no_grad():
        for li, w in enumerate(ck.layers):
            keep(f"attn_norm_in.{li}", x)
            xb = _rmsnorm(x, w["attention_norm"])
            q = rope(xb @ w["wq"].T, nh).view(T, nh, hd).transpose(0, 1)
            k = rope(xb @ w["wk"].T, nkv).view(T, nkv, hd).transpose(0, 1).repeat_interleave(nh // nkv, 0)
            v = (xb @ w["wv"].T).view(T, nkv, hd).transpose(0, 1).repeat_interleave(nh // nkv, 0)
            s = q @ k.transpose(1, 2) / hd ** 0.5
            keep(f"scores.{li}", s)
            o = (torch.softmax(s + mask, -1) @ v).transpose(0, 1).reshape(T, dim)
            x = x + o @ w["wo"].T
            keep(f"ffn_norm_in.{li}", x)
            xb = _rmsnorm(x, w["ffn_norm"])
            gate = xb @ w["w1"].T
            keep(f"gate.{li}", gate)
            x = x + (torch.nn.functional.silu(gate) * (xb @ w["w3"].T)) @ w["w2"].T
        keep("final_norm_in", x)
        return _rmsnorm(x, ck.norm) @ ck.classifier.T


def generate(ck: Checkpoint, tok: Tokenizer, prompt: str, steps: int) -> str:
    """Greedy continuation of ``prompt`` (text of the new tokens only)."""
    ids = tok.encode(prompt, bos=True)
    start = len(ids)
    for _ in range(steps):
        ids.append(int(forward(ck, ids)[-1].argmax()))
    return tok.decode(ids[start:])


def text_token_ids(tok: Tokenizer, text: str, n_tokens: int) -> list[int]:
    """The first ``n_tokens`` ids of ``text``: paragraphs (blank-line separated), each encoded with BOS."""
    ids: list[int] = []
    for para in text.split("\n\n"):
        if para.strip():
            ids += tok.encode(para.strip(), bos=True)
        if len(ids) >= n_tokens:
            break
    return ids[:n_tokens]


def linear_weights(ck: Checkpoint) -> dict[str, torch.Tensor]:
    """``{"layers.{i}.{wq,wk,wv,wo,w1,w2,w3}": [out, in]}``: every linear weight of the model."""
    names = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
    return {f"layers.{i}.{k}": layer[k] for i, layer in enumerate(ck.layers) for k in names}


def stories260k() -> tuple[Checkpoint, Tokenizer]:
    """The pretrained stories260K and its tokenizer from the data folder (``data_dir()``)."""
    ck = load_checkpoint(data_file("stories260k", "stories260K.bin"))
    return ck, load_tokenizer(data_file("stories260k", "tok512.bin"), ck.config.vocab_size)
