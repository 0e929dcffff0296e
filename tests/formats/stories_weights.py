"""Minimal reader for the llama2.c v0 checkpoint stories260K.bin (see /work/shared/data/README.md).

Only the linear weights are returned; the formats tests use them as real pretrained data.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import torch

DEFAULT_PATH = Path(os.environ.get("MASEC_DATA", "/work/shared/data")) / "stories260k" / "stories260K.bin"


def load_linear_weights(path: Path = DEFAULT_PATH) -> dict[str, torch.Tensor]:
    """``{"layers.{i}.{wq,wk,wv,wo,w1,w2,w3}": [out, in] float32}`` from a llama2.c v0 file."""
    raw = Path(path).read_bytes()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = struct.unpack("<7i", raw[:28])
    vocab = abs(vocab)
    kv_dim = dim * n_kv // n_heads
    data = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = 1
        for s in shape:
            n *= s
        t = data[pos : pos + n].view(*shape).clone()
        pos += n
        return t

    take(vocab, dim)  # token embedding
    take(n_layers, dim)  # attention rmsnorm
    stacks = {
        "wq": take(n_layers, dim, dim), "wk": take(n_layers, kv_dim, dim), "wv": take(n_layers, kv_dim, dim),
        "wo": take(n_layers, dim, dim),
    }
    take(n_layers, dim)  # ffn rmsnorm
    stacks.update(w1=take(n_layers, hidden, dim), w2=take(n_layers, dim, hidden), w3=take(n_layers, hidden, dim))
    return {f"layers.{i}.{k}": v[i] for i in range(n_layers) for k, v in stacks.items()}
