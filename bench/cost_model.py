"""Calibrate the per-kernel cost model (``masec.cost_model``) against Yosys ``synth_xilinx``.

A sweep of kernel configurations (lanes 1..32; mxint8, mxfp8_e4m3, mxfp4, mxint4; a few sizes) is
built from the kernels' own configuration helpers (``hw_templates/kernels/*.py``: the same SV
parameters and memory images the compiler and the resource table use), rendered, and synthesized
by the machinery of ``masec synth`` (``masec.synth.synthesize``: one out-of-context
``synth_xilinx -flatten -family <part family>`` per configuration, cached in ``$MASEC_CACHE/synth``
or ``~/.cache/masec/synth``, so a rerun costs nothing).

Each kernel's configurations are split deterministically: every fourth one (in sweep order,
starting with the third) is held out. LUT and FF are fitted by least squares (numpy) on the
training points in the features of ``masec.cost_model.features``; DSP and BRAM are the model's
closed forms and are only checked. Writes

* ``compiler/cost_model.json``: the fitted coefficients (package data; ``masec.cost_model`` reads it),
* ``bench/results/cost_model.json``: every configuration, its Yosys counts and the estimates,
* the held-out error table in ``docs/cost_model.md`` between ``<!-- BEGIN cost_model -->`` and
  ``<!-- END cost_model -->`` (deterministic: no timings, no dates).

Usage::

    nice python bench/cost_model.py            # the full sweep: 309 Yosys runs, cached (see below)
    nice python bench/cost_model.py --quick    # a tiny sweep (86 configurations, two or so per kernel)
    python bench/cost_model.py --kernel mx_add --jobs 2
    python bench/cost_model.py --cached-only   # refit on what the cache holds, synthesize nothing

The full sweep is far beyond 20 minutes on two shared cores (the calibration took about 25 minutes
of a 16-core machine): ``--export DIR`` writes the uncached configurations as self-contained jobs,
``--run-jobs DIR RESULTS --jobs 16`` runs them anywhere pyosys is installed (only the standard
library and ``masec.synth``), ``--import DIR RESULTS`` fits on the results.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cost_model.json"
FIT = ROOT / "compiler" / "cost_model.json"
DOC = ROOT / "docs" / "cost_model.md"
BEGIN, END = "<!-- BEGIN cost_model -->", "<!-- END cost_model -->"
PART = "xcu250"
FORMATS = ("mxint8", "mxfp8_e4m3", "mxfp4", "mxint4")


# ---------------------------------------------------------------------------------------------
# The sweep: {"kernel", "label", "ctx", "params", "files"} per configuration

def _elem(name):
    from masec.formats import parse_format

    return parse_format(name).element


def _sweep_linear(quick):
    from masec.hw_templates.kernels.mx_linear import example_config

    grid = [(64, 64, 1, 1), (64, 64, 2, 2), (64, 32, 4, 4), (32, 64, 8, 4), (64, 64, 4, 8), (64, 64, 8, 8),
            (128, 64, 4, 4), (64, 128, 2, 4)]
    if quick:
        grid = [(32, 32, 2, 2), (32, 32, 4, 4)]
    out = []
    for f in FORMATS:
        for i, (n_in, n_out, p_in, p_out) in enumerate(grid):
            bias = (i % 2 == 0) and f != "mxfp4"
            out.append(example_config(f"{n_in}x{n_out} {f} P_IN{p_in} P_OUT{p_out}" + (" bias" if bias else ""),
                                      n_in, n_out, f, f, f, p_in, p_out, bias, seed=i))
    return out


def _sweep_matmul(quick):
    from masec.hw_templates.kernels.mx_matmul import _example

    grid = [(16, 16, 8, True, 1), (16, 16, 8, True, 2), (16, 8, 16, False, 4), (16, 16, 16, True, 8),
            (8, 32, 8, True, 4), (16, 8, 32, False, 2)]
    if quick:
        grid = grid[1:3]
    out = []
    for f in FORMATS:
        for m, k, n, tb, pn in grid:
            pb = 8 if tb else pn
            out.append(_example(f"{m}x{k}x{n} {f} P_N{pn}" + (" B^T" if tb else ""), m, k, n, f, f, f, tb,
                                8, pb, pn))
    return out


def _sweep_eltwise(kernel, quick):
    from masec.hw_templates.kernels.mx_eltwise import sv_params

    lanes = (1, 2, 4, 8, 16, 32) if not quick else (2, 8)
    pairs = [(f, f, f) for f in FORMATS] + [("mxfp8_e4m3", "mxint8", "mxfp8_e4m3"), ("mxint8", "mxfp4", "mxint8")]
    out = []
    for fx, fy, fo in pairs:
        for p in (lanes if fx == fy else lanes[1::2]):
            out.append({"label": f"{fx}+{fy}->{fo} P{p}", "ctx": {},
                        "params": sv_params(p, 32, _elem(fx), _elem(fy), _elem(fo))})
    return out


def _sweep_act(kernel, quick):
    from masec.hw_templates.kernels.mx_act import jinja_ctx, sv_params

    func = kernel[3:]
    lanes = (1, 2, 4, 8, 16, 32) if not quick else (2, 8)
    out = []
    for f in FORMATS:
        for p in (lanes if kernel == "mx_gelu" else lanes[::2]):
            out.append({"label": f"{f} P{p}", "ctx": jinja_ctx(func, _elem(f)),
                        "params": sv_params(p, 32, _elem(f), _elem(f))})
    return out


def _sweep_norm(kernel, quick):
    from masec.hw_templates.kernels.mx_norm import _example

    grid = [(64, 1), (64, 2), (64, 4), (128, 4), (64, 8), (128, 8), (64, 16), (256, 16), (64, 32)]
    if quick:
        grid = [(64, 2), (64, 4)]
    out = []
    for n, p in grid:
        ex = _example(kernel[3:], n, p)
        out.append(ex)
    return out


def _sweep_softmax(quick):
    from masec.hw_templates.kernels.mx_softmax import sim_params

    grid = [(32, 1, True), (32, 2, False), (64, 4, True), (64, 8, False), (128, 8, True), (64, 16, True),
            (128, 32, False)]
    if quick:
        grid = grid[1:3]
    out = []
    for f in ("mxint8", "mxfp8_e4m3"):
        for n, p, causal in grid:
            out.append({"label": f"N{n} {f} P{p}" + (" causal" if causal else ""), "ctx": {},
                        "params": sim_params(n, _elem(f), _elem(f), p, 32, causal, n if causal else 1, 0, 1.0)})
    return out


def _sweep_rope(quick):
    import functools

    from masec.hw_templates.kernels.mx_quantize import element_sv_params
    from masec.hw_templates.kernels.mx_rope import DEFAULT_CS_BITS, rope_mem_text

    grid = [(2, 64, 32, 64), (4, 64, 16, 128), (8, 128, 64, 256), (16, 64, 32, 32), (32, 128, 32, 64)]
    if quick:
        grid = grid[:2]
    out = []
    for f in FORMATS[:3] if not quick else FORMATS[:1]:
        for p, dim, hd, pos in grid:
            el = _elem(f)
            params = {"P": p, "B": 32, "DIM": dim, "HEAD_DIM": hd, "MAX_POS": pos, "POS_START": 0, "SEQ_LEN": pos,
                      "CS_W": DEFAULT_CS_BITS, **element_sv_params(el, "IN_"), **element_sv_params(el, "OUT_"),
                      "MEM_FILE": "rope.mem"}
            for k in ("IN_EMAX", "IN_MAX_CODE"):
                params.pop(k)
            out.append({"label": f"{f} P{p} dim{dim} hd{hd} pos{pos}", "ctx": {}, "params": params,
                        "files": {"rope.mem": functools.partial(rope_mem_text, pos, hd, p)}})
    return out


def _sweep_embedding(quick):
    from masec.hw_templates.kernels.mx_embedding import _example

    grid = [(64, 64, 8, 4), (128, 64, 8, 8), (256, 128, 4, 16), (512, 64, 8, 2), (32, 256, 4, 32), (1024, 64, 8, 8),
            (256, 64, 8, 1)]
    if quick:
        grid = grid[:2]
    return [_example(f"V{v} D{d} W{w} P{p}", v, d, 32, w, p) for v, d, w, p in grid]


def _sweep_cast(quick):
    from masec.formats import parse_format
    from masec.hw_templates.kernels.mx_cast import instance_config

    def _example(label, a, b, p):
        return {"label": label, "ctx": {}, "params": instance_config(parse_format(a), parse_format(b), p)[1]}

    pairs = [("mxint8", "mxfp8_e4m3"), ("mxfp8_e4m3", "mxfp4"), ("mxfp4", "mxint8"), ("mxint8", "mxint4"),
             ("mxint4", "mxfp8_e4m3")]
    lanes = (1, 4, 16, 32) if not quick else (4,)
    return [_example(f"{a}->{b} P{p}", a, b, p) for a, b in pairs for p in lanes]


def _sweep_quantize(quick):
    from masec.hw_templates.kernels.mx_quantize import element_sv_params

    out = []
    for f in FORMATS:
        for p in ((1, 4, 16, 32) if not quick else (4,)):
            params = {"P": p, "B": 32, "MW": 24, "EW": 10, **element_sv_params(_elem(f), "ELEM_")}
            out.append({"label": f"{f} P{p} MW24", "ctx": {}, "params": params})
    return out


def _sweep_simple(kernel, quick):
    """Infrastructure kernels: parameters only (and memory images where they read one)."""
    import functools

    if kernel == "mx_retile":
        grid = [(8, 1, 8), (8, 8, 1), (8, 4, 32), (8, 32, 4), (4, 2, 16), (4, 16, 2), (4, 8, 32), (8, 16, 32)]
        return [{"label": f"W{w} P{a}->P{b}", "ctx": {}, "params": {"P_IN": a, "P_OUT": b, "W": w, "B": 32}}
                for w, a, b in (grid[:2] if quick else grid)]
    if kernel == "mx_relu":
        grid = [(1, 8), (4, 8), (8, 4), (16, 8), (32, 4), (32, 8), (2, 4), (8, 8)]
        return [{"label": f"W{w} P{p}", "ctx": {}, "params": {"P": p, "W": w, "REG": 1}}
                for p, w in (grid[:2] if quick else grid)]
    if kernel == "stream_fifo":
        grid = [(16, 2, 0), (40, 2, 0), (72, 2, 0), (264, 2, 0), (40, 16, 0), (136, 32, 0), (40, 64, 0),
                (40, 128, 1), (40, 512, 1), (72, 1024, 1), (136, 256, 1), (264, 512, 1), (40, 2048, 1),
                (24, 4096, 1)]
        return [{"label": f"W{w} D{d}" + (" block" if r else ""), "ctx": {},
                 "params": {"WIDTH": w, "DEPTH": d, "RAM_STYLE": r}} for w, d, r in (grid[:3] if quick else grid)]
    if kernel == "stream_fork":
        grid = [(2, 8), (2, 32), (3, 32), (2, 64), (4, 64), (2, 128), (3, 256), (5, 16)]
        return [{"label": f"N{n} mx DATA_W{w}", "ctx": {"n_outputs": n, "mx": True}, "params": {"DATA_W": w}}
                for n, w in (grid[:2] if quick else grid)]
    if kernel == "stream_reorder":
        from masec.hw_templates.kernels.stream_reorder import _example

        grid = [(40, 1, (16, 4), (1, 0), None), (40, 2, (16, 4), (1, 0), None), (72, 4, (64, 8), (1, 0), None),
                (40, 2, (32, 2), (1, 0), (1, 4)), (136, 2, (32, 4), (1, 0), None), (40, 4, (64, 4), (1, 0), None),
                (264, 1, (16, 8), (1, 0), None), (72, 8, (128, 4), (1, 0), None)]
        return [_example(f"W{w} U{u} {list(s)}" + (f" repeat {r}" if r else ""), w, u, s, perm, r)
                for w, u, s, perm, r in (grid[:2] if quick else grid)]
    if kernel == "stream_rom":
        from masec.hw_templates.kernels.stream_rom import example_mem

        grid = [(40, 1), (40, 16), (40, 64), (72, 128), (40, 256), (72, 512), (136, 1024), (264, 64), (40, 4096)]
        return [{"label": f"W{w} D{d}", "ctx": {}, "params": {"WIDTH": w, "DEPTH": d, "MEM_FILE": "rom.mem"},
                 "files": {"rom.mem": functools.partial(example_mem, w, d)}} for w, d in (grid[:2] if quick else grid)]
    raise KeyError(kernel)


def sweep(quick: bool = False, kernels=()) -> list[dict]:
    """Every configuration of the sweep, each with its ``kernel``, in a fixed order."""
    makers = {
        "mx_linear": lambda: _sweep_linear(quick), "mx_matmul": lambda: _sweep_matmul(quick),
        "mx_add": lambda: _sweep_eltwise("mx_add", quick), "mx_mul": lambda: _sweep_eltwise("mx_mul", quick),
        "mx_gelu": lambda: _sweep_act("mx_gelu", quick), "mx_silu": lambda: _sweep_act("mx_silu", quick),
        "mx_gelu_tanh": lambda: _sweep_act("mx_gelu_tanh", quick),
        "mx_rmsnorm": lambda: _sweep_norm("mx_rmsnorm", quick), "mx_layernorm": lambda: _sweep_norm("mx_layernorm", quick),
        "mx_softmax": lambda: _sweep_softmax(quick), "mx_rope": lambda: _sweep_rope(quick),
        "mx_embedding": lambda: _sweep_embedding(quick), "mx_cast": lambda: _sweep_cast(quick),
        "mx_quantize": lambda: _sweep_quantize(quick),
        **{k: (lambda k=k: _sweep_simple(k, quick)) for k in ("mx_retile", "mx_relu", "stream_fifo", "stream_fork",
                                                               "stream_reorder", "stream_rom")},
    }
    unknown = [k for k in kernels if k not in makers]
    if unknown:
        raise SystemExit(f"unknown kernel(s) {', '.join(unknown)}; the sweep knows {', '.join(makers)}")
    out = []
    for k in (kernels or makers):
        for ex in makers[k]():
            out.append({**ex, "kernel": k})
    return out


def held_out(configs: list[dict]) -> list[bool]:
    """Every fourth configuration of each kernel, in sweep order, starting with the third."""
    seen: dict[str, int] = {}
    flags = []
    for c in configs:
        i = seen.get(c["kernel"], 0)
        seen[c["kernel"]] = i + 1
        flags.append(i % 4 == 2)
    return flags


# ---------------------------------------------------------------------------------------------
# Synthesis: through masec synth (its cache, its family, its counting)

def synth_config(cfg: dict, workdir: Path, cache: Path | None, timeout: float, cached_only: bool = False) -> dict:
    """Render ``cfg`` into a one-instance output folder and synthesize it with ``masec.synth``."""
    from masec.errors import MasecError
    from masec.parts import lookup_part
    from masec.synth import _cache_get, _plan, _yosys_version, design_instances, read_build, synthesize

    _prepare(cfg, workdir)
    if cached_only:
        build = read_build(workdir)
        job = _plan(workdir, build, design_instances(workdir, build), lookup_part(PART).family, _yosys_version())[0]
        if _cache_get(cache, job.key) is None:
            return {"error": "not in the synthesis cache (--cached-only)"}
    try:
        res = synthesize(workdir, lookup_part(PART), jobs=1, cache=cache, timeout=timeout)
    except MasecError as exc:
        if cached_only:
            return {"error": str(exc).splitlines()[0].replace(str(workdir), "<workdir>")}
        return fallback(cfg, workdir / "fallback", timeout)
    k = res.report["kernels"][0]
    return {"yosys": {c: k[c] for c in ("LUT", "FF", "DSP", "BRAM", "LUTRAM", "SRL", "CARRY")},
            "seconds": sum(res.seconds.values()), "cached": res.cached == 1}


def fallback(cfg: dict, workdir: Path, timeout: float) -> dict:
    """Yosys 0.70 asserts (rtlil_bufnorm.cc) on ``masec synth``'s ``read_verilog -defer`` + ``-chparam``
    flow for mx_matmul; such a configuration is synthesized by the resource table's driver instead
    (``bench/kernel_resources.py``: ``read_verilog`` + ``chparam``, ``synth_xilinx`` default family xc7)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import kernel_resources

    rec = kernel_resources.synthesize(cfg["kernel"], cfg, workdir, timeout)
    if "error" in rec:
        return {"error": rec["error"]}
    return {"yosys": {c: rec[c] for c in ("LUT", "FF", "DSP", "BRAM", "LUTRAM", "SRL", "CARRY")},
            "flow": "kernel_resources (xc7)", "seconds": rec.get("seconds", 0.0)}


