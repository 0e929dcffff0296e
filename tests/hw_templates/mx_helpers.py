"""Shared helpers of the mx_quantize / mx_linear / mx_matmul tests (exact references, lint with parameters)."""
from __future__ import annotations

import bisect
import subprocess
from fractions import Fraction
from functools import lru_cache

from masec.errors import MasecError
from masec.toolchain import verilator_binary, verilator_env


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


def lint_params(sources, top: str, params: dict) -> str:
    """``verilator --lint-only -Wall`` with ``-G`` parameter overrides; raise on any warning.

    (masec.sim.runner.lint takes no parameters; kernels whose configurations are SV parameters
    lint every configuration this way.)
    """
    cmd = [verilator_binary(), "--lint-only", "-Wall", "--top-module", top,
           *[f"-G{k}={v}" for k, v in params.items()], *map(str, sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=verilator_env())
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "%Warning" in out or "%Error" in out:
        raise MasecError(f"lint of {top} {params} failed:\n{out}")
    return out


def pch_workaround_env():
    """Context: MAKEFLAGS=CFG_CXXFLAGS_PCH_I=-include for the Verilator make run.

    cocotb's runner runs ``make -f Vtop.mk`` itself, so masec.toolchain's ``-MAKEFLAGS`` (which
    Verilator applies only with ``--build``) never reaches make; designs large enough for Verilator
    to split the C++ output (parallel builds, precompiled headers) then fail to compile with the
    PyPI wheel's empty PCH flag. make takes variable assignments from the MAKEFLAGS environment.
    """
    import contextlib
    import os

    @contextlib.contextmanager
    def ctx():
        old = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = ((old + " ") if old else "") + "CFG_CXXFLAGS_PCH_I=-include"
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = old
    return ctx()
