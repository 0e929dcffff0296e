"""The HTML report of a compiled design: ``report/index.html`` and ``report/report.json`` beside it.

Reads the output folder only: ``report/report.json`` (written by ``masec compile``: per node its
formats, lanes, estimated resources from :mod:`masec.cost_model`, ideal and predicted cycles) and,
when ``masec synth`` ran, ``report/synth.json`` (Yosys resources per instance). :func:`build`
turns them into one typed structure (:class:`Report`); the template
``hw_templates/report/index.html.j2`` prints it; three plots (matplotlib, Agg, PNG with no
metadata, drawn in a fresh interpreter) go beside it: bits per node, resources per op type, and the
pipeline balance (cycles per node against the bottleneck). Deterministic: the same folder gives the
same bytes.

    render_report(Path("out/mlp"))   # after compile (estimates) and again after synth (with Yosys)
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from masec.parts import RESOURCES, fits, lookup_part

PLOTS = (("bits.png", "Average bits per element of each node's output (and weight) stream, scales included"),
         ("resources.png", "Estimated resources per op type, as a share of the part"),
         ("balance.png", "Pipeline balance: ideal cycles per node against the bottleneck"))


@dataclass(frozen=True)
class NodeRow:
    node: str
    instance: str
    op: str
    kernel: str
    out_format: str
    param_formats: dict
    lanes: int
    bits: float                    # average bits per output element (element + scale / block)
    weight_bits: float | None      # the same for the weight, when the node has one
    estimate: dict                 # LUT, FF, DSP, BRAM from the cost model
    yosys: dict | None             # the same from masec synth, when it ran
    ideal_cycles: int
    start: int
    finish: int
    bottleneck: bool


@dataclass(frozen=True)
class Totals:
    label: str
    resources: dict
    utilization: dict              # fraction of the part per resource
    fits: bool
    limiting: str


@dataclass(frozen=True)
class Report:
    title: str
    settings: str
    part: str
    capacity: dict
    nodes: tuple[NodeRow, ...]
    totals: tuple[Totals, ...]
    bottleneck: str
    bottleneck_cycles: int
    predicted_cycles: int
    accuracy: tuple[dict, ...]
    plots: tuple[tuple[str, str], ...] = field(default=PLOTS)
    synthesized: bool = False
    tool: str = ""
    missing: tuple[str, ...] = ()       # kernels without a cost model (left out of the estimated total)
    rates: tuple[str, ...] = ()         # rows/s: predicted, measured by masec sim, at the post-route Fmax


def _bits_of(fmt_text: str) -> float:
    """Average bits per element of ``mxint8/B32`` style text: element bits + 8-bit scale / block."""
    from masec.formats import parse_format

    name, _, block = fmt_text.partition("/B")
    if name.startswith("int") and not block:
        return float(name[3:] or 0)
    try:
        el_bits = parse_format(name).element.bits
    except Exception:  # noqa: BLE001 - a format the formats registry does not parse: no bar
        return 0.0
    return round(el_bits + 8.0 / int(block), 4) if block else float(el_bits)


def build(out: Path) -> Report:
    """The report structure of the output folder ``out``."""
    out = Path(out)
    rep = json.loads((out / "report" / "report.json").read_text())
    synth_path = out / "report" / "synth.json"
    synth = json.loads(synth_path.read_text()) if synth_path.exists() else None
    cfg = rep.get("config", {})
    part = lookup_part(cfg.get("part") or "xcu250")
    by_inst = {}
    if synth:
        for r in synth.get("instances", []):
            by_inst[r["name"].removeprefix("u_")] = {k: r[k] for k in RESOURCES}
    nodes = []
    for r in rep["nodes"]:
        wfmt = r.get("param_formats", {}).get("weight")
        nodes.append(NodeRow(
            node=r["node"], instance=r["instance"], op=r["op"], kernel=r["kernel"], out_format=r["format"],
            param_formats=dict(r.get("param_formats", {})), lanes=r["lanes"], bits=_bits_of(r["format"]),
            weight_bits=_bits_of(wfmt) if wfmt else None, estimate=dict(r.get("estimate") or {}),
            yosys=by_inst.get(r["instance"]), ideal_cycles=r["ideal_cycles"],
            start=r.get("predicted_start", 0), finish=r.get("predicted_finish", 0),
            bottleneck=r["instance"] == rep.get("bottleneck")))
    totals = []
    est_total = rep.get("estimate_total")
    if est_total:
        f = fits(est_total, part)
        totals.append(Totals("estimated (cost model)", est_total, f["utilization"], f["fits"], f["limiting"]))
    if synth:
        f = synth["fits"]
        totals.append(Totals("Yosys synth_xilinx", synth["total"], f["utilization"], f["fits"], f["limiting"]))
    rates = _rates(out, rep, synth)
    settings = (f"precision {cfg.get('precision_label', cfg.get('format', ''))}, parallelism "
                f"{cfg.get('parallelism', '')}, clock {cfg.get('clock_ns', '')} ns")
    return Report(title=Path(cfg.get("model_file", "model")).name, settings=settings, part=part.part,
                  capacity=part.capacity(), nodes=tuple(nodes), totals=tuple(totals),
                  bottleneck=rep.get("bottleneck", ""), bottleneck_cycles=rep.get("bottleneck_cycles", 0),
                  predicted_cycles=rep.get("predicted_cycles", 0), accuracy=tuple(rep.get("accuracy") or ()),
                  synthesized=synth is not None, tool=synth.get("tool", "") if synth else "",
                  missing=tuple(rep.get("estimate_missing") or ()), rates=rates)


def _rates(out: Path, rep: dict, synth: dict | None) -> tuple[str, ...]:
    """Rows per second: the cycle model's at the compiled clock, then what ``masec sim`` measured
    (report/sim.json, which also has the post-route Fmax when it was known then), else the cycle
    model's at the Fmax that ``masec synth`` measured."""
    from masec.throughput import describe, throughput

    lines = []
    t = rep.get("throughput")
    if t:
        lines.append(describe(t, "Predicted (cycle model)"))
    sim_path = out / "report" / "sim.json"
    measured = json.loads(sim_path.read_text()).get("throughput", {}) if sim_path.exists() else {}
    lines += [describe(m, f"Measured by masec sim, {k}") for k, m in sorted(measured.items())]
    fmax = (synth or {}).get("fmax_mhz")
    if t and fmax and "post-route Fmax" not in measured:
        lines.append(describe(throughput(t["bottleneck_cycles"], t["latency_cycles"], float(fmax),
                                         t["rows_per_inference"]), "Predicted at the post-route Fmax"))
    return tuple(lines)


