"""The cost of pipelining: fit and check the cost model's ``PIPE`` terms against Yosys.

A kernel built for a fast clock registers its datapath (SV parameter ``PIPE``, chosen from
``--clock`` by ``masec.passes.hw.pipeline``). ``compiler/cost_model.py``'s base model is fitted at
``PIPE = 0`` (``bench/cost_model.py``); this script fits what the registers add, per model group,
as ``c_pipe * PIPE + c_w * PIPE * width`` (``masec.cost_model.pipe_features``), on measured pairs:
the same configuration synthesized at ``PIPE = 0`` and at ``PIPE > 0`` in the same run.

The sweep: every fourth configuration of ``bench/cost_model.py``'s sweep of each kernel that has a
``PIPE`` parameter, at ``PIPE = 0`` and at the kernel's largest ``PIPE``, and every eighth also at
``PIPE = 1``. Every fourth such configuration is held out of the fit. It writes the fitted terms
into ``compiler/cost_model.json`` (``groups.<group>.pipe``), every pair with its Yosys counts and
estimates into ``bench/results/cost_model_pipe.json``, and the held-out table into
``docs/cost_model.md`` between ``<!-- BEGIN cost_model_pipe -->`` and ``<!-- END cost_model_pipe -->``.

Yosys runs the same way as ``bench/cost_model.py`` (cache, ``--export DIR``, ``--run-jobs DIR
RESULTS`` on a machine with more cores, ``--import DIR RESULTS``)::

    python bench/cost_model_pipe.py --export /tmp/pipe_jobs          # here
    python bench/cost_model_pipe.py --run-jobs /tmp/pipe_jobs /tmp/pipe_res --jobs 32   # there
    python bench/cost_model_pipe.py --import /tmp/pipe_jobs /tmp/pipe_res            # here: fit, write
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import cost_model as base  # noqa: E402  (bench/cost_model.py: the sweep, the job runner)

RESULTS = ROOT / "bench" / "results" / "cost_model_pipe.json"
BEGIN, END = "<!-- BEGIN cost_model_pipe -->", "<!-- END cost_model_pipe -->"


def max_pipe(kernel: str) -> int | None:
    """The largest ``PIPE`` of ``kernel``, or None when it has no such parameter."""
    import importlib

    from masec.hw_templates.manifest import kernel as spec_of

    spec = spec_of(kernel)
    if not any(p.name == "PIPE" for p in spec.params):
        return None
    if "max_pipe" in spec.extra:
        return int(spec.extra["max_pipe"])
    mod = importlib.import_module(spec.model.split(":")[0]) if spec.model else None
    return int(getattr(mod, "MAX_PIPE", 3))


def sweep(kernels=()) -> list[dict]:
    """The pairs: ``{"kernel", "label", "ctx", "params", "files", "pair", "held_out"}``, PIPE 0 first."""
    out = []
    count: dict[str, int] = {}
    for cfg in base.sweep(False, tuple(kernels)):
        k = cfg["kernel"]
        top = max_pipe(k)
        i = count.get(k, 0)
        count[k] = i + 1
        if top is None or top < 1 or i % 4:
            continue
        j = i // 4
        pipes = [0, top] + ([1] if j % 2 == 0 and top > 1 else [])
        for pipe in pipes:
            out.append({**cfg, "label": f"{cfg['label']} PIPE{pipe}", "pair": f"{k}:{cfg['label']}",
                        "params": {**cfg["params"], "PIPE": pipe}, "held_out": j % 4 == 2})
    return out


def fit(records: list[dict]) -> dict:
    """Per model group: least-squares PIPE terms on the training pairs' measured increase over PIPE 0."""
    import numpy as np

    from masec.cost_model import MODEL_GROUP, pipe_features

    rows: dict[str, list] = {}
    zero = {r["pair"]: r for r in records if r["params"]["PIPE"] == 0 and "yosys" in r}
    for r in records:
        z = zero.get(r["pair"])
        if r["params"]["PIPE"] == 0 or r["held_out"] or "yosys" not in r or z is None:
            continue
        rows.setdefault(MODEL_GROUP.get(r["kernel"], r["kernel"]), []).append((r, z))
    out = {}
    for group, pairs in sorted(rows.items()):
        names = ["pipe", "pipe_w"]
        x = np.array([[pipe_features(r["kernel"], r["params"])[n] for n in names] for r, _ in pairs])
        out[group] = {"features": names, "points": len(pairs)}
        for res in ("LUT", "FF"):
            y = np.array([r["yosys"][res] - z["yosys"][res] for r, z in pairs], dtype=float)
            w = 1.0 / np.array([max(r["yosys"][res], 8) for r, _ in pairs], dtype=float)  # relative to the total
            sol, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
            out[group][res] = [round(float(c), 6) for c in sol]
    return out


