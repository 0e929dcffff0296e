"""What a search shows and writes: the rich progress bar and summary table, precision.toml,
search.json, nodes.md (per-node table), pareto.png and the knee of a Pareto front."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path


def mask_url(url: str | None) -> str | None:
    """A storage URL without its password."""
    if url is None:
        return None
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def knee(front: list[dict]) -> dict:
    """The point of a Pareto front farthest from the line through its ends (normalized axes)."""
    if len(front) <= 2:
        return front[0] if len(front) == 1 else min(front, key=lambda p: p["loss"])
    xs = [p["avg_bits"] for p in front]
    ys = [p["loss"] for p in front]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx, sy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    a, b = front[0], front[-1]
    ax, ay, bx, by = (a["avg_bits"] - x0) / sx, (a["loss"] - y0) / sy, (b["avg_bits"] - x0) / sx, (b["loss"] - y0) / sy
    norm = math.hypot(bx - ax, by - ay) or 1.0

    def dist(p):
        px, py = (p["avg_bits"] - x0) / sx, (p["loss"] - y0) / sy
        return abs((bx - ax) * (ay - py) - (ax - px) * (by - ay)) / norm
    return max(front, key=dist)


class UI:
    """A rich progress bar on stderr (or nothing with ``enabled=False``)."""

    def __init__(self, enabled: bool, console=None):
        self.enabled = enabled
        self.progress = None
        self.console = console
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.console = console or Console(stderr=True)
            self.progress = Progress(TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console,
                                     transient=False)
            self.progress.start()
        self._last = None

    def task(self, name: str, total: int):
        if not self.progress:
            return None
        self._last = self.progress.add_task(name, total=total, info="")
        return self._last

    def advance(self, task):
        if self.progress and task is not None:
            self.progress.advance(task)

    def finish(self, task):
        if self.progress and task is not None:
            t = self.progress.tasks[[x.id for x in self.progress.tasks].index(task)]
            self.progress.update(task, total=t.completed)

    def point(self, p: dict, metric_name: str):
        if self.progress and self._last is not None:
            self.progress.update(self._last, info=f"last: {p['avg_bits']:.3f} bits, {metric_name} {p['metric']:.5g}")

    def stop(self):
        if self.progress:
            self.progress.stop()
            self.progress = None

    def summary(self, res):
        self.stop()
        if not self.enabled:
            return
        from rich.table import Table

        t = Table(title=f"masec search ({res.metric_name}, {'higher' if res.higher_is_better else 'lower'} is better)")
        for col in ("point", "avg bits", res.metric_name, "loss"):
            t.add_column(col, justify="right" if col != "point" else "left")
        t.add_row("float32", "32", f"{res.float32_metric:.5g}", "0")
        fmt_loss = (lambda v: f"{v * 100:+.2f}%") if (res.max_loss is None or res.max_loss.relative) else (lambda v: f"{v:+.4g}")
        for k, u in res.uniform.items():
            t.add_row(f"uniform {k}", f"{u['avg_bits']:.3f}", f"{u['metric']:.5g}", fmt_loss(u["loss"]))
        c = res.chosen
        t.add_row(f"[bold]chosen ({c['source']})", f"[bold]{c['avg_bits']:.3f}", f"[bold]{c['metric']:.5g}",
                  f"[bold]{fmt_loss(c['loss'])}")
        self.console.print(t)
        if res.max_bits is None and c.get("within_max_loss") is False:
            self.console.print(f"[yellow]no evaluated point is within max loss {res.max_loss}: chose the most "
                               f"accurate one; raise --max-loss or the candidates' bits")
        budget = f"max bits {res.max_bits:g}" if res.max_bits is not None else f"max loss {res.max_loss}"
        self.console.print(f"{len(res.points)} points, {len(res.pareto)} on the Pareto front, "
                           f"{budget}, {res.wall_s:.1f} s; wrote {res.out_dir}/precision.toml")


def nodes_table(res, sens, site_assign) -> str:
    space = res.space
    lines = [f"# Chosen precision ({res.metric_name}: {res.chosen['metric']:.6g}, float32 {res.float32_metric:.6g}, "
             f"{res.chosen['avg_bits']:.4f} average bits)", "",
             "| tensor | node | op | elements | format | block | bits | group | sensitivity |",
             "|---|---|---|---:|---|---:|---:|---|---:|"]
    for s in space.sites:
        c = site_assign[s.key]
        g = space.site_group[s.key]
        node = ", ".join(s.paths) if s.paths else "(all linear inputs)"
        if s.kind == "act" and s.consumers:
            node += " → " + ", ".join(s.consumers)
        lines.append(f"| {s.kind} | `{node}` | {s.op} | {s.numel} | {c.fmt} | {c.block} | {c.bits:.4g} | `{g}` | "
                     f"{sens[g][c.key]:.3g} |")
    lines += ["", "sensitivity: relative output error on the calibration data with only that group quantized "
              "(the additive model's unit)."]
    return "\n".join(lines) + "\n"


def plot_spec(res) -> dict:
    """The plain data the Pareto plot draws (JSON-serializable)."""
    lim = None
    if res.max_loss is not None:
        sign = -1 if res.higher_is_better else 1
        lim = (res.float32_metric + sign * res.max_loss.value * (abs(res.float32_metric) if res.max_loss.relative else 1))
    return {"points": [{"avg_bits": p["avg_bits"], "metric": p["metric"], "source": p["source"]} for p in res.points],
            "pareto": [{"avg_bits": p["avg_bits"], "metric": p["metric"]} for p in res.pareto],
            "uniform": {k: {"avg_bits": u["avg_bits"], "metric": u["metric"]} for k, u in res.uniform.items()},
            "float32": res.float32_metric, "max_loss_line": lim,
            "max_loss_label": str(res.max_loss) if res.max_loss is not None else None,
            "max_bits": res.max_bits, "chosen": {"avg_bits": res.chosen["avg_bits"], "metric": res.chosen["metric"]},
            "metric_name": res.metric_name}


def plot(res, path: Path) -> None:
    """Draw the Pareto plot in a separate interpreter: matplotlib's pybind11 extensions can fail in a
    process that already loaded another pybind11 module (pyosys); the plot must not depend on that."""
    import json
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(plot_spec(res), fh)   # NaN/inf kept (json allows them); matplotlib skips them
    try:
        proc = subprocess.run([sys.executable, "-m", "masec.passes.search.report", fh.name, str(path)],
                              capture_output=True, text=True, timeout=300)
    finally:
        Path(fh.name).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["plotting failed"])[-1])


def draw(spec: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    colors = {"ilp": "tab:orange", "optuna": "tab:blue"}
    for src in ("optuna", "ilp"):
        pts = [p for p in spec["points"] if p["source"] == src]
        if pts:
            ax.scatter([p["avg_bits"] for p in pts], [p["metric"] for p in pts], s=14, alpha=0.6,
                       c=colors[src], label=f"{src} ({len(pts)})")
    if spec["pareto"]:
        ax.plot([p["avg_bits"] for p in spec["pareto"]], [p["metric"] for p in spec["pareto"]], "-", c="k", lw=1,
                label="Pareto front")
    for k, u in spec["uniform"].items():
        ax.scatter([u["avg_bits"]], [u["metric"]], marker="s", s=40, c="tab:gray")
        ax.annotate(f"uniform {k}", (u["avg_bits"], u["metric"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.axhline(spec["float32"], ls=":", c="tab:green", label="float32")
    if spec["max_loss_line"] is not None:
        ax.axhline(spec["max_loss_line"], ls="--", c="tab:red", lw=0.8, label=f"max loss {spec['max_loss_label']}")
    if spec["max_bits"] is not None:
        ax.axvline(spec["max_bits"], ls="--", c="tab:purple", lw=0.8, label=f"max bits {spec['max_bits']:g}")
    c = spec["chosen"]
    ax.scatter([c["avg_bits"]], [c["metric"]], marker="*", s=160, c="tab:red", zorder=5, label="chosen")
    finite = [p["metric"] for p in spec["points"] if p["metric"] is not None and math.isfinite(p["metric"])] + \
        [spec["float32"]] + [u["metric"] for u in spec["uniform"].values()
                             if u["metric"] is not None and math.isfinite(u["metric"])]
    if finite:
        lo, hi = min(finite), max(finite)
        ref = abs(spec["float32"]) or 1.0
        if hi > lo and (hi - lo) / ref > 50:
            ax.set_yscale("symlog" if lo <= 0 else "log")
    ax.set_xlabel("average bits per element (incl. block scales)")
    ax.set_ylabel(spec["metric_name"])
    ax.set_title("masec search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def write_all(res, sens, site_assign, storage_url, study_name, by, seed, dump_precision) -> dict:
    out = Path(res.out_dir)
    files = {}
    header = (f"masec search: {res.chosen['avg_bits']:.4f} average bits, {res.metric_name} "
              f"{res.chosen['metric']:.6g} (float32 {res.float32_metric:.6g}), by={by}, max loss {res.max_loss}")
    files["precision"] = out / "precision.toml"
    files["precision"].write_text(dump_precision(res.spec, header=header), encoding="utf-8")
    space = res.space
    doc = {
        "metric_name": res.metric_name,
        "higher_is_better": res.higher_is_better,
        "float32_metric": res.float32_metric,
        "max_loss": None if res.max_loss is None else str(res.max_loss),
        "max_loss_value": None if res.max_loss is None else res.max_loss.value,
        "max_loss_relative": None if res.max_loss is None else res.max_loss.relative,
        "max_bits": res.max_bits,
        "loss_definition": "(metric - float32_metric) / |float32_metric| (sign flipped when higher is better)"
        if res.max_loss is None or res.max_loss.relative else "metric - float32_metric (sign flipped when higher is better)",
        "chosen": {**res.chosen,
                   "sites": {s.key: site_assign[s.key].key for s in space.sites}},
        "uniform": res.uniform,
        "emulation": getattr(res, "emulation", "hardware"),
        "parallelism": getattr(res, "parallelism", 4),
        "weight_rounding": getattr(res, "weight_rounding", "nearest"),
        "by": by,
        "seed": seed,
        "space": {"element_types": sorted({c.fmt for c in space.cands}),
                  "block_sizes": sorted({c.block for c in space.cands}),
                  "groups": space.groups,
                  "sites": [{"key": s.key, "kind": s.kind, "path": s.path, "aliases": list(s.aliases), "op": s.op,
                             "numel": s.numel, "consumers": list(s.consumers), "layer": s.layer} for s in space.sites],
                  "traced": space.traced},
        "study": None if storage_url is None else {"storage": mask_url(storage_url), "name": study_name},
        "wall_s": round(res.wall_s, 3),
        "points": res.points,
        "pareto": [{"avg_bits": p["avg_bits"], "metric": p["metric"], "loss": p["loss"]} for p in res.pareto],
    }
    files["json"] = out / "search.json"
    files["json"].write_text(json.dumps(_clean(doc), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    files["nodes"] = out / "nodes.md"
    files["nodes"].write_text(nodes_table(res, sens, site_assign), encoding="utf-8")
    files["plot"] = out / "pareto.png"
    try:
        plot(res, files["plot"])
    except Exception as exc:  # a plot must never lose the search
        print(f"masec search: could not draw {files['plot']}: {exc}", file=sys.stderr)
    files["log"] = out / "search.log"
    return files


if __name__ == "__main__":   # python -m masec.passes.search.report SPEC.json OUT.png (used by plot())
    import json as _json

    draw(_json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