def load_fallback(path: Path) -> dict:
    """Results of :func:`fallback` saved by an earlier run: {kernel: {label: record}}."""
    return json.loads(path.read_text()) if path and path.exists() else {}


def _prepare(cfg: dict, workdir: Path) -> Path:
    """Render ``cfg`` into a one-instance output folder (rtl/, masec_build.json) as ``masec synth`` reads it."""
    from masec.hw_templates.render import render_with_deps

    rtl = workdir / "rtl"
    files = render_with_deps(cfg["kernel"], rtl, **cfg.get("ctx", {}))
    for name, text in (cfg.get("files") or {}).items():
        (rtl / name).write_text(text() if callable(text) else text)
    top = files[-1].stem
    params = {k: (int(v) if isinstance(v, bool) else v) for k, v in cfg["params"].items()}
    build = {"top": top, "sources": [f"rtl/{f.name}" for f in files],
             "instances": [{"name": "u_dut", "module": top, "kernel": cfg["kernel"], "params": params}]}
    (workdir / "masec_build.json").write_text(json.dumps(build))
    return workdir


def export_jobs(configs: list[dict], dest: Path, cache: Path | None) -> int:
    """Write the configurations not in the cache as self-contained Yosys jobs under ``dest`` (one folder
    per cache key: the sources and memory images it reads, job.json with ``masec synth``'s script), to
    run on another machine with ``--run-jobs`` and bring back with ``--import``."""
    import shutil

    from masec.parts import lookup_part
    from masec.synth import _cache_get, _plan, _synth_script, _yosys_version, design_instances, read_build

    family = lookup_part(PART).family
    n = 0
    with tempfile.TemporaryDirectory(prefix="masec_cost_") as tmp:
        for i, cfg in enumerate(configs):
            out = _prepare(cfg, Path(tmp) / f"c{i}")
            build = read_build(out)
            job = _plan(out, build, design_instances(out, build), family, _yosys_version())[0]
            if _cache_get(cache, job.key) is not None or (dest / job.key).exists():
                continue
            rtl = dest / job.key / "rtl"
            rtl.mkdir(parents=True)
            for f in sorted((out / "rtl").iterdir()):
                shutil.copy(f, rtl / f.name)
            (rtl / "job.json").write_text(json.dumps({"script": _synth_script(job, family)}))
            n += 1
    return n


