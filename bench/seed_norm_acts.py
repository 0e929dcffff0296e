"""stories260K with seed activation formats where masec now builds them: on the RMSNorm outputs.

Usage: python3 bench/seed_norm_acts.py [--threads N]

README's search table puts NVFP4 / M2XFP / Anda on every linear input; those rows are "no hardware"
(weights and linear inputs only, the linear-only emulation) because the inputs of wo (attention
output, a matmul) and w2 (the SwiGLU mul) have no seed-format producer. Since mx_rmsnorm emits seed
activation formats (Y_QFMT), the inputs of wq/wk/wv, w1/w3 and the classifier (the 11 RMSNorm outputs)
can carry them. Each row here: the seed format on those 11 norm outputs, the row's weight format on
every block linear's weight (wq wk wv wo w1 w2 w3; NVFP4 / M2XFP rows) or MXINT8, and everything else
(embedding/classifier weight, wo/w2 inputs, every other stream) at the precision file's default
mxint8/32 -- evaluated with the search's hardware emulation (``Emulator`` mode "hardware", every
stream and parameter port of the compiled design in its format, NVFP4's tensor scale calibrated on
the example inputs as ``masec compile`` does) on the model file's ``evaluate`` (4,096 held-out
tokens in windows of ``MASEC_SEQ_LEN``, default 32), the same as README's hardware rows. Each row's
precision file is checked by the compiler first (``Emulator.refusal`` at 8 lanes: assign_formats,
calibrate, fold, select_kernels); a refused row is reported, not evaluated.

Rows "+ gate mul": the format also on the SwiGLU gate products (mx_mul's OUT_QFMT, w2's input). The
search cannot assign those (stories260K is not traceable by torch.fx, so the inputs of wo and w2 share
``[default] act``), so these rows write the precision file directly (``[op.rms_norm]`` / ``[op.mul]``
act, ``[node."layers.N...."]`` weight) and run the same emulation graph (``CanonicalGraph``: formats
from assign_formats + calibrate_tensor_scales, checked by fold/select_kernels at 8 lanes); check: this
path gives the Emulator's perplexity for the norm-only NVFP4 row (recorded as ``spec_path_check``).

Average bits as bench/search.py: over the searched tensors (linear/embedding weights and linear
inputs), weighted by size, incl. block scales and metadata. Writes bench/results/seed_norm_acts.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from table import print_table  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "seed_norm_acts.json"
LINEARS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
#: (row, block-linear weight format and block, norm-output activation format and block)
ROWS = (
    ("uniform mxint8 (reference)", ("mxint8", 32), ("mxint8", 32)),
    ("NVFP4 W, NVFP4 norm outputs", ("nvfp4", 16), ("nvfp4", 16)),
    ("MXINT8 W, NVFP4 norm outputs", ("mxint8", 32), ("nvfp4", 16)),
    ("M2XFP W (m2xfp4_w), m2xfp4_a norm outputs", ("m2xfp4_w", 32), ("m2xfp4_a", 32)),
    ("MXINT8 W, m2xfp4_a norm outputs", ("mxint8", 32), ("m2xfp4_a", 32)),
    ("MXINT8 W, anda4 norm outputs", ("mxint8", 32), ("anda4", 64)),
)
#: (row, weight, act, whether the gate muls also carry the act format): the precision-file rows
SPEC_ROWS = (
    ("NVFP4 W, NVFP4 norm outputs (spec path check)", ("nvfp4", 16), ("nvfp4", 16), False),
    ("NVFP4 W, NVFP4 norm + gate mul outputs", ("nvfp4", 16), ("nvfp4", 16), True),
    ("MXINT8 W, NVFP4 norm + gate mul outputs", ("mxint8", 32), ("nvfp4", 16), True),
    ("M2XFP W (m2xfp4_w), m2xfp4_a norm + gate mul outputs", ("m2xfp4_w", 32), ("m2xfp4_a", 32), True),
    ("MXINT8 W, m2xfp4_a norm + gate mul outputs", ("mxint8", 32), ("m2xfp4_a", 32), True),
    ("MXINT8 W, anda4 norm + gate mul outputs", ("mxint8", 32), ("anda4", 64), True),
)


def spec_rows(model, evaluate, space, example_inputs, lanes: int, linear_paths) -> list[dict]:
    """SPEC_ROWS through the emulation graph with a precision file written directly (see the docstring)."""
    from masec.config import CompileConfig
    from masec.errors import MasecError
    from masec.passes.hw.fold import fold
    from masec.passes.search.emulate import CanonicalGraph
    from masec.passes.search.precision_file import PrecisionSpec, Section
    from masec.passes.search.space import Candidate
    from masec.passes.transform.select_kernels import select_kernels

    g = CanonicalGraph(model, example_inputs, torch.device("cpu"))

    class Run(torch.nn.Module):
        def forward(self, x):
            return g.run((x,))

    rows = []
    for label, (wn, wb), (an, ab), mul in SPEC_ROWS:
        spec = PrecisionSpec(default=Section(act="mxint8", weight="mxint8", block_size=32))
        spec.op["rms_norm"] = Section(act=an, block_size=ab)
        if mul:
            spec.op["mul"] = Section(act=an, block_size=ab)
        for path in linear_paths:
            spec.node[path] = Section(weight=wn, weight_block_size=wb)
        t = time.time()
        why, ppl = None, None
        try:
            fm = g.formats(spec)
            cfg = CompileConfig(model_file="", out="", parallelism=lanes)
            fold(g.gm, cfg)
            select_kernels(g.gm, cfg)
        except MasecError as exc:
            why = str(exc).splitlines()[0]
        if why is None:
            g.configure(None, fm)
            ppl = float(evaluate(Run()))
        wc, ac = Candidate.make(wn, wb), Candidate.make(an, ab)
        d = Candidate.make("mxint8", 32)

        def cand(s):
            if s.kind == "weight":
                return wc if s.path in linear_paths else d
            if s.op == "rms_norm" or (mul and s.consumers and s.consumers[0].endswith(".w2")):
                return ac
            return d
        bits = sum(s.numel * cand(s).bits for s in space.sites) / space.total_numel
        seeded = sorted(n for (n, port), f in fm.items() if port == "out" and f.name == an) if why is None else []
        rows.append({"point": label, "weight": wc.key, "act": ac.key, "gate_mul": mul, "avg_bits": bits,
                     "perplexity": ppl, "refused_by_compiler": why, "nodes_in_act_format": seeded,
                     "seconds": round(time.time() - t, 1)})
        print(f"  {label}: {bits:.3f} bits, perplexity {ppl} ({why or 'compiler accepts'}; {len(seeded)} nodes in "
              f"{an})", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lanes", type=int, default=8, help="parallelism of the compiler check (M2XFP needs 8)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from masec.passes.search.cli import load_search_inputs
    from masec.passes.search.emulate import Emulator
    from masec.passes.search.space import Candidate, build_space, discover_sites

    ins = load_search_inputs(ROOT / "examples" / "stories260k" / "model.py")
    model, evaluate = ins["model"], ins["evaluate"]
    space = build_space(discover_sites(model, ins["example_inputs"])[0], "node")

    def block_linear(path):
        return bool(path) and path.startswith("layers.") and path.rsplit(".", 1)[-1] in LINEARS

    norm_sites = [s.key for s in space.sites if s.kind == "act" and s.op == "rms_norm"]
    assert len(norm_sites) == 2 * sum(1 for s in space.sites if s.path and s.path.endswith(".attention.wq")) + 1
    rows = []
    t0 = time.time()
    with Emulator(model, space, example_inputs=ins["example_inputs"]) as emu:
        emu.restore()
        f32 = float(evaluate(model))
        print(f"float32: {f32:.4f}", flush=True)
        for label, (wn, wb), (an, ab) in ROWS:
            wc, ac, d = Candidate.make(wn, wb), Candidate.make(an, ab), Candidate.make("mxint8", 32)
            assign = {}
            for s in space.sites:
                if s.kind == "weight":
                    assign[s.key] = wc if block_linear(s.path) else d
                else:
                    assign[s.key] = ac if s.key in norm_sites else d
            bits = sum(s.numel * assign[s.key].bits for s in space.sites) / space.total_numel
            why = emu.refusal(assign, parallelism=args.lanes)
            t = time.time()
            ppl = None
            if why is None:
                emu.apply(assign)
                ppl = float(evaluate(model))
                emu.restore()
            rows.append({"point": label, "weight": wc.key, "norm_act": ac.key, "avg_bits": bits, "perplexity": ppl,
                         "vs_float32": None if ppl is None else ppl / f32 - 1.0, "refused_by_compiler": why,
                         "seconds": round(time.time() - t, 1)})
            print(f"  {label}: {bits:.3f} bits, perplexity {ppl} ({why or 'compiler accepts'})", flush=True)
    linear_paths = [s.path for s in space.sites if s.kind == "weight" and block_linear(s.path)]
    srows = spec_rows(model, evaluate, space, ins["example_inputs"], args.lanes, linear_paths)
    for r in srows:
        r["vs_float32"] = None if r["perplexity"] is None else r["perplexity"] / f32 - 1.0
    check = {"emulator": next(r["perplexity"] for r in rows if r["point"] == "NVFP4 W, NVFP4 norm outputs"),
             "spec_path": srows[0]["perplexity"]}
    print(f"spec path check: {check}")
    rows += srows[1:]
    print_table("stories260K, seed activation formats on the RMSNorm outputs (hardware emulation)",
                ["point", "avg bits", "perplexity", "vs float32"],
                [[r["point"], f"{r['avg_bits']:.3f}", "refused" if r["perplexity"] is None else f"{r['perplexity']:.4f}",
                  "" if r["vs_float32"] is None else f"{r['vs_float32'] * 100:+.2f}%"] for r in rows])
    RESULTS.write_text(json.dumps({
        "model_file": "examples/stories260k/model.py", "float32_perplexity": f32, "lanes_checked": args.lanes,
        "emulation": "hardware (passes/search/emulate.py): every stream and parameter port as compiled; the "
                     "row's act format on the 11 RMSNorm outputs, its weight format on the 35 block linears' "
                     "weights, everything else mxint8/32",
        "norm_sites": norm_sites, "spec_path_check": check, "threads": args.threads, "wall_s": round(time.time() - t0, 1), "rows": rows},
        indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
