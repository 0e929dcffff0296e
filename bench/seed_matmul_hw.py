"""Yosys ``synth_xilinx`` of one ``mx_matmul`` configuration with MX and seed-format operands.

A 16x16x16 ``Q K^T`` (``TRANS_B = 1``, ``P_A = P_B = P_N = 8``, blocks of 16, output ``mxint8``) with
both operands in ``mxfp4`` (the same 4-bit E2M1 codes), ``mxint8``, ``nvfp4`` (tensor scale 2^0),
``m2xfp4_a`` and ``anda4``: the cost of the write-side decode (``mx_act_decode``), of the wider stored
words (M2XFP: 7-bit int lanes; NVFP4 and Anda: a 12-bit exponent, NVFP4 a 4-bit significand) and of
the wider products (NVFP4: 4 more significand bits per operand). Synthesis: ``bench/kernel_resources.py:
synthesize`` (pyosys ``synth_xilinx -flatten``). Results: ``bench/results/seed_matmul_hw.json`` and a
table printed as markdown (docs/kernels/mx_matmul.md quotes it).

    python bench/seed_matmul_hw.py
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from kernel_resources import synthesize  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "seed_matmul_hw.json"
FORMATS = ("mxint8", "mxfp4", "nvfp4", "m2xfp4_a", "anda4")
COLUMNS = ("LUT", "FF", "CARRY", "DSP", "BRAM", "LUTRAM")


def example(name: str) -> dict:
    from masec.formats import parse_format
    from masec.hw_templates.kernels import mx_matmul

    f = parse_format(name, block_size=16)
    ts = 0 if name == "nvfp4" else None
    _, params, _ = mx_matmul.instance_config(16, 16, 16, f, f, parse_format("mxint8", block_size=16), True, 8, 8, 8,
                                             a_ts_exp=ts, b_ts_exp=ts)
    return {"label": f"QK^T 16x16x16 {name} x {name} P8", "ctx": {}, "params": params}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in FORMATS:
            r = synthesize("mx_matmul", example(name), Path(tmp) / name, timeout=1800)
            r["format"] = name
            r.pop("cells", None)
            rows.append(r)
            print(json.dumps({k: r.get(k) for k in ("format", "error", *COLUMNS, "seconds")}), flush=True)
    RESULTS.write_text(json.dumps({"config": "mx_matmul M=K=N=16 TRANS_B=1 P_A=P_B=P_N=8 blocks 16 -> mxint8",
                                   "rows": rows}, indent=1) + "\n")
    print("| operands | " + " | ".join(COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS))
    for r in rows:
        print(f"| `{r['format']}` | " + " | ".join(str(r.get(c, "-")) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