def run_jobs(src: Path, dest: Path, jobs: int, budget: float) -> None:
    """Run every exported job under ``src`` (``masec.synth``'s worker, one process each), writing
    ``dest/<key>.json``; no new job starts after ``budget`` seconds."""
    import subprocess

    t0 = time.monotonic()
    dest.mkdir(parents=True, exist_ok=True)
    todo = sorted(p for p in src.iterdir() if (p / "rtl" / "job.json").exists() and not (dest / f"{p.name}.json").exists())

    def one(job_dir: Path):
        if time.monotonic() - t0 > budget:
            return job_dir.name, "skipped"
        rtl = job_dir / "rtl"
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", "from masec.synth import _worker; _worker()", "job.json"],
                              cwd=rtl, capture_output=True, text=True)
        if proc.returncode or not (rtl / "result.json").exists():
            return job_dir.name, f"failed: {proc.stdout[-300:]}{proc.stderr[-300:]}"
        rec = json.loads((rtl / "result.json").read_text())
        rec["seconds"] = round(time.monotonic() - t, 1)
        (dest / f"{job_dir.name}.json").write_text(json.dumps(rec, sort_keys=True))
        return job_dir.name, f"{rec['seconds']} s"

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for fut in as_completed([pool.submit(one, d) for d in todo]):
            key, status = fut.result()
            print(f"[{time.monotonic() - t0:5.0f}s] {key[:12]}: {status}", flush=True)


