"""Resource table of the kernel library: Yosys ``synth_xilinx`` on every kernel's example configurations.

For every kernel in ``masec.hw_templates.manifest.registry()`` and every configuration in its
``SPEC.examples`` (``{"label", "ctx", "params"}``, optionally ``"files": {name: text or callable}``
for memory images the design reads; a string parameter naming such a file gets its absolute path), the kernel is rendered with its dependencies, read with native Yosys
(pyosys, ``read_verilog -sv``), its SV parameters set with ``chparam``, and synthesized with
``synth_xilinx -flatten``. Cell counts are grouped into LUT, FF, CARRY, DSP, BRAM (RAMB36
equivalents), LUTRAM and SRL.

Each synthesis runs in its own subprocess (a crash or a hang in one kernel does not stop the table);
a kernel whose synthesis fails is reported and skipped. Results go to

* ``bench/results/kernel_resources.json`` (merged: a ``--kernel`` run updates only that kernel),
* a markdown table in ``docs/kernels.md`` between the marker comments
  ``<!-- BEGIN kernel_resources -->`` / ``<!-- END kernel_resources -->`` (deterministic, no dates).

Usage::

    python bench/kernel_resources.py                 # every kernel, every example
    python bench/kernel_resources.py --kernel stream_fork --kernel mx_cast
    python bench/kernel_resources.py --quick         # first example of each kernel only
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "kernel_resources.json"
DOC = ROOT / "docs" / "kernels.md"
BEGIN, END = "<!-- BEGIN kernel_resources -->", "<!-- END kernel_resources -->"
COLUMNS = ("LUT", "FF", "CARRY", "DSP", "BRAM", "LUTRAM", "SRL")

# Runs inside the subprocess: argv[1] = JSON job {"files", "top", "params", "stat", "workdir"}.
_SYNTH = r"""
import json, sys
from pyosys import libyosys as ys
job = json.loads(sys.argv[1])
d = ys.Design()
for f in job["files"]:
    ys.run_pass(f"read_verilog -sv {f}", d)
if job["params"]:  # one chparam for all: intermediate parameter sets may be illegal ($error)
    ys.run_pass("chparam " + " ".join(f"-set {k} {v}" for k, v in job["params"]) + f" {job['top']}", d)
ys.run_pass(f"synth_xilinx -top {job['top']} -flatten", d)
ys.run_pass(f"tee -q -o {job['stat']} stat -json", d)
"""


def classify(cells: dict[str, int]) -> dict[str, float]:
    """Group Xilinx primitive counts into the table's columns."""
    out = dict.fromkeys(COLUMNS, 0)
    for cell, n in cells.items():
        if cell.startswith("LUT"):
            out["LUT"] += n
        elif cell.startswith("FD"):
            out["FF"] += n
        elif cell.startswith("CARRY"):
            out["CARRY"] += n
        elif cell.startswith("DSP48"):
            out["DSP"] += n
        elif cell.startswith("RAMB36"):
            out["BRAM"] += n
        elif cell.startswith("RAMB18"):
            out["BRAM"] += 0.5 * n
        elif cell.startswith("RAM"):  # RAM32M, RAM64M, RAM64X1D, RAM128X1S, ...
            out["LUTRAM"] += n
        elif cell.startswith(("SRL", "SRLC")):
            out["SRL"] += n
    return out


def _verilog_value(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        # Yosys's chparam cannot decode a minus sign: negative values as 32-bit two's complement
        return str(v) if v >= 0 else f"32'sh{v & 0xFFFFFFFF:08X}"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"unsupported SV parameter value {v!r}")


def synthesize(name: str, example: dict, workdir: Path, timeout: float) -> dict:
    """Render ``name`` with ``example`` into ``workdir`` and synthesize it; return the result record."""
    from masec.hw_templates.render import render_with_deps

    workdir.mkdir(parents=True, exist_ok=True)
    record = {"kernel": name, "label": example["label"], "ctx": example.get("ctx", {}),
              "params": example.get("params", {})}
    try:
        files = render_with_deps(name, workdir / "rtl", **example.get("ctx", {}))
    except Exception as exc:  # noqa: BLE001 - a broken template must not stop the table
        record["error"] = f"render failed: {type(exc).__name__}: {exc}"
        return record
    for fname, text in (example.get("files") or {}).items():  # text, or a callable returning it
        (workdir / fname).write_text(text() if callable(text) else text)
    top = files[-1].stem
    params = []
    for k, v in sorted(example.get("params", {}).items()):
        if isinstance(v, str) and (workdir / v).exists():
            v = str((workdir / v).resolve())
        params.append((k, _verilog_value(v)))
    stat = workdir / "stat.json"
    log = workdir / "yosys.log"
    job = {"files": [str(f) for f in files], "top": top, "params": params, "stat": str(stat)}
    t0 = time.time()
    try:
        with open(log, "w") as fh:
            proc = subprocess.run([sys.executable, "-c", _SYNTH, json.dumps(job)], cwd=workdir, stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        record["error"] = f"synthesis timed out after {timeout:.0f} s"
        return record
    record["seconds"] = round(time.time() - t0, 1)
    if proc.returncode != 0 or not stat.exists():
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if "ERROR" in ln or "rror" in ln]
        msg = tail[-1].strip() if tail else "see log"
        record["error"] = f"yosys failed (exit {proc.returncode}): " + msg.replace(str(workdir), "<workdir>")
        return record
    data = json.loads(stat.read_text())
    cells = data.get("design", {}).get("num_cells_by_type")
    if cells is None:  # older stat -json layout: the top module's entry
        cells = data["modules"][f"\\{top}"]["num_cells_by_type"]
    record["cells"] = dict(sorted(cells.items()))
    record.update(classify(cells))
    return record


