"""Write a compiled design's output tree (see README "What compile writes").

Everything is derived from the hardware IR and the reference values, in a fixed
order, with no timestamps: the same model and options give byte-identical files.
"""
from __future__ import annotations

import json
from pathlib import Path

import masec
from masec.errors import MasecError
from masec.axi_wrapper import axi_wrapper, render_axi, write_axi_tb
from masec.design import top_view
from masec.hw_templates.render import render, render_script, render_template
from masec.hwir import view_value
from masec.passes.hw.cycles import predict_cycles
from masec.reference import accuracy
from masec.sim.mxstream import mx_stream, plain_stream
from masec.sim.vectors import StreamVectors, VectorFile
from masec.throughput import describe, rows_per_inference, throughput


def _modules(ir, view, dep_ctx: dict | None = None) -> list:
    """Every SV module the design needs, each once, dependencies first, top last.

    ``dep_ctx``: Jinja context per dependency kernel (mx_quantize's ``pipe`` from ``--clock``)."""
    from masec.hw_templates.manifest import dependency_closure, kernel

    mods: dict[str, object] = {}
    dep_ctx = dep_ctx or {}

    def render_dep(name):
        return render(name, **dep_ctx.get(name, {}))

    def add(r):
        if r.module in mods and mods[r.module].text != r.text:
            raise MasecError(f"internal error: two different renderings of module {r.module}")
        mods.setdefault(r.module, r)

    for dep in dependency_closure(("stream_fifo",)):
        add(render_dep(dep))
    add(render("stream_fifo"))
    if any(e.slices for e in ir.edges):
        from masec.hw_templates.kernels.stream_reg_slice import module_name as slice_module

        add(render("stream_reg_slice", slice_module(False), mx=False))
    for inst in ir.instances.values():
        for r in inst.renders:
            if r.module in dep_ctx and r.module != inst.module:   # a dependency rendered with defaults
                r = render_dep(r.module)
            if r.module == inst.module:
                for dep in dependency_closure(kernel(inst.kernel).deps):
                    add(render_dep(dep))
            add(r)
    add(render_template("top.sv.j2", view.top, inputs=view.inputs, outputs=view.outputs, edges=view.edges,
                        instances=view.instances))
    return list(mods.values())


def _seed_port(t) -> dict:
    """What a port of a seed activation format adds to its description: the data bits (M2XFP: codes and
    metadata) and NVFP4's tensor scale exponent (the driver quantizes with 2^tensor_scale_exp)."""
    from masec.lowering.base import seed_activation

    if t.fmt is None or not seed_activation(t.fmt.parse()):
        return {}
    return {"data_bits": t.data_bits, **({"tensor_scale_exp": t.fmt.ts_exp} if t.fmt.ts_exp is not None else {})}


def port_beats(t, v) -> StreamVectors:
    """The beats of value ``v`` on a stream of type ``t``."""
    if t.is_mx:
        return mx_stream(v.codes, v.scales, t.element_bits, t.lanes, meta=v.meta)
    return plain_stream(v.values, t.int_bits, t.lanes)


def _vectors(ir, values, config) -> VectorFile:
    inputs, outputs = {}, {}
    for inst in ir.inputs:
        t = inst.out_types[0]
        inputs[inst.params["port"]] = port_beats(t, values[(inst.name, 0)])
    for inst in ir.outputs:
        t = inst.in_types[0]
        v = view_value(values[(inst.name, 0)], t)
        sv = port_beats(t, v)
        if t.is_mx:
            per_block = v.fmt.block_size // t.lanes
            nblocks = v.codes.shape[1]
            sv.notes = [f"{inst.node}: row {i // (per_block * nblocks)}, block {(i // per_block) % nblocks}, "
                        f"beat {i % per_block} of the block" for i in range(len(sv.beats))]
        outputs[inst.params["port"]] = sv
    ideal = max([i.ideal_cycles for i in ir.instances.values()] +
                [len(s.beats) for s in (*inputs.values(), *outputs.values())])
    return VectorFile(inputs, outputs, seed=config.seed, ideal_cycles=ideal)


