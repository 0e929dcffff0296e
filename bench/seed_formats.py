"""Quantisation error of the seed formats on real pretrained weights (stories260K linear layers).

Usage: python bench/seed_formats.py [--data PATH] [--out bench/results/seed_formats.json]

Every linear weight of stories260K (5 layers x wq, wk, wv, wo, w1, w2, w3; [out, in], blocks along
`in`, the reduction axis) is quantised with each format. Reported per format: bits/element,
NMSE = sum (q - w)^2 / sum w^2 over all weights, SQNR = -10 log10 NMSE, and NMSE per weight kind.
M2XFP (weights: m2xfp4_w) and BitMoD FP4 should beat plain MXFP4 at ~+0.25 / -0.11 bits/element.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from masec.formats import parse_format
from masec.models.llama2c import data_dir, linear_weights, load_checkpoint
from table import print_table as show_table

FORMATS = ("mxfp4_e2m1", "mxint4", "nvfp4", "m2xfp4_w", "m2xfp4_a", "bitmod_fp4", "bitmod_fp3",
           "anda4", "anda5", "mxfp6_e2m3", "mxint8")
KINDS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
DEFAULT_DATA = data_dir() / "stories260k" / "stories260K.bin"


def evaluate(weights: dict[str, torch.Tensor]) -> list[dict]:
    rows = []
    for name in FORMATS:
        fmt = parse_format(name)
        err = {k: 0.0 for k in KINDS}
        ref = {k: 0.0 for k in KINDS}
        for key, w in weights.items():
            kind = key.rsplit(".", 1)[1]
            q = fmt.quantize(w)
            err[kind] += float(((q.double() - w.double()) ** 2).sum())
            ref[kind] += float((w.double() ** 2).sum())
        nmse = sum(err.values()) / sum(ref.values())
        rows.append({"format": fmt.name, "bits_per_element": fmt.bits_per_element, "nmse": nmse,
                     "sqnr_db": -10 * math.log10(nmse), "nmse_by_kind": {k: err[k] / ref[k] for k in KINDS}})
    return rows


def print_table(rows: list[dict], n_weights: int, n_params: int) -> None:
    title = f"Quantisation error on stories260K: {n_weights} linear weights, {n_params} parameters (NMSE x 1e3)"
    cols = ["format", "bits/el", "NMSE", "SQNR dB", "vs mxfp4"] + list(KINDS)
    base = next(r["nmse"] for r in rows if r["format"] == "mxfp4_e2m1")
    body = [[r["format"], f"{r['bits_per_element']:.4g}", f"{r['nmse'] * 1e3:.3f}", f"{r['sqnr_db']:.2f}",
             f"{r['nmse'] / base:.2f}x"] + [f"{r['nmse_by_kind'][k] * 1e3:.2f}" for k in KINDS] for r in rows]
    show_table(title, cols, body, width=160)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "seed_formats.json"))
    args = ap.parse_args()
    weights = linear_weights(load_checkpoint(args.data))
    rows = evaluate(weights)
    n_params = sum(w.numel() for w in weights.values())
    print_table(rows, len(weights), n_params)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": str(args.data), "weights": len(weights), "parameters": n_params,
                               "axis": "in (last)", "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
