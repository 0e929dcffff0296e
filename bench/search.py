"""Precision search results table: float32, per-tensor int8, uniform MX formats, the seed formats
(NVFP4, M2XFP, BitMoD, Anda) and the searched assignments, each with average bits (weights of every
nn.Linear/nn.Embedding and the input of every nn.Linear, block scales and metadata included) and
perplexity on held-out text (the model file's evaluate(); calibration on other text), evaluated
with the hardware emulation (every stream as compiled); rows the compiler cannot build (formats
without kernels on activations) with the linear-only emulation, and marked so.

    python3 bench/search.py                                    # stories260K, CPU
    python3 bench/search.py --model-file examples/smollm2/model.py --device cuda --by layer \\
        --max-loss 3% --results bench/results/search_smollm2.json --out out/bench_search_smollm2
    python3 bench/search.py --references-only --results bench/results/search_references.json   # fixed rows only

Prints a table and writes --results (JSON). The search's own files (precision.toml, search.json
with every point, nodes.md, pareto.png, search.log) go to --out.
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
from masec.passes.search.runner import run_search  # noqa: E402
from masec.passes.search.space import (BLOCK_SIZES, Candidate, build_space, default_types,  # noqa: E402
                                       discover_sites)

#: (row name, weight format, activation format, block) -- block None: the format's own grouping
REFERENCES = [
    ("int8 per tensor", "int8", "int8", None),
    ("uniform mxint8", "mxint8", "mxint8", 32),
    ("uniform mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3", 32),
    ("uniform mxfp6_e2m3", "mxfp6_e2m3", "mxfp6_e2m3", 32),
    ("uniform mxint4", "mxint4", "mxint4", 32),
    ("uniform mxfp4", "mxfp4", "mxfp4", 32),
    ("uniform mxfp4 @16", "mxfp4", "mxfp4", 16),
    ("NVFP4", "nvfp4", "nvfp4", 16),
    ("M2XFP (m2xfp4_w / m2xfp4_a)", "m2xfp4_w", "m2xfp4_a", 32),
    ("BitMoD fp4", "bitmod_fp4", "bitmod_fp4", None),
    ("Anda4", "anda4", "anda4", None),
]
#: rows with the activation format only where masec builds it on a LLaMA model: the RMSNorm outputs
#: (mx_rmsnorm's Y_QFMT); the weight format on the linears only (a seed weight format has no embedding
#: form; Anda none at all), every other weight and activation at mxint8/32
NORM_REFERENCES = [
    ("NVFP4 (W and RMSNorm outputs)", "nvfp4", "nvfp4", 16),
    ("M2XFP (m2xfp4_w, m2xfp4_a RMSNorm outputs)", "m2xfp4_w", "m2xfp4_a", 32),
    ("Anda4 (RMSNorm outputs, W mxint8)", "mxint8", "anda4", 64),
]


QUANTIZED = ("hardware emulation (passes/search/emulate.py): every stream and parameter port of the compiled "
             "design in its format (the searched tensors as chosen, the rest at the precision file's default "
             "mxint8/32; rows '(... RMSNorm outputs)': the act format on the RMSNorm outputs only, the weight "
             "format on linear weights only, compiler-checked at 8 lanes); rows marked 'linear' (formats without "
             "hardware kernels): weights of every "
             "nn.Linear/nn.Embedding and the input of every nn.Linear only; avg_bits over the searched tensors "
             "(linear/embedding weights and linear inputs), weighted by size, incl. block scales/metadata")


def _cand(name: str, block: int | None) -> Candidate:
    from masec.formats import parse_format

    f = parse_format(name) if block is None else parse_format(name, block_size=block)
    b = block if block is not None else int(getattr(f, "block_size", None) or getattr(f, "group_size", None) or 0)
    return Candidate(f.name, b)


def reference_rows(model, space, evaluate, device: str, f32: float, example_inputs, graph_cache=None) -> list[dict]:
    """The fixed-format rows. A row the compiler can build (MX formats; seed formats as linear
    weights) is evaluated with the hardware emulation (every stream quantized as compiled, the
    rest of the design at the precision file's default mxint8); a row it refuses (int8 per tensor,
    seed formats on activations) with the linear-only emulation, and says so."""
    rows = []
    emus = {"hardware": Emulator(model, space, device=device, example_inputs=example_inputs, graph_cache=graph_cache)}
    try:
        base = _cand("mxint8", 32)
        norm = [(label, w, a, b, True) for label, w, a, b in NORM_REFERENCES]
        for label, wname, aname, block, *only_norms in [(*r, False) for r in REFERENCES] + norm:
            wc, ac = _cand(wname, block), _cand(aname, block)
            if only_norms[0]:     # the act format on the RMSNorm outputs, the weight format on linears
                assign = {s.key: ((wc if s.op == "linear" else base) if s.kind == "weight"
                                  else (ac if s.op == "rms_norm" else base)) for s in space.sites}
            else:
                assign = {s.key: (wc if s.kind == "weight" else ac) for s in space.sites}
            bits = sum(s.numel * assign[s.key].bits for s in space.sites) / space.total_numel
            why = emus["hardware"].refusal(assign, parallelism=8 if only_norms[0] else None)
            mode = "hardware" if why is None else "linear"
            if mode not in emus:     # both stay installed; only one is applied at a time
                emus[mode] = Emulator(model, space, device=device, mode=mode)
            emu = emus[mode]
            t = time.time()
            emu.apply(assign)
            ppl = float(evaluate(model))
            emu.restore()
            rows.append({"point": label if mode == "hardware" else f"{label} (no hardware: weights and linear inputs only)",
                         "weight": wc.fmt, "act": ac.fmt, "avg_bits": bits, "perplexity": ppl, "emulation": mode,
                         "refused_by_compiler": why, "seconds": round(time.time() - t, 1)})
            print(f"  {label}: {bits:.3f} bits, perplexity {ppl:.4f} ({mode} emulation)", flush=True)
    finally:
        for e in emus.values():
            e.close()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-file", default=str(ROOT / "examples" / "stories260k" / "model.py"))
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_search"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--max-loss", default="2%")
    ap.add_argument("--max-bits", type=float, default=4.5, help="the bits-mode search's budget (0: skip it)")
    ap.add_argument("--bits-trials", type=int, default=10, help="Optuna trials of the bits-mode search")
    ap.add_argument("--by", default="node", choices=("type", "layer", "node"))
    ap.add_argument("--types", default=",".join(default_types()),
                    help="element types (default: the MX types and the seed formats with hardware kernels)")
    ap.add_argument("--block-sizes", default=",".join(str(b) for b in BLOCK_SIZES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-references", action="store_true", help="skip the uniform/seed-format rows")
    ap.add_argument("--references-only", action="store_true",
                    help="only float32 and the fixed-format rows (no searches); --results gets just those")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "search.json"))
    ap.add_argument("--fresh", action="store_true", help="delete --out first (no resumed study)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    types = [t for t in args.types.split(",") if t]
    blocks = [int(b) for b in args.block_sizes.split(",") if b]
    out = Path(args.out)
    bits_out = out.parent / (out.name + "_bits")
    if args.fresh:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(bits_out, ignore_errors=True)
    t_load = time.time()
    ins = load_search_inputs(args.model_file)
    model, evaluate = ins["model"], ins["evaluate"]
    load_s = time.time() - t_load
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else \
        f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} thread(s)"
    print(f"loaded {args.model_file} in {load_s:.1f} s; device: {device_name}", flush=True)

    sites, _, _ = discover_sites(model, ins["example_inputs"])
    space = build_space(sites, "node")
    graphs: dict = {}     # the canonical graphs, exported once for all searches and rows
    rows = []
    t = time.time()
    with Emulator(model, space, device=args.device) as emu:
        emu.restore()
        f32 = float(evaluate(model))
    rows.append({"point": "float32", "avg_bits": 32.0, "perplexity": f32, "seconds": round(time.time() - t, 1)})
    print(f"  float32: perplexity {f32:.4f} ({time.time() - t:.1f} s)", flush=True)
    if args.references_only:
        rows += reference_rows(model, space, evaluate, args.device, f32, ins["example_inputs"], graphs)
        for r in rows:
            r["vs_float32"] = r["perplexity"] / f32 - 1.0
        print_table(f"{Path(args.model_file).parent.name}: fixed-format rows ({device_name})",
                    ["point", "avg bits", "perplexity", "vs float32", "emulation"],
                    [[r["point"], f"{r['avg_bits']:.3f}", f"{r['perplexity']:.4f}", f"{r['vs_float32'] * 100:+.2f}%",
                      r.get("emulation", "")] for r in rows])
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(
            {"model_file": args.model_file, "quantized": QUANTIZED, "device": device_name, "threads": args.threads,
             "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MASEC_")},
             "float32_perplexity": f32, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.results}")
        return 0

    t0 = time.time()
    res = run_search(model, ins["example_inputs"], evaluate, ins["calibration_data"], out,
                     metric_name="perplexity", max_loss=args.max_loss, trials=args.trials, storage=None,
                     device=args.device, by=args.by, seed=args.seed, progress=True, threads=args.threads,
                     types=types, blocks=blocks, proxy=ins["search_proxy"], graph_cache=graphs)
    wall = time.time() - t0
    c = res.chosen
    rows.append({"point": f"searched (by {args.by}, {args.trials} trials, max loss {args.max_loss})",
                 "avg_bits": c["avg_bits"], "perplexity": c["metric"], "seconds": round(wall, 1)})
    rb = None
    if args.max_bits:
        # bits mode: the best perplexity within --max-bits (the sensitivity table is reused)
        bits_out.mkdir(parents=True, exist_ok=True)
        (bits_out / "sensitivity.json").write_text((out / "sensitivity.json").read_text())
        t0 = time.time()
        rb = run_search(model, ins["example_inputs"], evaluate, ins["calibration_data"], bits_out,
                        metric_name="perplexity", max_loss=args.max_loss, trials=args.bits_trials, by=args.by,
                        device=args.device, seed=args.seed, progress=True, threads=args.threads,
                        max_bits=args.max_bits, types=types, blocks=blocks, proxy=ins["search_proxy"],
                        graph_cache=graphs)
        rows.append({"point": f"searched, bits mode (<= {args.max_bits:g} bits, {args.bits_trials} trials)",
                     "avg_bits": rb.chosen["avg_bits"], "perplexity": rb.chosen["metric"],
                     "seconds": round(time.time() - t0, 1)})
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).with_suffix(".partial.json").write_text(json.dumps(
        {"device": device_name, "load_s": round(load_s, 1), "rows": rows}, indent=1) + "\n")
    if not args.no_references:   # after the searches: the rows of fixed formats
        rows[1:1] = reference_rows(model, space, evaluate, args.device, f32, ins["example_inputs"], graphs)
    for r in rows:
        r["vs_float32"] = r["perplexity"] / f32 - 1.0
    title = (f"{Path(args.model_file).parent.name}: precision search, perplexity on held-out text "
             f"({device_name})")
    print_table(title, ["point", "avg bits", "perplexity", "vs float32", "seconds"],
                [[r["point"], f"{r['avg_bits']:.3f}", f"{r['perplexity']:.4f}", f"{r['vs_float32'] * 100:+.2f}%",
                  "" if r["seconds"] is None else f"{r['seconds']:.1f}"] for r in rows])
    doc = {
        "model_file": str(Path(args.model_file).resolve().relative_to(ROOT)) if Path(args.model_file).resolve().is_relative_to(ROOT) else args.model_file,
        "metric": "perplexity (the model file's evaluate, on text never used for calibration)",
        "quantized": QUANTIZED,
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MASEC_")},
        "max_loss": args.max_loss, "max_bits": args.max_bits, "by": args.by, "trials": args.trials,
        "bits_trials": args.bits_trials, "types": types, "blocks": blocks, "seed": args.seed,
        "threads": args.threads, "device": device_name, "load_s": round(load_s, 1),
        "float32_perplexity": f32,
        "search_wall_s": round(wall, 1),
        "search_points": len(res.points),
        "chosen": {k: c[k] for k in ("avg_bits", "metric", "loss", "source", "within_max_loss")},
        "chosen_precision_toml": (out / "precision.toml").read_text(),
        "bits_mode_chosen": rb and {k: rb.chosen[k] for k in ("avg_bits", "metric", "loss", "source")},
        "bits_mode_precision_toml": rb and (bits_out / "precision.toml").read_text(),
        "pareto": [{k: p[k] for k in ("avg_bits", "metric", "loss", "source")} for p in res.pareto],
        "rows": rows,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(doc, indent=1) + "\n")
    Path(args.results).with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"wrote {args.results}; search files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
