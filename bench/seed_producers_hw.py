"""Seed activation producers beyond the linear in hardware: mx_rmsnorm (Y_QFMT) and mx_mul (OUT_QFMT).

Usage: python3 bench/seed_producers_hw.py

Yosys ``synth_xilinx`` (``bench/kernel_resources.py: synthesize``) of the manifest examples with a seed
activation output -- mx_rmsnorm N64, mxint8 in, mxfp8_e4m3 gamma, P8 (``mx_norm._example_seed``: nvfp4 in
blocks of 16 with tensor scale 2^-4, m2xfp4_a and anda4 in blocks of 32); mx_mul mxint8 x mxint8, P8
(``mx_eltwise._seed_mul_examples``) -- beside the same kernel with an MXINT8 output at blocks 16 and 32.
Writes bench/results/seed_producers_hw.json (LUT, FF, DSP, BRAM, CARRY per configuration).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from kernel_resources import synthesize  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "seed_producers_hw.json"


def jobs() -> list[tuple[str, dict]]:
    from masec.formats.element import INT8
    from masec.hw_templates.kernels import mx_eltwise as E
    from masec.hw_templates.kernels import mx_norm as M
    from masec.hw_templates.manifest import registry

    reg = registry()
    out = [("mx_rmsnorm", ex) for ex in reg["mx_rmsnorm"].examples if "->" in ex["label"]]
    for blk in (16, 32):
        ex = M._example("rmsnorm", 64, 8, blk)
        ex["label"] = f"N64 mxint8 -> mxint8 P8 B{blk}"
        out.append(("mx_rmsnorm", ex))
    out += [("mx_mul", ex) for ex in reg["mx_mul"].examples
            if any(f"->{n}" in ex["label"] for n in ("nvfp4", "m2xfp4_a", "anda4"))]
    out += [("mx_mul", {"label": f"mxint8*mxint8->mxint8 P8 B{blk}", "ctx": {},
                        "params": E.sv_params(8, blk, INT8, INT8, INT8)}) for blk in (16, 32)]
    return out


def main() -> int:
    from masec.synth import _yosys_version

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kernel, ex) in enumerate(jobs()):
            t = time.time()
            rec = synthesize(kernel, ex, Path(tmp) / f"{i}", 1800)
            if "error" in rec:
                raise SystemExit(f"{kernel} {ex['label']}: {rec['error']}")
            rows[f"{kernel} {ex['label']}"] = {k: rec[k] for k in ("LUT", "FF", "DSP", "BRAM", "CARRY")}
            print(f"{kernel} {ex['label']}: {rows[kernel + ' ' + ex['label']]} "
                  f"({time.time() - t:.0f} s)", flush=True)
    RESULTS.write_text(json.dumps({"yosys": _yosys_version(), "flow": "synth_xilinx (bench/kernel_resources.py)",
                                   "rows": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
