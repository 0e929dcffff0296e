"""A whole LLM through masec: compile time, Verilator build time, simulation per generated token,
simulated cycles per token beside the IR's prediction, and tokens per second at the target clock.

    python bench/llm.py [--layers 5] [--tokens 2] [--hf]      # stories260K (and a 2-layer HF Llama)

Prints a table and writes bench/results/llm.json. "cycles per token" is the full-rate cycle count
of one prefill pass of the fixed-length design (the design re-runs the prefill per generated
token); tokens/s = clock / cycles per token.
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


def measure(name: str, model_file: Path, env: dict, tokens: int, prompt: str | None, work: Path) -> dict:
    from masec.backend import compile_model
    from masec.config import CompileConfig
    from masec.sim.runner import build
    from masec.simulate import generate, simulate

    os.environ.update(env)
    out = work / name
    t0 = time.perf_counter()
    res = compile_model(CompileConfig(model_file=str(model_file), out=str(out), force=True))
    compile_s = time.perf_counter() - t0
    b = json.loads((out / "masec_build.json").read_text())
    t0 = time.perf_counter()
    build([out / s for s in b["sources"]], b["top"], (out / "sim_build").resolve())
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim = simulate(out)
    sim_s = time.perf_counter() - t0
    if not sim.result.ok:
        raise SystemExit(f"{name}: simulation failed: {sim.result.message}")
    cycles = sim.result.run("full_rate")["cycles"]
    rep = json.loads((out / "report" / "report.json").read_text())
    row = {"model": name, "instances": len(res.rows), "compile_s": round(compile_s, 1),
           "verilator_build_s": round(build_s, 1), "sim_two_runs_s": round(sim_s, 1),
           "cycles_per_token": cycles, "predicted_cycles": rep["predicted_cycles"],
           "prediction_error": round(rep["predicted_cycles"] / cycles - 1, 4),
           "bottleneck": rep["bottleneck"], "bottleneck_cycles": rep["bottleneck_cycles"],
           "tokens_per_s_at_250MHz": round(250e6 / cycles, 1)}
    if prompt and tokens:
        t0 = time.perf_counter()
        g = generate(out, prompt, tokens)
        row["sim_s_per_generated_token"] = round((time.perf_counter() - t0) / tokens, 1)
        row["rtl_text"] = g.rtl_text
        row["float32_text"] = g.float_text
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=2, help="tokens generated through the RTL (0: none)")
    ap.add_argument("--hf", action="store_true", help="also a 2-layer HF Llama from config (needs transformers)")
    args = ap.parse_args(argv)
    from table import print_table

    work = Path(tempfile.mkdtemp(prefix="masec-llm-"))
    rows = []
    try:
        rows.append(measure(f"stories260k_{args.layers}L_T{args.seq}", ROOT / "examples/stories260k/model.py",
                            {"MASEC_LAYERS": str(args.layers), "MASEC_SEQ_LEN": str(args.seq)}, args.tokens,
                            "Once upon a time", work))
        if args.hf:
            rows.append(measure("hf_llama_2L", ROOT / "tests/compiler/models/hf_llama.py", {}, 0, None, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cols = ["model", "compile_s", "verilator_build_s", "sim_two_runs_s", "cycles_per_token", "predicted_cycles",
            "prediction_error", "bottleneck_cycles", "tokens_per_s_at_250MHz", "sim_s_per_generated_token"]
    heads = ["model", "compile s", "verilator build s", "sim (2 runs) s", "cycles/token", "predicted", "pred. err",
             "bottleneck", "tokens/s @250MHz", "sim s/generated token"]
    print_table("masec: whole LLMs", heads, [[str(r.get(c, "-")) for c in cols] for r in rows], width=170)
    for r in rows:
        if "rtl_text" in r:
            print(f"{r['model']}: RTL {r['rtl_text']!r} | float32 {r['float32_text']!r}")
    out = ROOT / "bench" / "results" / "llm.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update({r["model"]: r for r in rows})
    out.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