def _script_key(script: list[str]) -> str:
    """A synthesis script without its read commands: the module and its parameters (``hierarchy
    -chparam`` or ``chparam -set``, whichever ``masec.synth`` used) and the synthesis command."""
    return "\n".join(c for c in script if not c.startswith("read_verilog"))


def import_jobs(configs: list[dict], jobs_dir: Path, results_dir: Path) -> dict[int, dict]:
    """Yosys counts of the configurations run by ``--run-jobs``: each job folder's ``job.json`` is matched
    to its configuration by the synthesis script without its reads (the module, its parameters and the
    synthesis command), so results stay attributable when the kernels' sources changed since the export."""
    from masec.parts import lookup_part
    from masec.synth import Job, _synth_script, classify

    family = lookup_part(PART).family
    by_line = {}
    for d in sorted(jobs_dir.iterdir()):
        res = results_dir / f"{d.name}.json"
        if (d / "rtl" / "job.json").exists() and res.exists():
            script = json.loads((d / "rtl" / "job.json").read_text())["script"]
            by_line[_script_key(script)] = json.loads(res.read_text())
    out = {}
    with tempfile.TemporaryDirectory(prefix="masec_cost_") as tmp:
        for i, cfg in enumerate(configs):
            from masec.hw_templates.render import render_with_deps

            files = render_with_deps(cfg["kernel"], Path(tmp) / f"c{i}", **cfg.get("ctx", {}))
            from masec.synth import _sv_params

            job = Job("", files[-1].stem, _sv_params({k: (int(v) if isinstance(v, bool) else v)
                                                      for k, v in cfg["params"].items()}), [], [])
            line = _script_key(_synth_script(job, family))
            if line in by_line:
                c = classify(by_line[line]["cells"])
                out[i] = {"yosys": {k: c[k] for k in ("LUT", "FF", "DSP", "BRAM", "LUTRAM", "SRL", "CARRY")},
                          "cached": True}
    return out


