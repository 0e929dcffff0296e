"""Precision search on the pretrained stories260K: float32, uniform MX formats and the searched
assignment, each with average bits (weights and linear-input activations, incl. block scales) and
perplexity on held-out TinyStories (the model file's evaluate(); calibration on other text).

    python3 bench/search.py                    # small budget: 20 Optuna trials, max loss 2 %
    python3 bench/search.py --trials 40 --max-loss 2% --by node --out out/bench_search

Prints a table and writes bench/results/search.json. The search's own files (precision.toml,
search.json with every point, nodes.md, pareto.png, search.log) go to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from table import print_table  # noqa: E402

from masec.passes.search.cli import load_search_inputs  # noqa: E402
from masec.passes.search.emulate import Emulator  # noqa: E402
from masec.passes.search.ilp import ilp_min_loss_at_bits  # noqa: E402
from masec.passes.search.runner import run_search  # noqa: E402
from masec.passes.search.space import Candidate, build_space, discover_sites  # noqa: E402

UNIFORM = [("mxint8", 32), ("mxfp8_e4m3", 32), ("mxfp6_e2m3", 32), ("mxint4", 32), ("mxfp4", 32)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-file", default=str(ROOT / "examples" / "stories260k" / "model.py"))
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_search"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--max-loss", default="2%")
    ap.add_argument("--bits-trials", type=int, default=10, help="Optuna trials of the bits-mode search")
    ap.add_argument("--by", default="node", choices=("type", "layer", "node"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "search.json"))
    ap.add_argument("--fresh", action="store_true", help="delete --out first (no resumed study)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
        shutil.rmtree(out.parent / (out.name + "_bits"), ignore_errors=True)
    ins = load_search_inputs(args.model_file)
    model, evaluate = ins["model"], ins["evaluate"]

    # uniform references, measured with the same emulation the search uses
    sites, _, _ = discover_sites(model, ins["example_inputs"])
    space = build_space(sites, "node")
    rows = []
    t = time.time()
    f32 = float(evaluate(model))
    rows.append({"point": "float32", "avg_bits": 32.0, "perplexity": f32, "seconds": round(time.time() - t, 1)})
    with Emulator(model, space) as emu:
        for name, block in UNIFORM:
            c = Candidate.make(name, block)
            t = time.time()
            emu.apply({s.key: c for s in space.sites})
            ppl = float(evaluate(model))
            emu.restore()
            rows.append({"point": f"uniform {c.key}", "avg_bits": c.bits, "perplexity": ppl,
                         "seconds": round(time.time() - t, 1)})

    t0 = time.time()
    res = run_search(model, ins["example_inputs"], evaluate, ins["calibration_data"], out,
                     metric_name=ins["metric_name"] if ins["metric_name"] != "metric" else "perplexity",
                     max_loss=args.max_loss, trials=args.trials, storage=None, device="cpu", by=args.by,
                     seed=args.seed, progress=True, threads=args.threads)
    wall = time.time() - t0
    c = res.chosen
    rows.append({"point": f"searched (by {args.by}, {args.trials} trials, max loss {args.max_loss})",
                 "avg_bits": c["avg_bits"], "perplexity": c["metric"], "seconds": round(wall, 1)})
    # the cheapest point within the budget at or below uniform mxfp4's bits, for the comparison
    fp4 = next(r for r in rows if r["point"].startswith("uniform mxfp4"))
    best_at_fp4 = min((p for p in res.points if p["avg_bits"] <= fp4["avg_bits"] + 1e-9),
                      key=lambda p: p["metric"], default=None)
    if best_at_fp4 is not None:
        rows.append({"point": f"best searched point at <= {fp4['avg_bits']:.3f} bits", "avg_bits": best_at_fp4["avg_bits"],
                     "perplexity": best_at_fp4["metric"], "seconds": None})

    # the dual knapsack at uniform mxfp4's bits: lowest predicted error within 4.25 average bits
    sens = json.loads((out / "sensitivity.json").read_text())["table"]
    with Emulator(model, res.space) as emu:
        for cap in (fp4["avg_bits"], 5.0):
            a = ilp_min_loss_at_bits(res.space, sens, cap)
            if a is None:
                continue
            t = time.time()
            emu.apply(res.space.expand(a))
            ppl = float(evaluate(model))
            emu.restore()
            rows.append({"point": f"ILP, least predicted error at <= {cap:.2f} bits", "avg_bits": res.space.avg_bits(a),
                         "perplexity": ppl, "seconds": round(time.time() - t, 1)})
    # bits mode: the best perplexity within uniform mxfp4's bits (the sensitivity table is reused)
    bits_out = out.parent / (out.name + "_bits")
    bits_out.mkdir(parents=True, exist_ok=True)
    (bits_out / "sensitivity.json").write_text((out / "sensitivity.json").read_text())
    t0 = time.time()
    rb = run_search(model, ins["example_inputs"], evaluate, ins["calibration_data"], bits_out,
                    metric_name="perplexity", max_loss=args.max_loss, trials=args.bits_trials, by=args.by,
                    seed=args.seed, progress=True, threads=args.threads, max_bits=fp4["avg_bits"])
    rows.append({"point": f"searched, bits mode (<= {fp4['avg_bits']:.2f} bits, {args.bits_trials} trials)",
                 "avg_bits": rb.chosen["avg_bits"], "perplexity": rb.chosen["metric"],
                 "seconds": round(time.time() - t0, 1)})
    for r in rows:
        r["vs_float32"] = r["perplexity"] / f32 - 1.0
    print_table(f"stories260K precision search (perplexity on held-out TinyStories, "
                f"MASEC_SEQ_LEN={os.environ.get('MASEC_SEQ_LEN', '32')})",
                ["point", "avg bits", "perplexity", "vs float32", "seconds"],
                [[r["point"], f"{r['avg_bits']:.3f}", f"{r['perplexity']:.4f}", f"{r['vs_float32'] * 100:+.2f}%",
                  "" if r["seconds"] is None else f"{r['seconds']:.1f}"] for r in rows])
    doc = {
        "model": "stories260K (examples/stories260k/model.py)",
        "metric": "perplexity on the evaluation split of TinyStories (model file's evaluate)",
        "quantized": "weights of every nn.Linear/nn.Embedding and the input of every nn.Linear",
        "seq_len": int(os.environ.get("MASEC_SEQ_LEN", "32")),
        "max_loss": args.max_loss, "by": args.by, "trials": args.trials, "bits_trials": args.bits_trials,
        "seed": args.seed,
        "threads": args.threads, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "float32_perplexity": f32,
        "search_wall_s": round(wall, 1),
        "search_points": len(res.points),
        "chosen": {k: c[k] for k in ("avg_bits", "metric", "loss", "source", "within_max_loss")},
        "chosen_precision_toml": res.spec and (out / "precision.toml").read_text(),
        "rows": rows,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.results}; search files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
