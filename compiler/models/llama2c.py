"""llama2.c checkpoints ("v0" format) and tokenizers, e.g. the pretrained stories260K.

Format (shared/data/README.md): 7 little-endian int32 ``dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len``, then float32 tensors: token embedding [vocab, dim]; per layer,
stacked over layers: attention RMSNorm [L, dim], wq [L, dim, dim], wk/wv [L, kv_dim, dim],
wo [L, dim, dim], FFN RMSNorm [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden],
w3 [L, hidden, dim]; final RMSNorm [dim]; then RoPE tables (unused: recomputed, theta 10000).
A negative vocab_size means an unshared classifier follows.

    ck = load_checkpoint(data_dir() / "stories260k" / "stories260K.bin")
    ck.config.dim, ck.layers[0]["w1"].shape     # 64, (172, 64)
    tok = load_tokenizer(data_dir() / "stories260k" / "tok512.bin", ck.config.vocab_size)
    tok.encode("Once upon a time", bos=True)
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from masec.errors import MasecError


def data_dir() -> Path:
    """The shared data folder: ``$MASEC_DATA``, else ``shared/data`` beside the repository checkout."""
    if os.environ.get("MASEC_DATA"):
        return Path(os.environ["MASEC_DATA"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path("/work/shared/data")


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
        raise MasecError(f"{path}: no such llama2.c checkpoint (set MASEC_DATA to the shared data folder)")
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
    raw = Path(path).read_bytes()
    pos = 4  # max_token_length
    vocab, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", raw, pos)
        pos += 8
        vocab.append(raw[pos:pos + n].decode("utf-8", errors="replace"))
        pos += n
        scores.append(score)
    return Tokenizer(vocab, scores)