# ---------------------------------------------------------------------------------------------
# Fit and error table

def fit(records: list[dict]) -> dict:
    """Least-squares LUT and FF coefficients per model group from the training records."""
    import numpy as np

    from masec.cost_model import MODEL_GROUP, features

    by_group: dict[str, list[dict]] = {}
    for r in records:
        if not r["held_out"] and "yosys" in r:
            by_group.setdefault(MODEL_GROUP.get(r["kernel"], r["kernel"]), []).append(r)
    coefs = {}
    for group, rs in sorted(by_group.items()):
        names = list(features(rs[0]["kernel"], rs[0]["params"]))
        x = np.array([[features(r["kernel"], r["params"])[n] for n in names] for r in rs], dtype=float)
        coefs[group] = {"features": names, "points": len(rs)}
        for res in ("LUT", "FF"):
            y = np.array([r["yosys"][res] for r in rs], dtype=float)
            # relative least squares (rows weighted by 1/y): small configurations matter as much as big ones
            w = 1.0 / np.maximum(y, 8.0)
            sol, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
            coefs[group][res] = [round(float(c), 6) for c in sol]
    return coefs


def errors(records: list[dict]) -> dict:
    """Per kernel: held-out mean/max |error| % for LUT and FF, exact matches for DSP and BRAM."""
    import numpy as np

    table: dict[str, dict] = {}
    for r in records:
        if "yosys" not in r:
            continue
        t = table.setdefault(r["kernel"], {"train": 0, "held_out": 0, "lut": [], "ff": [], "dsp": [0, 0],
                                           "bram": [0, 0], "dsp_all": [0, 0], "bram_all": [0, 0]})
        y, e = r["yosys"], r["estimate"]
        for res in ("DSP", "BRAM"):
            key = res.lower() + "_all"
            t[key][0] += int(e[res] == y[res])
            t[key][1] += 1
        if not r["held_out"]:
            t["train"] += 1
            continue
        t["held_out"] += 1
        for res in ("LUT", "FF"):
            t[res.lower()].append(100.0 * abs(e[res] - y[res]) / max(y[res], 1))
        t["lut_abs"] = max(t.get("lut_abs", 0), abs(e["LUT"] - y["LUT"]))
        for res in ("DSP", "BRAM"):
            t[res.lower()][0] += int(e[res] == y[res])
            t[res.lower()][1] += 1
    out = {}
    for k, t in sorted(table.items()):
        out[k] = {"train": t["train"], "held_out": t["held_out"],
                  "LUT_mean_pct": round(float(np.mean(t["lut"])), 1) if t["lut"] else None,
                  "LUT_max_pct": round(float(np.max(t["lut"])), 1) if t["lut"] else None,
                  "LUT_max_abs": t.get("lut_abs") if t["lut"] else None,
                  "FF_mean_pct": round(float(np.mean(t["ff"])), 1) if t["ff"] else None,
                  "FF_max_pct": round(float(np.max(t["ff"])), 1) if t["ff"] else None,
                  "DSP_exact": t["dsp"], "BRAM_exact": t["bram"], "DSP_exact_all": t["dsp_all"],
                  "BRAM_exact_all": t["bram_all"]}
    return out


