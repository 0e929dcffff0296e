"""Measured error of the mx_softmax / mx_rmsnorm / mx_layernorm kernels (bit-exact models) on real
activations of the pretrained stories260K (llama2.c) running real TinyStories validation text.

Captured in float32: the attention scores q k^T / sqrt(head_dim) of every layer and head (softmax
with the causal mask, rows = T, offset 0) and the inputs of every RMSNorm (attention and FFN norm
of each layer, the final norm) with their trained weights as gamma. stories260K has no LayerNorm:
mx_layernorm is measured on the same norm inputs with the trained RMSNorm weights as gamma and
beta = 0.1 * (the other norm's weights of the layer) so that the beta path is exercised.

Per kernel and (input, output) format pair the inputs are MX-quantized (block 32 along the
reduced axis; gamma/beta in mxfp8_e4m3) and run through the kernel model. mx_softmax runs in two
forms: "prescaled" quantizes the scores q k^T / sqrt(head_dim) and runs softmax (scale 1);
"folded" quantizes the raw q k^T (reconstructed as scores * sqrt(head_dim) in float64) and folds
the 1/sqrt(head_dim) into the kernel (``scale=``). Both are compared with the same float softmax
of the float scores. Columns:

* approx_rel: the kernel's own approximation, the largest relative error of the exact values
  m * 2^e handed to the quantizer against the float64 function of the same quantized inputs
  (elements above 1e-3 of the row's largest output);
* differ: fraction of output codes that differ from the ideal kernel (MX quantization of the
  float64 function of the same quantized inputs), max_step: the largest distance in grid steps;
* rel_rmse kernel / ideal: RMS error against the float function of the float activations,
  relative to the RMS of that output, for the kernel and for the ideal kernel.

Run: python bench/nonlinear_error.py [--tokens 64]   (prints a table, writes
bench/results/nonlinear_error.json)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from masec.formats import parse_format
from masec.hw_templates.kernels import mx_norm as MN
from masec.hw_templates.kernels import mx_softmax as SM
from masec.models.llama2c import data_file, forward, stories260k, text_token_ids

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("mxint8", "mxint8"), ("mxfp8_e4m3", "mxfp8_e4m3"), ("mxfp8_e4m3", "mxint8"), ("mxfp4", "mxfp8_e4m3")]
PARAM_FMT = "mxfp8_e4m3"
LANES = 8


def capture(n_tokens: int):
    """Float32 forward of stories260K over the first ``n_tokens`` of real text; returns (scores
    [L*H, T, T], norm inputs [K, T, dim], gammas [K, dim], betas [K, dim], head_dim) with K = 2 L + 1
    norms (per layer the attention then the FFN norm, then the final norm)."""
    ck, tok = stories260k()
    text = data_file("text", "tinystories_valid.txt").read_text(encoding="utf-8")
    cap: dict = {}
    forward(ck, text_token_ids(tok, text, n_tokens), capture=cap)
    scores, norm_in, gammas, betas = [], [], [], []
    for li, w in enumerate(ck.layers):
        scores.append(cap[f"scores.{li}"])
        norm_in += [cap[f"attn_norm_in.{li}"], cap[f"ffn_norm_in.{li}"]]
        gammas += [w["attention_norm"], w["ffn_norm"]]
        betas += [0.1 * w["ffn_norm"], 0.1 * w["attention_norm"]]
    norm_in.append(cap["final_norm_in"])
    gammas.append(ck.norm)
    betas.append(0.1 * ck.layers[0]["attention_norm"])
    return (torch.cat(scores), torch.stack(norm_in), torch.stack(gammas), torch.stack(betas),
            ck.config.head_dim)


def _enc(x: torch.Tensor, fmt):
    e = fmt.encode(x.float())
    return e.codes.to(torch.int64), e.scales.to(torch.int64)


def _dec(fmt, codes, scales, shape, n):
    return fmt.decode_codes(codes, scales).reshape(*shape[:-1], -1)[..., :n].double()


def _row(kernel, fi_name, fo_name, fo, got_c, got_s, ideal_c, ideal_s, kern, ideal, true, lanes_val, exact):
    el = fo.element
    same_scale = got_s == ideal_s
    differ = (got_c != ideal_c)
    steps = (MN.ordinal(got_c, el) - MN.ordinal(ideal_c, el)).abs()[differ & same_scale.unsqueeze(-1)]
    rms = float(true.pow(2).mean().sqrt())
    big = exact.abs() > 1e-3 * exact.abs().amax(-1, keepdim=True)
    approx = float(((lanes_val - exact).abs() / exact.abs())[big].max())
    return {"kernel": kernel, "in": fi_name, "out": fo_name, "elements": int(true.numel()),
            "approx_rel": approx, "differ": float(differ.float().mean()),
            "differ_scales": float((~same_scale).float().mean()),
            "max_step": int(steps.max()) if steps.numel() else 0,
            "rel_rmse_kernel": float((kern - true).pow(2).mean().sqrt()) / rms,
            "rel_rmse_ideal": float((ideal - true).pow(2).mean().sqrt()) / rms}


def bench_softmax(scores: torch.Tensor, fi_name: str, fo_name: str, head_dim: int | None = None) -> dict:
    """``head_dim`` None: the prescaled form (softmax of the quantized scores); else the folded form
    (the quantized raw scores q k^T, kernel scale 1 / sqrt(head_dim))."""
    fi, fo = parse_format(fi_name, block_size=32), parse_format(fo_name, block_size=32)
    T = scores.shape[-1]
    true = SM.softmax_reference(scores.reshape(-1, T).double(), True, T, 0)
    scale = 1.0 if head_dim is None else 1 / head_dim ** 0.5
    x = scores.reshape(-1, T).double() * (1.0 if head_dim is None else head_dim ** 0.5)
    c, s = _enc(x, fi)
    xq = _dec(fi, c, s, x.shape, T)
    m, e = SM.softmax_lanes_t(c, s, fi.element, T, LANES, causal=True, rows=T, offset=0, scale=scale)
    kc, ks = SM.softmax_model(c, s, fi.element, fo.element, T, LANES, causal=True, rows=T, offset=0, scale=scale)
    exact = SM.softmax_reference(xq, True, T, 0, scale=scale)
    ic, is_ = _enc(exact, fo)
    lanes_val = (m.double() * torch.pow(2.0, e.double()))[:, :T]
    row = _row("mx_softmax", fi_name, fo_name, fo, kc, ks, ic, is_, _dec(fo, kc, ks, x.shape, T),
               _dec(fo, ic, is_, x.shape, T), true, lanes_val, exact)
    row["form"] = "prescaled" if head_dim is None else "folded"
    row["scale"] = scale
    return row


def bench_norm(kind: str, xs: torch.Tensor, gammas: torch.Tensor, betas: torch.Tensor, fi_name: str, fo_name: str) -> dict:
    fi, fo, fp = (parse_format(f, block_size=32) for f in (fi_name, fo_name, PARAM_FMT))
    n = xs.shape[-1]
    out = {k: [] for k in ("kc", "ks", "ic", "is", "kern", "ideal", "true", "lanes", "exact")}
    for x, g, b in zip(xs, gammas, betas):
        c, s = _enc(x, fi)
        gc, gs = _enc(g, fp)
        bc, bs = _enc(b, fp)
        xq = _dec(fi, c, s, x.shape, n)
        gq = _dec(fp, gc, gs, g.shape, n)
        bq = _dec(fp, bc, bs, b.shape, n)
        if kind == "rmsnorm":
            m, e = MN.rmsnorm_lanes(c, s, fi.element, gc, gs, fp.element, n)
            kc, ks = MN.rmsnorm_model(c, s, fi.element, gc, gs, fp.element, fo.element, n)
            exact = MN.rmsnorm_reference(xq, gq)
            true = MN.rmsnorm_reference(x.double(), g.double())
        else:
            m, e = MN.layernorm_lanes(c, s, fi.element, gc, gs, fp.element, bc, bs, fp.element, n, lanes=LANES)
            kc, ks = MN.layernorm_model(c, s, fi.element, gc, gs, fp.element, bc, bs, fp.element, fo.element, n,
                                        lanes=LANES)
            exact = MN.layernorm_reference(xq, gq, bq)
            true = MN.layernorm_reference(x.double(), g.double(), b.double())
        ic, is_ = _enc(exact, fo)
        out["kc"].append(kc)
        out["ks"].append(ks)
        out["ic"].append(ic)
        out["is"].append(is_)
        out["kern"].append(_dec(fo, kc, ks, x.shape, n))
        out["ideal"].append(_dec(fo, ic, is_, x.shape, n))
        out["true"].append(true)
        out["lanes"].append(MN.lanes_to_float(m, e)[:, :n])
        out["exact"].append(exact)
    cat = {k: torch.cat(v) for k, v in out.items()}
    return _row(f"mx_{kind}", fi_name, fo_name, fo, cat["kc"], cat["ks"], cat["ic"], cat["is"], cat["kern"],
                cat["ideal"], cat["true"], cat["lanes"], cat["exact"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64, help="tokens of real text (softmax rows have this length)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "nonlinear_error.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    scores, xs, gammas, betas, head_dim = capture(args.tokens)
    print(f"stories260K on {scores.shape[-1]} tokens of TinyStories validation text: {scores.shape[0]} "
          f"attention score matrices, {xs.shape[0]} norm inputs of [{xs.shape[1]}, {xs.shape[2]}]; "
          f"|score| max {scores.abs().max():.2f}, |norm input| max {xs.abs().max():.2f}")
    rows = []
    for fi, fo in PAIRS:
        rows.append(bench_softmax(scores, fi, fo))
        rows.append(bench_softmax(scores, fi, fo, head_dim))
        rows.append(bench_norm("rmsnorm", xs, gammas, betas, fi, fo))
        rows.append(bench_norm("layernorm", xs, gammas, betas, fi, fo))
    hdr = (f"{'kernel':13} {'form':>9} {'in':>11} {'out':>11} {'elements':>9} {'approx_rel':>10} {'differ':>8} "
           f"{'max_step':>8} {'rmse kern':>9} {'rmse ideal':>10}")
    print(hdr)
    print("-" * len(hdr))
    for r in sorted(rows, key=lambda r: (r["kernel"], r["in"], r["out"], r.get("form", ""))):
        print(f"{r['kernel']:13} {r.get('form', ''):>9} {r['in']:>11} {r['out']:>11} {r['elements']:>9} {r['approx_rel']:>10.2e} "
              f"{r['differ']:>8.3%} {r['max_step']:>8} {r['rel_rmse_kernel']:>9.4f} {r['rel_rmse_ideal']:>10.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"tokens": args.tokens, "lanes": LANES, "param_format": PARAM_FMT,
                                    "head_dim": head_dim,
                                    "data": "stories260K on tinystories_valid.txt (first paragraphs)",
                                    "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
