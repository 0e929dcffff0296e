"""Write a compiled design's output tree (see README "What compile writes").

Everything is derived from the annotated graph, the design and the reference values, in a fixed
order, with no timestamps: the same model and options give byte-identical files.
"""
from __future__ import annotations

import json
from pathlib import Path

import masec
from masec.errors import MasecError
from masec.hw_templates.render import render, render_script, render_template
from masec.lowering import lowering_for
from masec.meta import meta
from masec.reference import accuracy, output_nodes
from masec.sim.mxstream import mx_beats
from masec.sim.vectors import StreamVectors, VectorFile


def _modules(gm, design) -> list:
    """Every SV module the design needs, each once, dependencies first, top last."""
    mods: dict[str, object] = {}

    def add(r):
        if r.module in mods and mods[r.module].text != r.text:
            raise MasecError(f"internal: two different renderings of module {r.module}")
        mods.setdefault(r.module, r)

    for inst in design.instances:
        if "render" in inst:
            kernel_name, module, ctx = inst["render"]
            add(render(kernel_name, module, **ctx))
    for node in gm.graph.nodes:
        m = meta(node)
        if m.kernel is not None:
            for r in lowering_for(node).render(m.kernel):
                add(r)
    top = render_template("top.sv.j2", design.top, ports=design.ports, wires=design.wires,
                          assigns=design.assigns, instances=design.instances)
    add(top)
    return list(mods.values())


def _vectors(gm, design, values, config) -> VectorFile:
    inputs, outputs = {}, {}
    for port in design.inputs:
        v = values[port["node"]]
        inputs[port["name"]] = StreamVectors(("data", "scale"), mx_beats(v.codes, v.scales, port["width"], port["lanes"]),
                                             {"data": (port["lanes"], port["width"])})
    for port in design.outputs:
        v = values[port["node"]]
        beats = mx_beats(v.codes, v.scales, port["width"], port["lanes"])
        per_block = v.fmt.block_size // port["lanes"]
        nblocks = v.codes.shape[1]
        notes = [f"{port['node']}: row {i // (per_block * nblocks)}, block {(i // per_block) % nblocks}, "
                 f"beat {i % per_block} of the block" for i in range(len(beats))]
        outputs[port["name"]] = StreamVectors(("data", "scale"), beats, {"data": (port["lanes"], port["width"])}, notes)
    ideal = max([meta(n).kernel.ideal_cycles for n in gm.graph.nodes if meta(n).kernel] +
                [len(s.beats) for s in (*inputs.values(), *outputs.values())])
    return VectorFile(inputs, outputs, seed=config.seed, ideal_cycles=ideal)


def report_rows(gm) -> list[dict]:
    rows = []
    for node in gm.graph.nodes:
        m = meta(node)
        k = m.kernel
        rows.append({
            "node": node.name, "op": m.op, "shape": list(m.shape or ()),
            "format": m.formats["out"].name if "out" in m.formats else "",  # noqa: E501
            "param_formats": {p: f.name for p, f in sorted(m.formats.items()) if p != "out"},
            "kernel": k.kernel if k else "", "module": k.module if k else "",
            "parameters": {a: b for a, b in k.params} if k else {},
            "ideal_cycles": k.ideal_cycles if k else 0, "source": m.source,
        })
    return rows


def _report_md(rows, config, vectors: VectorFile, acc: list[dict]) -> str:
    lines = [f"# masec compile report: {Path(config.model_file).name}", "",
             f"format {config.format}, block {config.block_size}, rounding {config.rounding}, "
             f"parallelism {config.parallelism}, part {config.part}, clock {config.clock_ns} ns", "",
             "| node | op | shape | format | kernel | parameters | ideal cycles |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items() if not str(v).endswith(".mem")) or "-"
        fmts = r["format"] + "".join(f"; {p} {f}" for p, f in r["param_formats"].items())
        lines.append(f"| {r['node']} | {r['op']} | {tuple(r['shape'])} | {fmts} | {r['kernel'] or '-'} | {params} | "
                     f"{r['ideal_cycles'] or '-'} |")
    n_in = sum(len(s.beats) for s in vectors.inputs.values())
    n_out = sum(len(s.beats) for s in vectors.outputs.values())
    lines += ["", f"Test vectors: {n_in} input beats, {n_out} output beats; ideal {vectors.ideal_cycles} cycles "
              f"(the slowest kernel at one beat per cycle).", "",
              "## Accuracy of the hardware-exact outputs against the float32 model", "",
              "| output | relative RMS error | SQNR (dB) | max abs error |", "|---|---|---|---|"]
    lines += [f"| {a['output']} | {a['rel_rms']:.3e} | {a['sqnr_db']:.1f} | {a['max_abs']:.3e} |" for a in acc]
    lines += ["", "The example inputs are quantized to the input format first; the error includes that step.", ""]
    return "\n".join(lines)


def write_tree(root: Path, gm, design, values, example_inputs, config) -> tuple[list[dict], list[dict]]:
    root = Path(root)
    for sub in ("rtl", "tb", "vivado", "yosys", "report"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    version = masec.__version__

    modules = _modules(gm, design)
    sources = [f"rtl/{r.module}.sv" for r in modules]
    for r in modules:
        r.write(root / "rtl")
    mems: list[str] = []
    for node in gm.graph.nodes:
        if meta(node).kernel is None:
            continue
        for fname, lines in sorted(lowering_for(node).memories(gm, node).items()):
            (root / "rtl" / fname).write_text("\n".join(lines) + "\n")
            mems.append(f"rtl/{fname}")
    (root / "rtl" / "filelist.f").write_text("\n".join(Path(s).name for s in sources) + "\n")

    vectors = _vectors(gm, design, values, config)
    vectors.write(root / "tb" / "vectors.json")
    build = {"top": design.top, "sources": sources, "memories": mems, "inputs": design.inputs,
             "outputs": design.outputs, "masec_version": version}
    (root / "masec_build.json").write_text(json.dumps(build, indent=2, sort_keys=True) + "\n")
    (root / "tb" / "run_tb.py").write_text(_RUN_TB)

    ctx = {"top": design.top, "version": version, "sources": sources, "mems": mems, "part": config.part,
           "clock_ns": config.clock_ns, "mhz": round(1000.0 / config.clock_ns, 3)}
    for tmpl, dest in (("build.tcl.j2", "vivado/build.tcl"), ("constraints.xdc.j2", "vivado/constraints.xdc"),
                       ("synth.ys.j2", "yosys/synth.ys"), ("Makefile.j2", "Makefile")):
        (root / dest).write_text(render_script(tmpl, **ctx))

    rows = report_rows(gm)
    acc = accuracy(gm, example_inputs, values)
    (root / "report" / "report.json").write_text(json.dumps(
        {"config": json.loads(config.to_json()), "nodes": rows, "ideal_cycles": vectors.ideal_cycles,
         "outputs": [n.name for n in output_nodes(gm)], "accuracy": acc}, indent=2, sort_keys=True) + "\n")
    (root / "report" / "report.md").write_text(_report_md(rows, config, vectors, acc))
    (root / "masec_config.json").write_text(config.to_json())
    return rows, acc


_RUN_TB = '''"""Run this design's cocotb testbench over Verilator: python tb/run_tb.py [--seed N] [--waves].

Same as `masec sim .` from the output folder (or `make sim`).
"""
import sys
from pathlib import Path

from masec.cli import main

if __name__ == "__main__":
    sys.exit(main(["sim", str(Path(__file__).resolve().parent.parent), *sys.argv[1:]]))
'''