def _fmt(v) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:g}"
    return str(int(v))


def markdown(results: dict[str, list[dict]]) -> str:
    lines = ["| kernel | configuration | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    failed = []
    for kernel in sorted(results):
        for r in results[kernel]:
            if "error" in r:
                failed.append(f"- `{kernel}` / {r['label']}: {r['error']}")
                continue
            lines.append(f"| `{kernel}` | {r['label']} | " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |")
    text = "\n".join(lines) + "\n"
    if failed:
        text += "\nNot synthesized:\n\n" + "\n".join(failed) + "\n"
    return text


def write_doc(results: dict[str, list[dict]], path: Path = DOC) -> None:
    table = markdown(results)
    block = f"{BEGIN}\n<!-- generated by bench/kernel_resources.py; do not edit by hand -->\n{table}{END}"
    if path.exists() and BEGIN in path.read_text() and END in path.read_text():
        text = path.read_text()
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        new = pre + block + post
    else:
        new = ("# Kernel resources\n\n"
               "Yosys `synth_xilinx -flatten` (native Yosys via pyosys) of every kernel's example\n"
               "configurations (`SPEC.examples`). LUT = LUT1..LUT6, FF = all flip-flops, CARRY = CARRY4/8,\n"
               "DSP = DSP48 slices, BRAM = RAMB36 equivalents (RAMB18 = 0.5), LUTRAM = distributed-RAM\n"
               "primitives (RAM32M, RAM64X1D, ...), SRL = shift-register LUTs. Estimates before place and\n"
               "route; Vivado will differ. Regenerate with `python bench/kernel_resources.py`.\n\n"
               f"{block}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def load_results(path: Path = RESULTS) -> dict[str, list[dict]]:
    if path.exists():
        return json.loads(path.read_text())
    return {}


def print_table(results: dict[str, list[dict]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency, but keep the bench usable
        print(markdown(results))
        return
    table = Table(title="masec kernel resources (yosys synth_xilinx)")
    table.add_column("kernel")
    table.add_column("configuration")
    for c in COLUMNS:
        table.add_column(c, justify="right")
    table.add_column("s", justify="right")
    for kernel in sorted(results):
        for r in results[kernel]:
            if "error" in r:
                table.add_row(kernel, r["label"], f"[red]{r['error'][:80]}[/red]", *[""] * len(COLUMNS))
            else:
                table.add_row(kernel, r["label"], *(_fmt(r[c]) for c in COLUMNS), str(r.get("seconds", "")))
    Console(width=max(Console().width, 140)).print(table)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", default=[], help="only this kernel (repeatable)")
    ap.add_argument("--quick", action="store_true", help="only the first example configuration of each kernel")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per synthesis (default 900)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep rendered RTL and yosys logs here")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update the JSON and the doc")
    args = ap.parse_args(argv)

    from masec.hw_templates.manifest import registry

    reg = registry()
    unknown = [k for k in args.kernel if k not in reg]
    if unknown:
        ap.error(f"unknown kernel(s) {', '.join(unknown)}; known: {', '.join(reg)}")
    names = args.kernel or list(reg)
    results = load_results()
    if not args.kernel:  # a full run drops kernels that no longer exist
        results = {k: v for k, v in results.items() if k in reg}
    tmp = tempfile.TemporaryDirectory(prefix="masec_res_") if args.workdir is None else None
    base = Path(tmp.name) if tmp else args.workdir
    failures = 0
    try:
        for name in names:
            examples = list(reg[name].examples)
            if not examples:
                print(f"{name}: no example configurations in its manifest entry; skipped", file=sys.stderr)
                continue
            if args.quick:
                examples = examples[:1]
            old = {r["label"]: r for r in results.get(name, [])}
            for i, ex in enumerate(examples):
                rec = synthesize(name, ex, base / name / f"ex{i}", args.timeout)
                status = rec.get("error") or ", ".join(f"{c} {_fmt(rec[c])}" for c in COLUMNS)
                print(f"{name} [{ex['label']}]: {status}", file=sys.stderr, flush=True)
                failures += "error" in rec
                old[ex["label"]] = rec
            order = [e["label"] for e in reg[name].examples]
            results[name] = sorted(old.values(), key=lambda r: order.index(r["label"]) if r["label"] in order
                                   else len(order))
            results[name] = [r for r in results[name] if r["label"] in order]
    finally:
        if tmp:
            tmp.cleanup()
    print_table({k: results[k] for k in names if k in results})
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        stable = {k: [{f: v for f, v in r.items() if f != "seconds"} for r in rs]  # no timings: deterministic
                  for k, rs in sorted(results.items())}
        RESULTS.write_text(json.dumps(stable, indent=1, sort_keys=True) + "\n")
        write_doc(results)
        print(f"wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}", file=sys.stderr)
    if failures:
        print(f"{failures} configuration(s) failed to synthesize (see above)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