def errors(records: list[dict]) -> dict:
    """Per kernel, held-out PIPE > 0 configurations: |error| % of the estimate with and without the
    PIPE terms, and what the registers measured."""
    import numpy as np

    from masec.cost_model import estimate, load_fit, set_fit

    zero = {r["pair"]: r for r in records if r["params"]["PIPE"] == 0 and "yosys" in r}
    fitted = load_fit()
    no_pipe = {**fitted, "groups": {g: {k: v for k, v in c.items() if k != "pipe"}
                                    for g, c in fitted.get("groups", {}).items()}}
    table: dict[str, dict] = {}
    for r in records:
        if r["params"]["PIPE"] == 0 or not r["held_out"] or "yosys" not in r or r["pair"] not in zero:
            continue
        y, z = r["yosys"], zero[r["pair"]]["yosys"]
        set_fit(no_pipe)
        e0 = estimate(r["kernel"], r["params"])
        set_fit(fitted)
        e1 = estimate(r["kernel"], r["params"])
        t = table.setdefault(r["kernel"], {"n": 0, "lut": [], "ff": [], "lut0": [], "ff0": [], "dlut": [], "dff": []})
        t["n"] += 1
        for res, a, b in (("LUT", "lut", "lut0"), ("FF", "ff", "ff0")):
            t[a].append(100.0 * abs(e1[res] - y[res]) / max(y[res], 1))
            t[b].append(100.0 * abs(e0[res] - y[res]) / max(y[res], 1))
        t["dlut"].append(100.0 * (y["LUT"] - z["LUT"]) / max(z["LUT"], 1))
        t["dff"].append(100.0 * (y["FF"] - z["FF"]) / max(z["FF"], 1))
    set_fit(fitted)
    return {k: {"held_out": t["n"],
                **{f"{c}_{s}": round(float(f(t[c])), 1) for c in ("lut", "ff", "lut0", "ff0")
                   for s, f in (("mean", np.mean), ("max", np.max))},
                "added_LUT_pct_mean": round(float(np.mean(t["dlut"])), 1),
                "added_FF_pct_mean": round(float(np.mean(t["dff"])), 1)}
            for k, t in sorted(table.items())}


