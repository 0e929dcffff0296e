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
import sys
import time
from pathlib import Path

import torch

from masec.hw_templates.kernels.mx_act import (DEFAULT_G, K_HI, K_LO, act_me, act_model, reference_me,
                                                reference_model)
from masec.hw_templates.kernels.mx_eltwise import decode_sig_exp
from masec.hw_templates.kernels.mx_relu import resolve_format
from masec.models.llama2c import data_file, forward, generate, stories260k, text_token_ids

ROOT = Path(__file__).resolve().parents[1]
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
def real_activations(n_tokens: int):
    """SwiGLU gate inputs (w1 @ rmsnorm(x), the SiLU input) of every layer of stories260K on the first
    ``n_tokens`` of TinyStories validation text: ([layers, T, hidden], greedy continuation check)."""
    ck, tok = stories260k()
    # sanity: greedy continuation of the prompt (README: ", there was a little girl named Lily")
    continuation = generate(ck, tok, "Once upon a time", 8)
    text = data_file("text", "tinystories_valid.txt").read_text(encoding="utf-8")
    cap: dict = {}
    forward(ck, text_token_ids(tok, text, n_tokens), capture=cap)
    return torch.stack([cap[f"gate.{li}"] for li in range(ck.config.n_layers)]), continuation


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
