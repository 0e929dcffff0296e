"""Measured error of the mx_gelu / mx_silu kernels (bit-exact models) against float GELU / SiLU.

Two measurements, printed as tables and written to bench/results/activation_error.json:

1. Every input value of the format (each non-zero finite code at every block scale that puts
   it within binades -20 .. +10, plus the scale extremes), each in a block of its own: how often
   the kernel output differs from the correctly rounded MX value of f(x) (mpmath reference), and
   the largest relative error of the value handed to the quantizer (inside the ROM range).
2. Real activations: the SwiGLU gate input w1 @ rmsnorm(x) of every layer of the pretrained
   stories260K (llama2.c) on real TinyStories validation text, MX-quantized to the kernel's
   input format, through the kernel; compared with (a) the ideal output (MX quantization of the
   exact f of the same quantized inputs) and (b) float f of the float activations, beside the
   error an ideal kernel would have. GELU is measured on the same tensors (the model uses SiLU).

Run: python bench/activation_error.py [--tokens 256] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from pathlib import Path

import torch

from masec.hw_templates.kernels.mx_act import (DEFAULT_G, K_HI, K_LO, act_me, act_model, reference_me,
                                                reference_model)
from masec.hw_templates.kernels.mx_eltwise import decode_sig_exp
from masec.hw_templates.kernels.mx_relu import resolve_format

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")
PAIRS = [("mxint8", "mxint8"), ("mxfp8_e4m3", "mxfp8_e4m3"), ("mxfp4", "mxfp4"), ("mxint8", "mxfp8_e4m3"),
         ("mxfp8_e4m3", "mxint8"), ("mxfp8_e5m2", "mxfp8_e4m3")]


# ------------------------------------------------------------------------------ 1. every input value
def sweep_all_values(func: str, fmt_in: str, fmt_out: str) -> dict:
    fi, fo = resolve_format(fmt_in, 32), resolve_format(fmt_out, 32)
    el = fi.element
    vals = el.decode_codes(el.all_codes())
    codes = el.all_codes()[torch.isfinite(vals) & (vals != 0)]
    scales = sorted({s for s in list(range(127 - 20 - el.emax, 127 + 12)) + [0, 1, 2, 252, 253, 254] if 0 <= s <= 254})
    c = codes.repeat(len(scales)).unsqueeze(-1)
    s = torch.tensor(scales).repeat_interleave(len(codes))
    got_c, got_s = act_model(func, c, s, el, fo.element)
    ref_c, ref_s = reference_model(func, c, s, el, fo.element)
    same = (got_c[:, 0] == ref_c[:, 0]) & (got_s == ref_s)
    sig, exp = decode_sig_exp(c, el)
    k = (s.unsqueeze(-1) + exp - 127 + torch.floor(torch.log2(sig.abs().double())).long())[:, 0]
    rom = (k >= K_LO) & (k <= K_HI[func])
    # relative error of the pre-quantization value in the ROM range
    m, e = act_me(func, c[rom], s[rom], el, fo.element)
    rm, re_ = reference_me(func, c[rom], s[rom], el)
    worst = 0.0
    for mi, ei, rmi, rei in zip(m[:, 0].tolist(), e[:, 0].tolist(), rm, re_):
        shift = ei - rei
        # |m 2^e - rm 2^re| / |rm 2^re| in floating point after exact alignment
        num = (mi << shift) - rmi if shift >= 0 else mi - (rmi << -shift)
        den = rmi if shift >= 0 else rmi << -shift
        worst = max(worst, abs(num) / abs(den))
    return {"func": func, "in": fmt_in, "out": fmt_out, "values": int(len(c)), "in_rom": int(rom.sum()),
            "differ": int((~same).sum()), "differ_outside_rom": int((~same & ~rom).sum()),
            "max_rel_err_before_rounding": worst, "bound_2^-G": 2.0 ** -DEFAULT_G}


# ------------------------------------------------------------------------------ 2. stories260K
def load_llama2c(path: Path) -> dict:
    raw = path.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    t = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32)
    kv_dim = dim * n_kv // n_heads
    off = 0

    def take(*shape):
        nonlocal off
        n = math.prod(shape)
        out = t[off:off + n].reshape(shape)
        off += n
        return out
    w = {"cfg": dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, vocab=vocab)}
    w["emb"] = take(vocab, dim)
    w["att_norm"] = take(n_layers, dim)
    w["wq"] = take(n_layers, dim, dim)
    w["wk"] = take(n_layers, kv_dim, dim)
    w["wv"] = take(n_layers, kv_dim, dim)
    w["wo"] = take(n_layers, dim, dim)
    w["ffn_norm"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    w["final_norm"] = take(dim)
    w["cls"] = w["emb"] if shared else None
    return w


def load_tokenizer(path: Path, vocab: int):
    raw = path.read_bytes()
    off = 4
    toks, scores = [], []
    for _ in range(vocab):
        score, n = struct.unpack("<fi", raw[off:off + 8])
        off += 8
        toks.append(raw[off:off + n].decode("utf-8", errors="replace"))
        off += n
        scores.append(score)
    return toks, scores


def encode(text: str, toks, scores) -> list[int]:
    """llama2.c's encode: BOS, dummy-prefix space, per-character lookup with byte fallback, then
    greedy merges of the best-scoring adjacent pair."""
    index = {s: i for i, s in enumerate(toks)}
    ids = [index[" "]] if text else []
    for ch in text:
        if ch in index:
            ids.append(index[ch])
        else:
            ids.extend(b + 3 for b in ch.encode("utf-8"))
    while True:
        best, best_i, best_id = -1e10, -1, -1
        for i in range(len(ids) - 1):
            j = index.get(toks[ids[i]] + toks[ids[i + 1]])
            if j is not None and scores[j] > best:
                best, best_i, best_id = scores[j], i, j
        if best_i < 0:
            break
        ids[best_i:best_i + 2] = [best_id]
    return [1] + ids


def rmsnorm(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w


def forward_capture(w, ids: list[int]):
    """Float32 forward over one sequence; returns (logits, [w1 @ xb per layer])."""
    cfg = w["cfg"]
    dim, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv"]
    hd = dim // nh
    T = len(ids)
    x = w["emb"][torch.tensor(ids)]
    pos = torch.arange(T, dtype=torch.float32)
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = pos[:, None] * freqs[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(v, heads):
        v = v.view(T, heads, hd // 2, 2)
        a, b = v[..., 0], v[..., 1]
        return torch.stack((a * cos[:, None] - b * sin[:, None], a * sin[:, None] + b * cos[:, None]), -1).view(T, heads * hd)
    mask = torch.full((T, T), float("-inf")).triu(1)
    gates = []
    for li in range(cfg["n_layers"]):
        xb = rmsnorm(x, w["att_norm"][li])
        q = rope(xb @ w["wq"][li].T, nh)
        k = rope(xb @ w["wk"][li].T, nkv)
        v = xb @ w["wv"][li].T
        q = q.view(T, nh, hd).transpose(0, 1)
        k = k.view(T, nkv, hd).transpose(0, 1).repeat_interleave(nh // nkv, 0)
        v = v.view(T, nkv, hd).transpose(0, 1).repeat_interleave(nh // nkv, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1)
        o = (att @ v).transpose(0, 1).reshape(T, dim)
        x = x + o @ w["wo"][li].T
        xb = rmsnorm(x, w["ffn_norm"][li])
        h1 = xb @ w["w1"][li].T
        gates.append(h1.clone())
        x = x + (torch.nn.functional.silu(h1) * (xb @ w["w3"][li].T)) @ w["w2"][li].T
    x = rmsnorm(x, w["final_norm"])
    return x @ w["cls"].T, gates


def real_activations(n_tokens: int):
    w = load_llama2c(DATA / "stories260k" / "stories260K.bin")
    toks, scores = load_tokenizer(DATA / "stories260k" / "tok512.bin", w["cfg"]["vocab"])
    # sanity: greedy continuation of the prompt (README: ", there was a little girl named Lily")
    ids = encode("Once upon a time", toks, scores)
    for _ in range(8):
        logits, _ = forward_capture(w, ids)
        ids.append(int(logits[-1].argmax()))
    continuation = "".join(toks[i] for i in ids[len(encode("Once upon a time", toks, scores)):])
    text = (DATA / "text" / "tinystories_valid.txt").read_text(encoding="utf-8")
    paragraph_ids: list[int] = []
    for para in text.split("\n\n"):
        paragraph_ids += encode(para.strip(), toks, scores)
        if len(paragraph_ids) >= n_tokens:
            break
    paragraph_ids = paragraph_ids[:n_tokens]
    _, gates = forward_capture(w, paragraph_ids)
    return torch.stack(gates), continuation   # [layers, T, hidden]


def blocks_of(x: torch.Tensor, fmt):
    """MX-encode rows (last axis, zero-padded to whole blocks): codes [N, nb, B], scales [N, nb]."""
    enc = fmt.encode(x.float())
    return enc.codes.to(torch.int64), enc.scales.to(torch.int64)


def real_activation_error(func: str, gates: torch.Tensor, fmt_in: str, fmt_out: str) -> dict:
    fi, fo = resolve_format(fmt_in, 32), resolve_format(fmt_out, 32)
    x = gates.reshape(-1, gates.shape[-1])
    n = x.shape[-1]
    c, s = blocks_of(x, fi)
    kc, ks = act_model(func, c, s, fi.element, fo.element)
    rc, rs = reference_model(func, c, s, fi.element, fo.element)
    kern = fo.decode_codes(kc, ks).reshape(x.shape[0], -1)[:, :n].double()
    ideal = fo.decode_codes(rc, rs).reshape(x.shape[0], -1)[:, :n].double()
    xq = fi.decode_codes(c, s).reshape(x.shape[0], -1)[:, :n].double()
    f = torch.nn.functional.gelu if func == "gelu" else torch.nn.functional.silu
    true = f(x.double())
    rms = float(true.pow(2).mean().sqrt())

    def rel_rmse(a):
        return float((a - true).pow(2).mean().sqrt()) / rms
    differ = int((kern != ideal).sum())
    return {"func": func, "in": fmt_in, "out": fmt_out, "elements": int(x.numel()),
            "differ_from_ideal": differ, "differ_fraction": differ / x.numel(),
            "max_abs_diff_from_ideal": float((kern - ideal).abs().max()),
            "rel_rmse_kernel_vs_float": rel_rmse(kern), "rel_rmse_ideal_vs_float": rel_rmse(ideal),
            "rel_rmse_f(quantized input)_vs_float": rel_rmse(f(xq)), "input_absmax": float(x.abs().max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256, help="tokens of real text for the activation capture")
    ap.add_argument("--quick", action="store_true", help="fewer format pairs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "activation_error.json")
    args = ap.parse_args(argv)
    pairs = PAIRS[:3] if args.quick else PAIRS
    t0 = time.time()
    sweep = [sweep_all_values(func, a, b) for func in ("gelu", "silu") for a, b in pairs]
    print(f"1. every input value, each in its own block (G = {DEFAULT_G}, ROM binades {K_LO}..K_HI)")
    print(f"{'func':5} {'in':>11} {'out':>11} {'values':>7} {'in ROM':>7} {'differ':>7} {'outside':>7} {'max rel err':>12}")
    for r in sweep:
        print(f"{r['func']:5} {r['in']:>11} {r['out']:>11} {r['values']:7d} {r['in_rom']:7d} {r['differ']:7d} "
              f"{r['differ_outside_rom']:7d} {r['max_rel_err_before_rounding']:12.3g}")
    gates, cont = real_activations(args.tokens)
    print(f"\n2. stories260K SwiGLU gate inputs: {gates.shape[0]} layers x {gates.shape[1]} tokens x {gates.shape[2]} "
          f"(greedy check: 'Once upon a time' -> {cont!r})")
    real = [real_activation_error(func, gates, a, b) for func in ("silu", "gelu") for a, b in pairs]
    print(f"{'func':5} {'in':>11} {'out':>11} {'elements':>8} {'differ':>7} {'kernel rRMSE':>12} {'ideal rRMSE':>12}")
    for r in real:
        print(f"{r['func']:5} {r['in']:>11} {r['out']:>11} {r['elements']:8d} {r['differ_from_ideal']:7d} "
              f"{r['rel_rmse_kernel_vs_float']:12.4g} {r['rel_rmse_ideal_vs_float']:12.4g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"g_bits": DEFAULT_G, "k_lo": K_LO, "k_hi": K_HI, "all_values": sweep,
                                    "stories260k": {"tokens": args.tokens, "greedy_check": cont, "results": real}},
                                   indent=1) + "\n")
    print(f"\nwrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
