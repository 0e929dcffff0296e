"""How far the search's fast float emulation is from the hardware-exact design at a searched point.

The search quantizes weights and the inputs of nn.Linear only (emulate.py); the compiled design
quantizes every stream (matmul operands, softmax, residual adds, norms, RoPE, SiLU, ...) with the
precision file's formats and computes with the kernels' bit-exact arithmetic. This compiles the
search's precision.toml, runs the model file's evaluate() on the IR's bit-exact reference
(``masec compile --evaluate``), and compares it with evaluate() on the emulated model, both on
the same first N evaluation tokens.

    python3 bench/search_gap.py --search out/s260_b32 --eval-tokens 512
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from table import print_table  # noqa: E402

from masec.passes.search.cli import load_search_inputs  # noqa: E402
from masec.passes.search.emulate import Emulator  # noqa: E402
from masec.passes.search.space import Candidate, build_space, discover_sites  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-file", default=str(ROOT / "examples" / "stories260k" / "model.py"))
    ap.add_argument("--search", required=True, help="a masec search output folder (search.json, precision.toml)")
    ap.add_argument("--eval-tokens", type=int, default=512)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "search_gap.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    search = Path(args.search)
    doc = json.loads((search / "search.json").read_text())
    ins = load_search_inputs(args.model_file)
    model, evaluate = ins["model"], ins["evaluate"]
    sites, _, _ = discover_sites(model, ins["example_inputs"])
    space = build_space(sites, "node")
    assign = {k: Candidate.parse(v) for k, v in doc["chosen"]["sites"].items()}
    n = args.eval_tokens
    f32 = float(evaluate(model, n_tokens=n))
    with Emulator(model, space) as emu:
        emu.apply(assign)
        emulated = float(evaluate(model, n_tokens=n))
    t = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "design"
        cmd = ["masec", "compile", args.model_file, "--precision", str(search / "precision.toml"), "--evaluate",
               "--eval-tokens", str(n), "--out", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            return r.returncode
        ev = json.loads((out / "report" / "report.json").read_text())["evaluation"]
    hw_s = time.time() - t
    rows = [["float32", f"{f32:.4f}", ""],
            ["emulated (search)", f"{emulated:.4f}", f"{100 * (emulated / f32 - 1):+.2f}%"],
            ["hardware-exact (compiled)", f"{ev['hardware_exact']:.4f}", f"{100 * (ev['hardware_exact'] / f32 - 1):+.2f}%"]]
    print_table(f"emulation vs hardware-exact at {search}/precision.toml ({doc['chosen']['avg_bits']:.3f} bits), "
                f"first {n} evaluation tokens", ["model", "perplexity", "vs float32"], rows)
    res = {"model_file": str(Path(args.model_file).resolve().relative_to(ROOT)) if Path(args.model_file).resolve().is_relative_to(ROOT) else args.model_file, "search": str(search), "eval_tokens": n,
           "avg_bits": doc["chosen"]["avg_bits"], "float32": f32, "emulated": emulated,
           "hardware_exact": ev["hardware_exact"], "hardware_float32": ev["float32"],
           "top1_agreement": ev.get("top1_agreement"), "compile_and_evaluate_s": round(hw_s, 1),
           "emulated_vs_hardware": ev["hardware_exact"] / emulated - 1.0,
           "precision_toml": (search / "precision.toml").read_text()}
    Path(args.results).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
