"""How far the search's fast float emulation is from the hardware-exact design.

For each point -- a searched precision.toml (``--search DIR``) and uniform mxint8 and mxfp4 at
block 32 -- this runs the model file's ``evaluate`` three ways on the same first N evaluation
tokens:

* ``emulated``: the search's emulation (passes/search/emulate.py, mode ``hardware``): the
  canonical graph with every stream and parameter port fake-quantized in the format
  ``assign_formats`` gives it;
* ``emulated_linear``: the former emulation (weights and nn.Linear inputs only), for comparison;
* ``emulated_exact_kernels``: the emulation with the bit-exact models of the kernels that compute
  internally in fixed point (rms_norm, softmax, RoPE, SiLU/GELU; ``Emulator(exact_ops=...)``)
  instead of their float result rounded once: what is left between ``emulated`` and
  ``hardware_exact`` is those kernels' internal arithmetic exactly when this equals hardware_exact;
* ``hardware_exact``: what ``masec compile --evaluate`` reports (the IR's bit-exact kernel
  models), computed in-process by the same functions (``masec.backend.lower``,
  ``masec.evaluate.evaluate_design``) without writing the design.

    python3 bench/search_gap.py --search out/s260_b32 --eval-tokens 512
    python3 bench/search_gap.py --search out/s260_b32 --hardware-from bench/results/search_gap.json  # reuse hw
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from table import print_table  # noqa: E402

from masec.passes.search.cli import load_search_inputs  # noqa: E402
from masec.passes.search.emulate import EXACT_OPS, Emulator, spec_from_assignment  # noqa: E402
from masec.passes.search.precision_file import dump_precision  # noqa: E402
from masec.passes.search.space import Candidate, build_space, discover_sites  # noqa: E402


def hardware_exact(model_file: str, n: int, precision: str | None, fmt: str | None) -> tuple[dict, float]:
    """``masec compile --evaluate --eval-tokens n`` without writing the design: lower the model
    (every pass up to the IR and its bit-exact reference) and run evaluate on the IR's models."""
    from masec.backend import lower
    from masec.config import CompileConfig
    from masec.evaluate import evaluate_design
    from masec.frontend import load_model_namespace

    t = time.time()
    cfg = CompileConfig(model_file=model_file, out="unused", precision_file=precision or "",
                        **({} if precision else {"format": fmt, "block_size": 32})).validated()
    gm, ir, _values, _inputs = lower(cfg)
    module = load_model_namespace(model_file)[2]
    ev = evaluate_design(module, gm, ir, n)
    return ev, time.time() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-file", default=str(ROOT / "examples" / "stories260k" / "model.py"))
    ap.add_argument("--search", action="append", required=True,
                    help="a masec search output folder (search.json, precision.toml); may be repeated")
    ap.add_argument("--eval-tokens", type=int, default=512)
    ap.add_argument("--uniform", default="mxint8,mxfp4", help="uniform formats (block 32) also compared")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "search_gap.json"))
    ap.add_argument("--hardware-from", action="append", default=[],
                    help="take hardware_exact from this earlier results file (same point: same precision.toml or "
                         "uniform format; same --eval-tokens) instead of computing it again; may be repeated")
    ap.add_argument("--no-exact-kernels", action="store_true", help="skip the exact-kernel emulation (slow)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ins = load_search_inputs(args.model_file)
    model, evaluate, x = ins["model"], ins["evaluate"], ins["example_inputs"]
    sites, _, _ = discover_sites(model, x)
    space = build_space(sites, "node")
    n = args.eval_tokens
    f32 = float(evaluate(model, n_tokens=n))
    points = []
    for d in args.search:
        doc = json.loads((Path(d) / "search.json").read_text())
        points.append((f"searched ({d}, {doc['chosen']['avg_bits']:.3f} bits)",
                       {k: Candidate.parse(v) for k, v in doc["chosen"]["sites"].items()},
                       str(Path(d) / "precision.toml"), None))
    tmp = tempfile.TemporaryDirectory()
    for f in [f for f in args.uniform.split(",") if f]:
        # the precision file the search writes for this assignment (what the emulation runs): every
        # searched tensor in f, the rest (norm gains; for an untraceable model not [default] act) at
        # the default mxint8 -- not `--format f`, which would also put the norm gains in f
        assign = {s.key: Candidate.make(f, 32) for s in space.sites}
        prec = Path(tmp.name) / f"{f}.toml"
        prec.write_text(dump_precision(spec_from_assignment(space, assign)))
        points.append((f"uniform {f}", assign, str(prec), None))
    res = {"model_file": str(Path(args.model_file).resolve().relative_to(ROOT))
           if Path(args.model_file).resolve().is_relative_to(ROOT) else args.model_file,
           "search": args.search, "eval_tokens": n, "float32": f32, "points": []}
    earlier = []
    for f in args.hardware_from:
        prev = json.loads(Path(f).read_text())
        if prev.get("eval_tokens") != n:
            raise SystemExit(f"--hardware-from {f}: measured on {prev.get('eval_tokens')} tokens, not {n}")
        earlier += [dict(p, _file=f) for p in prev.get("points", [])]
    rows = []
    for label, assign, precision, fmt in points:
        row = {"point": label, "avg_bits": sum(s.numel * assign[s.key].bits for s in space.sites) / space.total_numel}
        runs = [("emulated", "hardware", ()), ("emulated_linear", "linear", ())]
        if not args.no_exact_kernels:
            runs.append(("emulated_exact_kernels", "hardware", EXACT_OPS))
        for key, mode, exact in runs:
            t = time.time()
            with Emulator(model, space, example_inputs=x, mode=mode, exact_ops=exact) as emu:
                emu.apply(assign)
                row[key] = float(evaluate(model, n_tokens=n))
            row[f"{key}_s"] = round(time.time() - t, 1)
        toml = Path(precision).read_text() if precision else ""
        old = next((p for p in earlier if p.get("precision_toml", "") == toml and p["point"] == label
                    or p.get("precision_toml") and p["precision_toml"] == toml), None)
        if old is not None:
            ev = {"hardware_exact": old["hardware_exact"], "float32": old["hardware_float32"],
                  "top1_agreement": old.get("top1_agreement")}
            hw_s = old.get("hardware_exact_s", old.get("compile_and_evaluate_s"))
            row["hardware_exact_from"] = old["_file"]
        else:
            ev, hw_s = hardware_exact(args.model_file, n, precision, fmt)
        row.update(hardware_exact=ev["hardware_exact"], hardware_float32=ev["float32"],
                   top1_agreement=ev.get("top1_agreement"), hardware_exact_s=round(hw_s, 1),
                   emulated_vs_hardware=row["emulated"] / ev["hardware_exact"] - 1.0,
                   emulated_linear_vs_hardware=row["emulated_linear"] / ev["hardware_exact"] - 1.0)
        row["precision_toml"] = toml
        if "emulated_exact_kernels" in row:
            row["emulated_exact_kernels_vs_hardware"] = row["emulated_exact_kernels"] / ev["hardware_exact"] - 1.0
        res["points"].append(row)
        print(f"  {label}: emulated {row['emulated']:.4f}, linear-only {row['emulated_linear']:.4f}, "
              f"hardware-exact {ev['hardware_exact']:.4f}", flush=True)
        exact = row.get("emulated_exact_kernels")
        rows.append([label, f"{row['emulated']:.4f} ({100 * (row['emulated'] / f32 - 1):+.2f}%)",
                     "" if exact is None else f"{exact:.4f} ({100 * (exact / f32 - 1):+.2f}%)",
                     f"{row['emulated_linear']:.4f} ({100 * (row['emulated_linear'] / f32 - 1):+.2f}%)",
                     f"{ev['hardware_exact']:.4f} ({100 * (ev['hardware_exact'] / f32 - 1):+.2f}%)",
                     f"{100 * row['emulated_vs_hardware']:+.2f}%"])
        Path(args.results).write_text(json.dumps(res, indent=1) + "\n")
    print_table(f"emulation vs hardware-exact perplexity, first {n} evaluation tokens (float32 {f32:.4f})",
                ["point", "emulated (all streams)", "with exact kernel models", "emulated (linear only)",
                 "hardware-exact", "emulated vs hw"],
                rows)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
