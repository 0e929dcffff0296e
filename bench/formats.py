"""Throughput of masec.formats quantize / encode, beside a straightforward float-log2 MX implementation.

Usage: python bench/formats.py [--quick] [--repeat N] [--out bench/results/formats.json]

Measures M elements/s on a float32 tensor (4096x4096, or 1024x1024 with --quick) of N(0,1)
values times a per-row power of two, for every format. The naive reference (`naive_mx_*`) is
what one writes first, microxcaling-style: E = floor(log2(amax)) with a float32 torch.log2,
element exponent floor(log2|v|) in float, 2^x via torch.exp2 and float divisions. It is measured
in the same run on the same tensor; `ratio` = masec / naive.

Each number is the best of `--repeat` runs after one warm-up, both in wall-clock time and in
CPU time of the process. The machine is shared with other jobs, so by default the bench runs
torch on one thread (`--threads 1`): CPU time is then immune to other jobs stealing the core,
and `M el/cpu-s` is the per-core throughput. Pass `--threads 2` to use both cores (wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from masec.formats import ElementFormat, MXFormat, parse_format
from table import print_table as show_table

FORMATS = (
    "mxint8", "mxint4", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1",
    "nvfp4", "int8", "int8_ch", "int8_f6", "fp_e4m3", "fp_e2m1", "bf16", "fp32",
    "m2xfp4_w", "m2xfp4_a", "bitmod_fp4", "bitmod_fp3", "anda4", "anda8",
)


# ----------------------------------------------------------------------- naive reference
def naive_mx_quantize(x: torch.Tensor, el: ElementFormat, block: int = 32) -> torch.Tensor:
    """Float-log2 MX quantisation (ties to even), last axis, length a multiple of ``block``."""
    xb = x.reshape(-1, block)
    amax = xb.abs().amax(-1, keepdim=True)
    e = torch.floor(torch.log2(amax.clamp_min(2.0 ** -126))) - el.emax
    e = e.clamp(-127, 127)
    v = xb / torch.exp2(e)
    if el.kind == "int":
        step = torch.tensor(2.0 ** -el.mbits)
    else:
        pe = torch.floor(torch.log2(v.abs())).clamp_min(el.emin)
        step = torch.exp2(pe - el.mbits)
    q = torch.round(v / step) * step
    q = q.clamp(-el.max_normal, el.max_normal)
    return (q * torch.exp2(e)).reshape(x.shape)


def naive_mx_encode(x: torch.Tensor, el: ElementFormat, block: int = 32):
    """Codes and E8M0 scales computed the same float-log2 way."""
    xb = x.reshape(-1, block)
    amax = xb.abs().amax(-1, keepdim=True)
    e = (torch.floor(torch.log2(amax.clamp_min(2.0 ** -126))) - el.emax).clamp(-127, 127)
    v = xb / torch.exp2(e)
    if el.kind == "int":
        k = torch.round(v * 2.0 ** el.mbits).clamp(-el.max_code, el.max_code)
        codes = k.to(torch.int32) & ((1 << el.bits) - 1)
    else:
        a = v.abs()
        pe = torch.floor(torch.log2(a)).clamp_min(el.emin)
        m = torch.round(a / torch.exp2(pe - el.mbits))
        mag = ((pe - el.emin) * 2.0 ** el.mbits + m).clamp_max(el.max_code).to(torch.int32)
        codes = mag | ((v < 0) & (mag != 0)).to(torch.int32) << (el.bits - 1)
    return codes, (e + 127).to(torch.int32)


# -------------------------------------------------------------------------------- timing
def best_time(fn, repeat: int) -> tuple[float, float]:
    """(best wall seconds, best process CPU seconds) over ``repeat`` runs after a warm-up."""
    fn()
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu = min(cpu, time.process_time() - c)
        wall = min(wall, time.perf_counter() - t)
    return wall, cpu


def make_input(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n, generator=g)
    return x * torch.exp2(torch.randint(-8, 8, (n, 1), generator=g).float())


def run(quick: bool, repeat: int, formats: tuple[str, ...] = FORMATS) -> dict:
    n = 1024 if quick else 4096
    x = make_input(n)
    numel = x.numel()
    rows = []
    for name in formats:
        fmt = parse_format(name)
        tq, cq = best_time(lambda: fmt.quantize(x), repeat)
        te, ce = best_time(lambda: fmt.encode(x), repeat)
        row = {"format": fmt.name, "bits_per_element": fmt.bits_per_element,
               "quantize_meps_wall": numel / tq / 1e6, "quantize_meps_cpu": numel / cq / 1e6,
               "encode_meps_wall": numel / te / 1e6, "encode_meps_cpu": numel / ce / 1e6}
        if isinstance(fmt, MXFormat):
            el = fmt.element
            nq, ncq = best_time(lambda: naive_mx_quantize(x, el, fmt.block_size), repeat)
            ne, nce = best_time(lambda: naive_mx_encode(x, el, fmt.block_size), repeat)
            row.update(naive_quantize_meps_cpu=numel / ncq / 1e6, naive_encode_meps_cpu=numel / nce / 1e6,
                       naive_quantize_meps_wall=numel / nq / 1e6, naive_encode_meps_wall=numel / ne / 1e6,
                       quantize_ratio_cpu=ncq / cq, encode_ratio_cpu=nce / ce)
        rows.append(row)
        print(f"  {fmt.name}: quantize {row['quantize_meps_cpu']:.0f} M el/cpu-s", flush=True)
    return {
        "tensor": [n, n], "dtype": "float32", "repeat": repeat, "statistic": "best of repeat",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(), "machine": platform.processor() or platform.machine(),
        "results": rows,
    }


def print_table(res: dict) -> None:
    title = (f"masec.formats throughput, {res['tensor'][0]}x{res['tensor'][1]} float32, torch threads "
             f"{res['threads']}, best of {res['repeat']}; M elements per CPU-second (wall in brackets)")
    cols = ["format", "bits/el", "quantize", "encode", "naive quantize", "naive encode", "q ratio", "e ratio"]
    body = []
    for r in res["results"]:
        def f(k):
            if k + "_cpu" not in r:
                return "-"
            return f"{r[k + '_cpu']:.0f} ({r[k + '_wall']:.0f})"
        ratio = [f"{r[k]:.1f}x" if k in r else "-" for k in ("quantize_ratio_cpu", "encode_ratio_cpu")]
        body.append([r["format"], f"{r['bits_per_element']:.4g}", f("quantize_meps"), f("encode_meps"),
                     f("naive_quantize_meps"), f("naive_encode_meps"), *ratio])
    show_table(title, cols, body, width=140)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1024x1024 instead of 4096x4096 (CI)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, see above)")
    ap.add_argument("--formats", nargs="+", default=FORMATS, help="subset of formats to measure")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "formats.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = run(args.quick, args.repeat, tuple(args.formats))
    print_table(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
