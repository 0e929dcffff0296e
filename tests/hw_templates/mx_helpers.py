"""Shared helpers of the mx_quantize / mx_linear / mx_matmul tests (exact references, multi-instance test tops)."""
from __future__ import annotations

import bisect
from fractions import Fraction
from functools import lru_cache



def floor_log2(x: Fraction) -> int:
    """floor(log2 x) of a positive Fraction, exactly."""
    n, d = x.numerator, x.denominator
    k = n.bit_length() - d.bit_length()
    # 2^k <= n/d < 2^(k+1) after at most one correction
    if (n << max(-k, 0)) < (d << max(k, 0)):
        k -= 1
    return k


@lru_cache(maxsize=None)
def _grid(element):
    """Finite non-negative element values with their magnitude codes, ascending (codes are monotonic)."""
    return tuple((element.code_value(c), c) for c in range(element.max_code + 1))


def ref_quantize_values(values: list[Fraction], element) -> tuple[list[int], int]:
    """Exact-rational OCP MX quantization of one block, independent of the model's algorithm.

    E = clamp(floor(log2 max|v|) - emax, -127, 127) (all zero: max(-126 - emax, -127)); every
    |v| / 2^E goes to the nearest finite element value, ties to the even magnitude code, values
    beyond the max normal saturate; the sign is applied to the magnitude code.
    """
    emax = element.emax
    nz = [abs(v) for v in values if v != 0]
    if nz:
        E = min(max(floor_log2(max(nz)) - emax, -127), 127)
    else:
        E = max(-126 - emax, -127)
    grid = _grid(element)
    vals = [g[0] for g in grid]
    top = vals[-1]
    scale = Fraction(2) ** E
    codes = []
    for v in values:
        a = abs(v) / scale
        if a >= top:
            cm = element.max_code
        else:
            j = bisect.bisect_left(vals, a)      # vals[j-1] < a <= vals[j]
            lo, hi = grid[max(j - 1, 0)], grid[j]
            dlo, dhi = a - lo[0], hi[0] - a
            if dhi < dlo or (dhi == dlo and hi[1] % 2 == 0):
                cm = hi[1]
            else:
                cm = lo[1]
        if element.kind == "int":
            codes.append((-cm if v < 0 else cm) & ((1 << element.bits) - 1))
        else:
            codes.append(cm | ((1 << (element.bits - 1)) if (v < 0 and cm != 0) else 0))
    return codes, E + 127


def write_multi_top(path, top: str, module: str, instances: list[tuple[dict, dict]]):
    """Write a wrapper ``top`` holding several ``module`` instances (one Verilator build for many
    configurations). ``instances``: ``(sv_params, streams)`` with ``streams = {prefix: (data_width,
    has_scale)}``; instance i's stream ``s_x`` becomes the wrapper's ``s_x<i>`` (``m_y`` -> ``m_y<i>``)."""
    ports, insts = ["input  logic clk_i", "input  logic rst_ni"], []
    for i, (params, streams) in enumerate(instances):
        conns = [".clk_i(clk_i)", ".rst_ni(rst_ni)"]
        for prefix, (width, scale) in streams.items():
            name = f"{prefix}{i}"
            inp = prefix.startswith("s_")
            d, r = ("input ", "output") if inp else ("output", "input ")
            sfx = "i" if inp else "o"
            rs = "o" if inp else "i"
            ports += [f"{d} logic {name}_valid_{sfx}", f"{r} logic {name}_ready_{rs}",
                      f"{d} logic [{width - 1}:0] {name}_data_{sfx}"]
            conns += [f".{prefix}_valid_{sfx}({name}_valid_{sfx})", f".{prefix}_ready_{rs}({name}_ready_{rs})",
                      f".{prefix}_data_{sfx}({name}_data_{sfx})"]
            if scale:
                ports.append(f"{d} logic [7:0] {name}_scale_{sfx}")
                conns.append(f".{prefix}_scale_{sfx}({name}_scale_{sfx})")
        plist = ", ".join(f".{k}({chr(34) + v + chr(34) if isinstance(v, str) else v})" for k, v in params.items())
        insts.append(f"  {module} #({plist}) u_{i} (\n    " + ",\n    ".join(conns) + "\n  );")
    text = f"// test wrapper: {len(instances)} {module} instances\nmodule {top} (\n  " + ",\n  ".join(ports) + \
        "\n);\n" + "\n".join(insts) + "\nendmodule\n"
    from pathlib import Path
    Path(path).write_text(text)
    return Path(path)


_YOSYS_NETLIST = r"""
import json, sys
from pyosys import libyosys as ys
job = json.loads(sys.argv[1])
d = ys.Design()
for f in job["files"]:  # -defer: elaborate only with the final parameters ($readmemh file names)
    ys.run_pass(f"read_verilog -defer -sv {f}", d)
ys.run_pass(f"hierarchy -check -top {job['top']}", d)
ys.run_pass(f"rename -top {job['top']}", d)
ys.run_pass(f"synth -top {job['top']} -flatten", d)
ys.run_pass(f"write_verilog -noattr {job['out']}", d)
"""


def yosys_netlist(sources, top: str, out) -> "Path":
    """Elaborate and synthesize ``sources`` with native Yosys (pyosys, generic cells) and write the
    netlist: simulating it with the same vectors proves Yosys reads the templates as Verilator does."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = Path(out)
    job = {"files": [str(s) for s in sources], "top": top, "out": str(out)}
    proc = subprocess.run([sys.executable, "-c", _YOSYS_NETLIST, json.dumps(job)], capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(l for l in (proc.stdout + proc.stderr).splitlines() if "ERROR" in l or "rror" in l)
        raise RuntimeError(f"yosys failed on {top}: {tail or proc.stdout[-2000:]}")
    return out