def taps(ir, values) -> list[dict]:
    """Expected beats on every kernel's output edge (producer side), in topological order, for
    ``masec sim --debug``: the first edge whose beats differ names the node that went wrong."""
    eid = {id(e): f"e{k}" for k, e in enumerate(ir.edges)}
    out = []
    for inst in ir.topo():
        if inst.is_port or inst.kernel == "stream_fork":
            continue
        for e in sorted(ir.out_edges(inst.name), key=lambda e: e.src[1]):
            t = e.type
            sv = port_beats(t, view_value(values[(inst.name, e.src[1])], t))
            bus = [(b[1] << t.data_bits) | b[0] if t.is_mx else b[0] for b in sv.beats]
            label = f"node `{inst.node}` ({inst.op}" + (f", module {inst.path}" if inst.path else "") + \
                (f", {inst.source}" if inst.source else "") + f"; instance u_{inst.name})"
            out.append({"signal": f"{eid[id(e)]}_p", "label": label, "beats": bus, "lanes": t.lanes,
                        "width": t.element_bits})
    return out


def report_rows(ir) -> list[dict]:
    rows = []
    for inst in ir.instances.values():
        if inst.is_port:
            continue
        t = inst.out_types[0]
        rows.append({
            "node": inst.node, "instance": inst.name, "op": inst.op, "shape": list(t.shape),
            "format": f"{t.fmt.name}/B{t.fmt.block_size}" if t.fmt else f"int{t.int_bits}",
            **({"tensor_scale_exp": t.fmt.ts_exp} if t.fmt is not None and t.fmt.ts_exp is not None else {}),
            "in": [it.describe() for it in inst.in_types],
            "param_formats": {p: f"{f.name}/B{f.block_size}" for p, f in sorted(inst.formats.items()) if p != "out"},
            "kernel": inst.kernel, "module": inst.module, "lanes": t.lanes,
            "parameters": {a: b for a, b in sorted(inst.params.items())},
            "ideal_cycles": inst.ideal_cycles, "buffering": inst.buffering, "source": inst.source,
        })
    return rows


def _report_md(rows, config, vectors: VectorFile, acc: list[dict], pred: dict) -> str:
    lines = [f"# masec compile report: {Path(config.model_file).name}", "",
             f"precision {config.precision_label()}, rounding {config.rounding}, "
             f"parallelism {config.parallelism}, part {config.part}, clock {config.clock_ns} ns", "",
             "| node | op | shape | format | kernel | parameters | ideal cycles |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items()
                           if not str(v).endswith(".mem") and k.isupper() and not k.endswith(("_BITS", "_MBITS",
                                                                                              "_BIAS", "_EMAX",
                                                                                              "_MAX_CODE", "_IS_INT",
                                                                                              "_EBITS")))
        fmts = r["format"] + (f" (s_t = 2^{r['tensor_scale_exp']})" if "tensor_scale_exp" in r else "") + \
            "".join(f"; {p} {f}" for p, f in r["param_formats"].items())
        lines.append(f"| {r['node']} | {r['op']} | {tuple(r['shape'])} | {fmts} | {r['kernel'] or '-'} | "
                     f"{params or '-'} | {r['ideal_cycles'] or '-'} |")
    n_in = sum(len(s.beats) for s in vectors.inputs.values())
    n_out = sum(len(s.beats) for s in vectors.outputs.values())
    lines += ["", f"Test vectors: {n_in} input beats, {n_out} output beats. Bottleneck: `{pred['bottleneck']}`, "
              f"{pred['bottleneck_cycles']} cycles at full rate; the IR's cycle model predicts {pred['total']} cycles "
              f"for one set of inputs (first input beat to last output beat; `masec sim` measures it).", "",
              "## Accuracy of the hardware-exact outputs against the float32 model", "",
              "| output | relative RMS error | SQNR (dB) | max abs error |", "|---|---|---|---|"]
    lines += [f"| {a['output']} | {a['rel_rms']:.3e} | {a['sqnr_db']:.1f} | {a['max_abs']:.3e} |" for a in acc]
    lines += ["", "The example inputs are quantized to the input format first; the error includes that step.", ""]
    return "\n".join(lines)


