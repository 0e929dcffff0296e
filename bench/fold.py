"""Folding stories260K onto every part of the parts table: lanes per node under a resource budget.

    python bench/fold.py [--budget 0.5] [--parts xc7z020,xcu250] [--layers N]

For each Xilinx part of ``masec.parts`` the whole stories260K (examples/stories260k/model.py,
mxint8, block 32) is lowered with ``--part P --budget F`` (``passes/hw/fold.py``: HiGHS picks
every node's lanes for the smallest bottleneck within F x the part's LUT/FF/DSP/BRAM, as the cost
model estimates them). Where F does not fit, the next larger budget of (0.75, 1.0) is tried; a part
where even 1.0 does not fit is reported as not fitting, with the fold pass's reason. Also the
unfolded design (every node at --parallelism 4) for comparison.

Per part: the budget used, the lanes chosen (how many nodes at each lane count), the bottleneck
node and its ideal cycles (the interval between passes when passes stream back to back), the
IR cycle model's predicted cycles of one pass (= cycles per generated token of the fixed-length
prefill design, as bench/llm.py measures them), the estimated LUT/FF/DSP/BRAM and utilization,
and whether the design fits the part. Prints a table and writes bench/results/fold.json.
ECP5 parts are listed as not estimated: the cost model is fitted to Yosys synth_xilinx.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "stories260k" / "model.py"
RESULTS = ROOT / "bench" / "results" / "fold.json"
FALLBACK = (0.75, 1.0)


def fold_one(part: str, budget: float | None) -> dict:
    from masec.backend import lower
    from masec.config import CompileConfig
    from masec.passes.hw.fold import fold_summary

    cfg = CompileConfig(model_file=str(MODEL), out="unused", part=part, budget=budget).validated()
    t0 = time.perf_counter()
    gm, ir, _values, _inputs = lower(cfg)
    s = fold_summary(ir, cfg)
    lanes = Counter(r["lanes"] for r in s["nodes"] if r["kernel"] not in ("stream_fork", "mx_retile"))
    return {"part": part, "budget": budget, "lanes_histogram": {str(k): v for k, v in sorted(lanes.items())},
            "retiles": sum(1 for r in s["nodes"] if r["kernel"] == "mx_retile"),
            "bottleneck": s["bottleneck"], "bottleneck_cycles": s["bottleneck_cycles"],
            "predicted_cycles_per_pass": s["predicted_cycles"], "estimated": s["total"],
            "utilization": s["utilization"], "fits": all(s["fits_part"].values()),
            "within_budget": all(s["within_budget"].values()), "seconds": round(time.perf_counter() - t0, 1),
            "lanes": {r["node"]: r["lanes"] for r in s["nodes"] if r["kernel"] not in ("stream_fork", "mx_retile")}}


def run(parts: list[str], budget: float) -> list[dict]:
    from masec.errors import MasecError
    from masec.parts import lookup_part

    rows = []
    for name in parts:
        part = lookup_part(name)
        if getattr(part, "vendor", "xilinx") != "xilinx":
            rows.append({"part": name, "budget": None, "fits": None,
                         "note": "not estimated: the cost model is fitted to Yosys synth_xilinx"})
            print(_line(rows[-1]), flush=True)
            continue
        row, why = None, ""
        for b in (budget, *[f for f in FALLBACK if f > budget]):
            try:
                row = fold_one(name, b)
                break
            except MasecError as exc:
                why = str(exc)
                print(f"{name} at --budget {b}: {why}", file=sys.stderr)
        if row is None:
            row = {"part": name, "budget": 1.0, "fits": False, "note": why}
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(r: dict) -> str:
    if r.get("fits") is None or "estimated" not in r:
        fits = "no" if r.get("fits") is False else "-"
        return f"| {r['part']} | {r.get('budget') or '-'} | - | - | - | - | - | {fits}: {r.get('note', '')} |"
    e, u = r["estimated"], r["utilization"]
    hist = ", ".join(f"{n}x{k}" for k, n in r["lanes_histogram"].items())
    return (f"| {r['part']} | {r['budget'] if r['budget'] is not None else 'none (4 lanes)'} | {hist} | "
            f"`{r['bottleneck']}` {r['bottleneck_cycles']:,} | {r['predicted_cycles_per_pass']:,} | "
            f"{e['LUT']:,} / {e['FF']:,} / {e['DSP']:,} / {e['BRAM']:,} | "
            f"{100 * u['LUT']:.1f}% / {100 * u['FF']:.1f}% / {100 * u['DSP']:.1f}% / {100 * u['BRAM']:.1f}% | "
            f"{'yes' if r['fits'] else 'no'} |")


HEADER = ("| part | budget | lanes (nodes x lanes) | bottleneck (cycles) | predicted cycles per pass "
          "(= per token) | estimated LUT / FF / DSP / BRAM | utilization | fits |\n"
          "|---|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
    from masec.parts import known_parts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--parts", default="", help="comma-separated short part names (default: the whole table)")
    ap.add_argument("--layers", type=int, default=0, help="MASEC_LAYERS for a quick run (default: all 5)")
    args = ap.parse_args(argv)
    if args.layers:
        os.environ["MASEC_LAYERS"] = str(args.layers)
    parts = [p for p in args.parts.split(",") if p] or known_parts()
    print(HEADER)
    base = fold_one("xcu250", None)
    print(_line(base), flush=True)
    rows = run(parts, args.budget)
    import hashlib

    from masec.cost_model import FIT_FILE

    fit = hashlib.sha256(FIT_FILE.read_bytes()).hexdigest()[:16] if FIT_FILE.exists() else None
    doc = {"model": "examples/stories260k/model.py", "format": "mxint8/B32", "layers": args.layers or 5,
           "cost_model_fit_sha256_16": fit,
           "requested_budget": args.budget, "unfolded_xcu250": base, "parts": rows}
    if not args.layers and not args.parts:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
