"""Transformer blocks through masec: compile time, predicted vs simulated cycles, pipeline balance.

For each block: ``masec compile`` wall time; the IR's predicted cycles for one set of inputs beside
the Verilator-measured cycles (full rate, first input beat to last output beat); the bottleneck
kernel's ideal cycles; latency ratio = bottleneck ideal / measured cycles for one inference, and
throughput ratio = bottleneck ideal / measured cycles per inference when several inferences stream
back to back (the steady state of a dataflow design; corner turns and FIFOs are double-buffered
or whole-tensor, so inferences overlap). Prints a table and writes bench/results/blocks.json.

    python bench/blocks.py [--only NAME] [--format mxint8] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

BLOCKS = {
    "mlp": ("examples/mlp/model.py", {}),
    "stories260k_ffn": ("examples/stories260k_ffn/model.py", {}),
    "llama_block_sdpa": ("tests/compiler/models/llama_block.py", {"MASEC_ATTN": "sdpa"}),
    "llama_block_explicit": ("tests/compiler/models/llama_block.py", {"MASEC_ATTN": "explicit"}),
    "nanogpt_block": ("tests/compiler/models/nanogpt_block.py", {}),
    "bert_2_layers": ("tests/compiler/models/bert_encoder.py", {}),
    "stories260k_1layer": ("examples/stories260k/model.py", {"MASEC_LAYERS": "1"}),
}


def run_block(name: str, fmt: str, repeat: int, work: Path) -> dict:
    from masec.backend import compile_model
    from masec.config import CompileConfig
    from masec.sim.runner import run_stream_test
    from masec.sim.vectors import VectorFile
    from masec.simulate import simulate

    path, env = BLOCKS[name]
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        out = work / name
        t0 = time.perf_counter()
        res = compile_model(CompileConfig(model_file=str(ROOT / path), out=str(out), format=fmt, force=True))
        compile_s = time.perf_counter() - t0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rep = json.loads((out / "report" / "report.json").read_text())
    t0 = time.perf_counter()
    sim = simulate(out)
    sim_s = time.perf_counter() - t0
    if not sim.result.ok:
        raise SystemExit(f"{name}: simulation failed: {sim.result.message}")
    measured = sim.result.run("full_rate")["cycles"]
    # back to back: the same inputs `repeat` times
    vec = VectorFile.read(out / "tb" / "vectors.json")
    for sv in (*vec.inputs.values(), *vec.outputs.values()):
        sv.beats = sv.beats * repeat
        if sv.notes:
            sv.notes = sv.notes * repeat
    vec.ideal_cycles *= repeat
    build = json.loads((out / "masec_build.json").read_text())
    rr = run_stream_test([out / s for s in build["sources"]], build["top"], vec, out / "sim_build",
                         testcase=["full_rate"])
    if not rr.ok:
        raise SystemExit(f"{name}: back-to-back simulation failed: {rr.message}")
    per_inference = (rr.run("full_rate")["cycles"] - measured) / (repeat - 1)
    bott = rep["bottleneck_cycles"]
    return {"block": name, "format": fmt, "compile_s": round(compile_s, 2), "sim_s": round(sim_s, 1),
            "instances": len(res.rows), "predicted_cycles": rep["predicted_cycles"], "measured_cycles": measured,
            "prediction_error": round(rep["predicted_cycles"] / measured - 1, 4),
            "bottleneck": rep["bottleneck"], "bottleneck_cycles": bott,
            "latency_ratio": round(bott / measured, 3),
            "cycles_per_inference_back_to_back": round(per_inference, 1),
            "throughput_ratio": round(bott / per_inference, 3),
            "rel_rms_vs_float": round(rep["accuracy"][0]["rel_rms"], 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="block names (default: all)")
    ap.add_argument("--format", default="mxint8")
    ap.add_argument("--repeat", type=int, default=3, help="inferences back to back for the throughput run")
    args = ap.parse_args(argv)
    from table import print_table

    names = args.only or [n for n, (p, _) in BLOCKS.items() if (ROOT / p).exists()]
    work = Path(tempfile.mkdtemp(prefix="masec-blocks-"))
    rows = []
    try:
        for n in names:
            print(f"[{n}] compiling and simulating ...", flush=True)
            rows.append(run_block(n, args.format, args.repeat, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cols = ["block", "compile_s", "predicted_cycles", "measured_cycles", "prediction_error", "bottleneck_cycles",
            "latency_ratio", "cycles_per_inference_back_to_back", "throughput_ratio", "rel_rms_vs_float"]
    heads = ["block", "compile s", "predicted", "measured", "pred. err", "bottleneck", "latency ratio",
             "cycles/inf. b2b", "throughput ratio", "rel RMS"]
    print_table(f"masec blocks ({args.format})", heads, [[str(r[c]) for c in cols] for r in rows], width=160)
    out = ROOT / "bench" / "results" / "blocks.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update({f"{r['block']}/{r['format']}": r for r in rows})
    out.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