def _folding_md(f: dict) -> str:
    """The report's folding section: lanes, estimated resources and cycles per instance; totals vs the part."""
    keys = ("LUT", "FF", "DSP", "BRAM")
    lines = ["## Folding: lanes and estimated resources", "", f"{f['mode']}. Part {f['part']}."]
    if f["note"]:
        lines += ["", f"Note: {f['note']}."]
    lines += ["", "| instance | node | kernel | lanes | LUT | FF | DSP | BRAM | ideal cycles |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in f["nodes"]:
        res = r["resources"] or {}
        mark = " **(bottleneck)**" if r["instance"] == f["bottleneck"] else ""
        lines.append(f"| {r['instance']}{mark} | {r['node']} | {r['kernel']} | {r['lanes']} | "
                     + " | ".join(f"{res[k]:,}" if k in res else "-" for k in keys) + f" | {r['ideal_cycles']:,} |")
    lines += ["", f"Bottleneck: `{f['bottleneck']}`, {f['bottleneck_cycles']:,} cycles per inference.", ""]
    if f["total"] is not None:
        lines += ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys),
                  "| estimated total (kernels, FIFOs, forks, retiles) | " +
                  " | ".join(f"{f['total'][k]:,}" for k in keys) + " |",
                  f"| {f['part']} capacity | " + " | ".join(f"{f['capacity'][k]:,}" for k in keys) + " |"]
        if f["budget"] is not None:
            lines.append(f"| budget ({f['budget']} of the part) | " +
                         " | ".join(f"{f['limit'][k]:,.0f}" for k in keys) + " |")
            lines.append("| within budget | " + " | ".join("yes" if f["within_budget"][k] else "no"
                                                            for k in keys) + " |")
        lines.append("| utilization | " + " | ".join(f"{100 * f['utilization'][k]:.2f}%" for k in keys) + " |")
        lines.append("| fits | " + " | ".join("yes" if f["fits_part"][k] else "no" for k in keys) + " |")
        lines += ["", f"Fits {f['part']}: {'yes' if all(f['fits_part'].values()) else 'no'} (cost-model "
                      f"estimates; `masec synth` measures with Yosys).", ""]
    return "\n".join(lines)