def _plot_spec(r: Report) -> dict:
    ops: dict[str, dict] = {}
    for n in r.nodes:
        acc = ops.setdefault(n.op or n.kernel, dict.fromkeys(RESOURCES, 0))
        for k in RESOURCES:
            acc[k] += n.estimate.get(k, 0)
    return {"nodes": [n.instance for n in r.nodes], "bits": [n.bits for n in r.nodes],
            "weight_bits": [n.weight_bits or 0.0 for n in r.nodes], "cycles": [n.ideal_cycles for n in r.nodes],
            "bottleneck": [n.bottleneck for n in r.nodes], "ops": ops, "capacity": r.capacity}


def _draw(spec: dict, folder: Path) -> None:
    """Draw the three PNGs (runs in its own interpreter, see :func:`render_report`)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "masec"
    import matplotlib.pyplot as plt

    names = spec["nodes"]
    h = max(3.0, 0.28 * len(names) + 1.2)
    y = range(len(names))

    fig, ax = plt.subplots(figsize=(7.5, h))
    ax.barh([i + 0.2 for i in y], spec["bits"], height=0.4, label="output (activation)", color="#4c72b0")
    ax.barh([i - 0.2 for i in y], spec["weight_bits"], height=0.4, label="weight", color="#dd8452")
    ax.set_yticks(list(y), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("average bits per element (element + 8-bit scale / block)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / "bits.png", dpi=90, metadata={"Software": None})
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    res = list(spec["capacity"])
    bottom = [0.0] * len(res)
    cmap = plt.get_cmap("tab20")
    for i, (op, vals) in enumerate(sorted(spec["ops"].items())):
        share = [100.0 * vals[k] / spec["capacity"][k] for k in res]
        ax.bar(res, share, bottom=bottom, label=op, color=cmap(i % 20))
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_ylabel("% of the part (estimated)")
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(folder / "resources.png", dpi=90, metadata={"Software": None})
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, h))
    colors = ["#c44e52" if b else "#55a868" for b in spec["bottleneck"]]
    ax.barh(list(y), spec["cycles"], color=colors)
    top = max(spec["cycles"], default=0)
    ax.axvline(top, color="#c44e52", linestyle="--", linewidth=1, label=f"bottleneck: {top} cycles")
    ax.set_yticks(list(y), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ideal cycles per inference")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / "balance.png", dpi=90, metadata={"Software": None})
    plt.close(fig)


def _draw_main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    _draw(spec, Path(sys.argv[2]))


def _json_doc(r: Report) -> dict:
    d = asdict(r)
    d["plots"] = [{"file": f, "caption": c} for f, c in r.plots]
    return d


def add_estimates(out: Path, ir) -> None:
    """Put the cost model's estimate of every node (``"estimate"``) and of the whole design with its
    FIFOs and register slices (``"estimate_total"``) into ``report/report.json`` (compile time: the IR is at hand)."""
    from masec.cost_model import edge_estimates, estimate_instance
    from masec.errors import MasecError

    path = Path(out) / "report" / "report.json"
    rep = json.loads(path.read_text())
    total, missing = dict.fromkeys(RESOURCES, 0), set()
    per_inst = {}
    for inst in ir.instances.values():
        if inst.is_port:
            continue
        try:   # a kernel the cost model does not know yet is reported, not fatal
            per_inst[inst.name] = {k: v for k, v in estimate_instance(inst).items() if k in RESOURCES}
        except MasecError:
            missing.add(inst.kernel)
    per_inst.update({k: {r: v for r, v in est.items() if r in RESOURCES} for k, est in edge_estimates(ir).items()})
    for est in per_inst.values():
        for k in RESOURCES:
            total[k] += est[k]
    for r in rep["nodes"]:
        r["estimate"] = per_inst.get(r["instance"])
    rep["estimate_total"] = {k: (int(v) if float(v).is_integer() else v) for k, v in total.items()}
    rep["estimate_missing"] = sorted(missing)
    path.write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")


def render_report(out: Path, ir=None) -> Path:
    """Write ``report/index.html``, the plots and the report structure into ``report/report.json``
    (its ``"html"`` entry) of the output folder ``out``; return the HTML path. With the hardware IR
    ``ir`` (compile time) the cost model's estimates are added first (:func:`add_estimates`)."""
    import jinja2

    import masec.hw_templates

    out = Path(out)
    folder = out / "report"
    if ir is not None:
        add_estimates(out, ir)
    r = build(out)
    with tempfile.TemporaryDirectory(prefix="masec_plot_") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps(_plot_spec(r)))
        # a fresh interpreter: a process that loaded pyosys breaks matplotlib's pybind11 extensions
        proc = subprocess.run([sys.executable, "-c", "from masec.report_html import _draw_main; _draw_main()",
                               str(spec), str(folder)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"report plots failed: {proc.stderr.strip().splitlines()[-1:]}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(masec.hw_templates.__file__).parent / "report")),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template("index.html.j2").render(r=r, resources=RESOURCES)
    (folder / "index.html").write_text(html)
    rep_path = folder / "report.json"
    rep = json.loads(rep_path.read_text())
    rep["html"] = _json_doc(r)
    rep_path.write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    return folder / "index.html"