def markdown(err: dict, n: int) -> str:
    lines = [f"{n} configurations (pairs at PIPE 0 and PIPE > 0) synthesized with `masec synth`'s flow "
             f"(part {base.PART}); held out = every fourth pair of each kernel. Error of the estimate of the "
             "held-out PIPE > 0 configurations, with the PIPE terms and with the PIPE 0 model alone; "
             "added = what the registers measured over PIPE 0.", "",
             "| kernel | held out | LUT mean / max % | FF mean / max % | without PIPE terms: LUT / FF max % "
             "| added LUT % | added FF % |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k, e in err.items():
        lines.append(f"| `{k}` | {e['held_out']} | {e['lut_mean']:.1f} / {e['lut_max']:.1f} | "
                     f"{e['ff_mean']:.1f} / {e['ff_max']:.1f} | {e['lut0_max']:.1f} / {e['ff0_max']:.1f} | "
                     f"{e['added_LUT_pct_mean']:+.1f} | {e['added_FF_pct_mean']:+.1f} |")
    return "\n".join(lines) + "\n"


def write_doc(table: str) -> None:
    block = f"{BEGIN}\n<!-- generated by bench/cost_model_pipe.py; do not edit by hand -->\n{table}{END}"
    text = base.DOC.read_text()
    if BEGIN not in text:
        text = text.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    pre, rest = text.split(BEGIN, 1)
    base.DOC.write_text(pre + block + rest.split(END, 1)[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", default=[], help="only this kernel (repeatable)")
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--budget", type=float, default=1e9, help="--run-jobs: start no job after this many seconds")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--list", action="store_true", help="print the sweep and stop")
    ap.add_argument("--export", type=Path, metavar="DIR")
    ap.add_argument("--run-jobs", type=Path, nargs=2, metavar=("DIR", "RESULTS"))
    ap.add_argument("--import", dest="import_", type=Path, nargs=2, metavar=("DIR", "RESULTS"))
    args = ap.parse_args(argv)
    if args.run_jobs:
        base.run_jobs(args.run_jobs[0], args.run_jobs[1], args.jobs, args.budget)
        return 0
    from masec.synth import cache_dir

    configs = sweep(args.kernel)
    if args.list:
        for c in configs:
            print(c["kernel"], c["label"], "(held out)" if c["held_out"] else "")
        print(f"{len(configs)} configurations", file=sys.stderr)
        return 0
    cache = cache_dir()
    if args.export:
        print(f"{base.export_jobs(configs, args.export, cache)} uncached configurations exported to {args.export}",
              file=sys.stderr)
        return 0
    results = base.import_jobs(configs, *args.import_) if args.import_ else {}
    todo = [i for i in range(len(configs)) if i not in results]
    with tempfile.TemporaryDirectory(prefix="masec_pipe_") as tmp, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futs = {pool.submit(base.synth_config, configs[i], Path(tmp) / f"c{i}", cache, args.timeout,
                            bool(args.import_)): i for i in todo}
        for fut in as_completed(futs):
            i = futs[fut]
            results[i] = fut.result()
            r = results[i]
            print(f"{configs[i]['kernel']} {configs[i]['label']}: "
                  + (r.get("error") or " ".join(f"{k} {v}" for k, v in r["yosys"].items())), file=sys.stderr)
    records = []
    for i, c in enumerate(configs):
        rec = {"kernel": c["kernel"], "label": c["label"], "pair": c["pair"], "held_out": c["held_out"],
               "params": dict(sorted(c["params"].items()))}
        rec.update({"error": results[i]["error"]} if "error" in results[i] else {"yosys": results[i]["yosys"]})
        records.append(rec)
    from masec.cost_model import estimate, load_fit, set_fit

    terms = fit(records)
    fitted = load_fit()
    groups = {g: {k: v for k, v in c.items() if k != "pipe"} for g, c in fitted.get("groups", {}).items()}
    for g, t in terms.items():
        if g in groups:
            groups[g]["pipe"] = t
    fitted = {**fitted, "groups": groups}
    set_fit(fitted)
    for r in records:
        if "yosys" in r:
            r["estimate"] = {k: estimate(r["kernel"], r["params"])[k] for k in ("LUT", "FF", "DSP", "BRAM")}
    err = errors(records)
    table = markdown(err, sum("yosys" in r for r in records))
    print(table)
    for r in records:
        if "error" in r:
            print(f"not synthesized: {r['kernel']} {r['label']}: {r['error']}", file=sys.stderr)
    if not args.no_write:
        base.FIT.write_text(json.dumps(fitted, indent=1, sort_keys=True) + "\n")
        RESULTS.write_text(json.dumps({"part": base.PART, "records": records, "errors": err}, indent=1,
                                      sort_keys=True) + "\n")
        write_doc(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