def write_tree(root: Path, gm, ir, values, example_inputs, config, evaluation: dict | None = None
               ) -> tuple[list[dict], list[dict]]:
    root = Path(root)
    for sub in ("rtl", "tb", "vivado", "yosys", "report"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    version = masec.__version__

    view = top_view(ir)
    from masec.parts import lookup_part
    from masec.passes.hw.pipeline import pipe_depth

    # a dependency rendered with defaults (mx_quantize inside a kernel that does not pass PIPE on)
    modules = _modules(ir, view, {"mx_quantize": {
        "pipe": pipe_depth("mx_quantize", config.clock_ns, lookup_part(config.part).family)}})
    sources = [f"rtl/{r.module}.sv" for r in modules]
    for r in modules:
        r.write(root / "rtl")
    mems: list[str] = []
    for inst in ir.instances.values():
        for fname, lines in sorted(inst.memories.items()):
            (root / "rtl" / fname).write_text("\n".join(lines) + "\n")
            mems.append(f"rtl/{fname}")
    (root / "rtl" / "filelist.f").write_text("\n".join(Path(s).name for s in sources) + "\n")
    # the board-facing AXI4-Stream/AXI4-Lite wrapper (docs/board.md); not in `sources`: those are the core
    axi = axi_wrapper(ir, view.top, next(r.text for r in modules if r.module == view.top))
    render_axi(axi).write(root / "rtl")

    vectors = _vectors(ir, values, config)
    vectors.write(root / "tb" / "vectors.json")
    axi_tb = [f"tb/{f}" for f in write_axi_tb(axi, vectors, root / "tb")]   # FuseSoC's sim target
    ports = {"inputs": [], "outputs": []}
    for inst in ir.inputs:
        t = inst.out_types[0]
        ports["inputs"].append({"name": inst.params["port"], "node": inst.node, "lanes": t.lanes,
                                "width": t.element_bits, "format": t.fmt.name if t.fmt else f"int{t.int_bits}",
                                "block_size": t.fmt.block_size if t.fmt else 0, "shape": list(t.shape), **_seed_port(t)})
    for inst in ir.outputs:
        t = inst.in_types[0]
        ports["outputs"].append({"name": inst.params["port"], "node": inst.node, "lanes": t.lanes,
                                 "width": t.element_bits, "format": t.fmt.name if t.fmt else f"int{t.int_bits}",
                                 "block_size": t.fmt.block_size if t.fmt else 0, "shape": list(t.shape), **_seed_port(t)})
    instances = [{"name": f"u_{i.name}", "module": i.module, "kernel": i.kernel, "node": i.node,
                  "params": {k: v for k, v in sorted(i.params.items())}}
                 for i in ir.instances.values() if not i.is_port]
    instances += [{"name": f"u_fifo_{e['name']}", "module": "stream_fifo", "kernel": "stream_fifo", "node": "",
                   "params": {"WIDTH": e["width"], "DEPTH": e["depth"], "RAM_STYLE": e["ram_style"],
                              **({"PIPE": e["pipe"]} if e["pipe"] else {})}}
                  for e in view.edges]
    instances += [{"name": f"u_slice_{side}_{e['name']}", "module": "stream_reg_slice_plain",
                   "kernel": "stream_reg_slice", "node": "", "params": {"DATA_W": e["width"]}}
                  for e in view.edges for side in ("in", "out") if e[f"slice_{side}"]]
    build = {"top": view.top, "sources": sources, "memories": mems, **ports, "instances": instances,
             "masec_version": version, "axi": axi.to_json()}
    (root / "masec_build.json").write_text(json.dumps(build, indent=2, sort_keys=True) + "\n")
    (root / "tb" / "run_tb.py").write_text(_RUN_TB)

    from masec.parts import lookup_part

    ctx = {"top": view.top, "version": version, "sources": sources, "mems": mems, "part": config.part,
           "family": lookup_part(config.part).family, "part_full": lookup_part(config.part).part,
           "part_vendor": lookup_part(config.part).vendor,
           "clock_ns": config.clock_ns, "mhz": round(1000.0 / config.clock_ns, 3), "axi": axi, "axi_tb": axi_tb,
           "seed": config.seed}
    for tmpl, dest, extra in (("build.tcl.j2", "vivado/build.tcl", {}),
                              ("constraints.xdc.j2", "vivado/constraints.xdc", {"clock_port": "clk_i"}),
                              ("constraints.xdc.j2", f"vivado/{axi.module}.xdc", {"clock_port": "aclk"}),
                              ("package_ip.tcl.j2", "vivado/package_ip.tcl", {}),
                              ("fusesoc.core.j2", f"{view.top}.core", {}),
                              ("synth.ys.j2", "yosys/synth.ys", {}), ("Makefile.j2", "Makefile", {})):
        if dest.startswith("vivado/") and ctx["part_vendor"] != "xilinx":
            continue   # Vivado scripts only for AMD/Xilinx parts
        (root / dest).write_text(render_script(tmpl, **ctx, **extra))

    rows = report_rows(ir)
    acc = accuracy(gm, ir, example_inputs, values)
    pred = predict_cycles(ir)
    for r in rows:
        r["predicted_start"], r["predicted_finish"] = pred["start"][r["instance"]], pred["finish"][r["instance"]]
    from masec.passes.hw.fold import fold_summary

    folding = fold_summary(ir, config)
    first = ports["inputs"][0] if ports["inputs"] else None
    rate = throughput(pred["bottleneck_cycles"], pred["total"], 1000.0 / config.clock_ns,
                      rows_per_inference(first["shape"], first["format"].startswith("int")) if first else 1)
    (root / "report" / "report.json").write_text(json.dumps(
        {"config": json.loads(config.to_json()), "nodes": rows, "ideal_cycles": vectors.ideal_cycles,
         "predicted_cycles": pred["total"], "bottleneck": pred["bottleneck"],
         "bottleneck_cycles": pred["bottleneck_cycles"], "folding": folding,
         "outputs": [i.node for i in ir.outputs], "accuracy": acc, "evaluation": evaluation,
         "throughput": rate},
        indent=2, sort_keys=True) + "\n")
    md = (_report_md(rows, config, vectors, acc, pred) + _folding_md(folding)
          + "\n" + describe(rate, "Predicted (cycle model)") + ".\n")
    if evaluation:
        e = evaluation
        md += ("\n## The model's metric on held-out data (`--evaluate`)\n\n"
               f"| {e['metric']} float32 | {e['metric']} hardware-exact | change | next-token top-1 agreement |\n"
               "|---|---|---|---|\n"
               f"| {e['float32']:.4f} | {e['hardware_exact']:.4f} | {100 * e['relative_change']:+.2f}% | "
               f"{100 * e['top1_agreement']:.2f}% of {e['positions']} positions |\n")
    (root / "report" / "report.md").write_text(md)
    from masec.report_html import render_report

    render_report(root, ir)   # report/index.html + plots; estimates per node into report.json
    (root / "masec_config.json").write_text(config.to_json(Path(config.out)))
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