def markdown(err: dict, n_configs: int, family: str, n_fallback: int = 0) -> str:
    def pct(v):
        return "-" if v is None else f"{v:.1f}"

    lines = [f"{n_configs} configurations synthesized with Yosys `synth_xilinx -flatten -family {family}` "
             "(`masec synth`'s flow, part " + PART + f"; {n_fallback} `mx_matmul` ones by the fallback driver, "
             "family xc7); held out = every fourth configuration of each kernel, not used for the fit. "
             "LUT max abs = the largest held-out LUT error in LUTs.", "",
             "| kernel | fit / held out | LUT mean % | LUT max % | LUT max abs | FF mean % | FF max % | "
             "DSP exact (held out) | BRAM exact (held out) | DSP exact (all) | BRAM exact (all) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tot = {"lut": [], "dsp": [0, 0], "bram": [0, 0]}
    for k, e in err.items():
        lines.append(f"| `{k}` | {e['train']} / {e['held_out']} | {pct(e['LUT_mean_pct'])} | "
                     f"{pct(e['LUT_max_pct'])} | {e['LUT_max_abs'] if e['LUT_max_abs'] is not None else '-'} | "
                     f"{pct(e['FF_mean_pct'])} | {pct(e['FF_max_pct'])} | "
                     f"{e['DSP_exact'][0]}/{e['DSP_exact'][1]} | {e['BRAM_exact'][0]}/{e['BRAM_exact'][1]} | "
                     f"{e['DSP_exact_all'][0]}/{e['DSP_exact_all'][1]} | "
                     f"{e['BRAM_exact_all'][0]}/{e['BRAM_exact_all'][1]} |")
    return "\n".join(lines) + "\n"


def write_doc(table: str, path: Path = DOC) -> None:
    block = f"{BEGIN}\n<!-- generated by bench/cost_model.py; do not edit by hand -->\n{table}{END}"
    text = path.read_text() if path.exists() else "# Cost model\n\n" + BEGIN + "\n" + END + "\n"
    pre, rest = text.split(BEGIN, 1)
    path.write_text(pre + block + rest.split(END, 1)[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny sweep (two configurations per kernel)")
    ap.add_argument("--kernel", action="append", default=[], help="only this kernel (repeatable); keeps the others' "
                    "records from the last run")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="parallel Yosys processes (default 2)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration (default 900)")
    ap.add_argument("--no-cache", action="store_true", help="ignore the synthesis cache")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--fallback-results", type=Path, default=None, metavar="FILE",
                    help="records of configurations synthesized by the fallback driver earlier ({kernel: {label: "
                         "record}}, bench/kernel_resources.synthesize's format)")
    ap.add_argument("--cached-only", action="store_true", help="synthesize nothing: fit on the cached configurations")
    ap.add_argument("--export", type=Path, metavar="DIR", help="only write the uncached configurations as Yosys "
                    "jobs under DIR (to run elsewhere with --run-jobs)")
    ap.add_argument("--run-jobs", type=Path, nargs=2, metavar=("DIR", "RESULTS"),
                    help="run the jobs exported to DIR, write RESULTS/<key>.json (needs only pyosys and masec.synth)")
    ap.add_argument("--budget", type=float, default=1e9, help="--run-jobs: start no job after this many seconds")
    ap.add_argument("--import", dest="import_", type=Path, nargs=2, metavar=("DIR", "RESULTS"),
                    help="take the --run-jobs results (RESULTS) of the jobs exported to DIR, then fit as usual")
    args = ap.parse_args(argv)
    if args.run_jobs:
        run_jobs(args.run_jobs[0], args.run_jobs[1], args.jobs, args.budget)
        return 0

    from masec.parts import lookup_part
    from masec.synth import cache_dir

    configs = sweep(args.quick, tuple(args.kernel))
    flags = held_out(configs)
    cache = None if args.no_cache else cache_dir()
    if args.export:
        n = export_jobs(configs, args.export, cache)
        print(f"{n} uncached configurations exported to {args.export}", file=sys.stderr)
        return 0
    results = import_jobs(configs, *args.import_) if args.import_ else {}
    old_fb = load_fallback(args.fallback_results)
    for i, c in enumerate(configs):
        rec = old_fb.get(c["kernel"], {}).get(c["label"])
        if i not in results and rec and "error" not in rec:
            results[i] = {"yosys": {k: rec[k] for k in ("LUT", "FF", "DSP", "BRAM", "LUTRAM", "SRL", "CARRY")},
                          "flow": "kernel_resources (xc7)", "cached": True}
    if args.import_:
        print(f"{len(results)} configurations from {args.import_[1]}", file=sys.stderr)
    records: list[dict] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="masec_cost_") as tmp, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futs = {pool.submit(synth_config, c, Path(tmp) / f"c{i}", cache, args.timeout, args.cached_only): (i, c)
                for i, c in enumerate(configs) if i not in results}
        done = 0
        for fut in as_completed(futs):
            i, c = futs[fut]
            results[i] = fut.result()
            done += 1
            r = results[i]
            status = r.get("error") or " ".join(f"{k} {v}" for k, v in r["yosys"].items())
            print(f"[{done}/{len(configs)} {time.monotonic() - t0:5.0f}s] {c['kernel']} {c['label']}: {status}"
                  + (" (cached)" if r.get("cached") else f" ({r.get('seconds', 0):.0f} s)"), file=sys.stderr,
                  flush=True)
    for i, c in enumerate(configs):
        rec = {"kernel": c["kernel"], "label": c["label"], "held_out": flags[i],
               "params": {k: v for k, v in sorted(c["params"].items())}}
        if c["kernel"] == "stream_fork":  # a Jinja parameter: the cost model takes it as N_OUTPUTS
            rec["params"]["N_OUTPUTS"] = c["ctx"]["n_outputs"]
        if "error" in results[i]:
            rec["error"] = results[i]["error"]
        else:
            rec["yosys"] = results[i]["yosys"]
            if results[i].get("flow"):
                rec["flow"] = results[i]["flow"]
        records.append(rec)
    # mx_matmul: few sweep points synthesize (see fallback); the resource table's two examples join its fit
    table = json.loads((ROOT / "bench" / "results" / "kernel_resources.json").read_text())
    for r in table.get("mx_matmul", []):
        if "error" not in r and (not args.kernel or "mx_matmul" in args.kernel):
            records.append({"kernel": "mx_matmul", "label": "resource table: " + r["label"], "held_out": False,
                            "params": dict(sorted(r["params"].items())), "flow": "kernel_resources.json (xc7)",
                            "yosys": {c: r[c] for c in ("LUT", "FF", "DSP", "BRAM", "LUTRAM", "SRL", "CARRY")}})
    if args.kernel and RESULTS.exists():  # keep the other kernels' records
        old = [r for r in json.loads(RESULTS.read_text())["records"] if r["kernel"] not in args.kernel]
        records = old + records
    from masec.cost_model import estimate, load_fit, set_fit

    coefs = fit(records)
    shipped = load_fit().get("groups", {})
    if args.kernel:
        coefs = {**shipped, **coefs}
    for group, c in coefs.items():   # the PIPE terms (bench/cost_model_pipe.py) are increments over PIPE 0: kept
        if "pipe" in shipped.get(group, {}):
            c["pipe"] = shipped[group]["pipe"]
    fit_doc = {"part": PART, "family": lookup_part(PART).family, "groups": coefs,
               "generated_by": "bench/cost_model.py"}
    set_fit(fit_doc)
    for r in records:
        if "yosys" in r:
            e = estimate(r["kernel"], r["params"])
            r["estimate"] = {k: e[k] for k in ("LUT", "FF", "DSP", "BRAM")}
    err = errors(records)
    table = markdown(err, sum("yosys" in r for r in records), lookup_part(PART).family,
                     sum("yosys" in r and bool(r.get("flow")) for r in records))
    print(table)
    failed = [r for r in records if "error" in r]
    for r in failed:
        print(f"not synthesized: {r['kernel']} {r['label']}: {r['error']}", file=sys.stderr)
    if not args.no_write:
        FIT.write_text(json.dumps(fit_doc, indent=1, sort_keys=True) + "\n")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"part": PART, "records": records, "errors": err}, indent=1, sort_keys=True)
                           + "\n")
        write_doc(table)
        print(f"wrote {FIT.relative_to(ROOT)}, {RESULTS.relative_to(ROOT)}, {DOC.relative_to(ROOT)} "
              f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
