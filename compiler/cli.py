"""The ``masec`` command line: ``masec compile model.py --out rtl/`` and ``masec sim rtl/``.

Every user error prints one line on stderr (``masec: error: ...``) and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from masec import __version__
from masec.config import DEFAULT_CLOCK_NS, DEFAULT_MX_FORMAT, DEFAULT_PART, CompileConfig
from masec.errors import MasecError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="masec", description="Dataflow hardware compiler for LLM inference in MX formats.")
    p.add_argument("--version", action="version", version=f"masec {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("compile", help="compile model.py to SystemVerilog + testbench + synthesis scripts")
    c.add_argument("model_file", help="Python file defining `model` and `example_inputs`")
    c.add_argument("--out", required=True, help="output folder (must be new or empty, unless --force)")
    c.add_argument("--format", default="mx",
                   help=f"number format of every tensor: an MX format name (mxint8, mxint4, mxfp8_e4m3, mxfp8_e5m2, "
                        f"mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint<k>, mxfp_e<E>m<M>); `mx` = {DEFAULT_MX_FORMAT}; "
                        f"`auto` = run `masec search` first and compile its choice")
    c.add_argument("--precision", dest="precision_file", default="",
                   help="TOML file of per-node formats ([default], [op.<name>], [node.\"<module path>\"]); "
                        "--format is its default (see README, 'Mixed precision')")
    c.add_argument("--block-size", type=int, default=32, help="MX block size (power of two; default 32)")
    c.add_argument("--rounding", default="even", choices=("even", "away", "trunc"),
                   help="element rounding when quantizing inputs and weights (default: even = RNE)")
    c.add_argument("--weight-rounding", default="", choices=("nearest", "gptq"),
                   help="linear weights: `nearest` (each element alone) or `gptq` (error-compensating, on the model "
                        "file's calibration_data; passes/transform/gptq.py); default: the --precision file's "
                        "[options] weight_rounding, else nearest")
    c.add_argument("--parallelism", type=int, default=4,
                   help="elements per stream beat of every node when no --budget is given (power of two "
                        "dividing the block size; default 4)")
    c.add_argument("--budget", type=float, default=None, metavar="F",
                   help="fold: choose every node's lanes for the highest throughput within F (0 < F <= 1) of "
                        "the --part's LUT/FF/DSP/BRAM; `lanes = N` in --precision fixes a node's lanes. "
                        "Without it every node gets --parallelism lanes")
    c.add_argument("--model", dest="model_name", default="model", help="name of the model in the file (default: model)")
    c.add_argument("--inputs", dest="inputs_name", default="example_inputs",
                   help="name of the example inputs in the file (default: example_inputs)")
    c.add_argument("--part", default=DEFAULT_PART, help=f"FPGA part for the Vivado script (default: {DEFAULT_PART})")
    c.add_argument("--clock", dest="clock_ns", type=float, default=DEFAULT_CLOCK_NS,
                   help=f"clock period in ns for the constraints (default: {DEFAULT_CLOCK_NS})")
    c.add_argument("--seed", type=int, default=1, help="seed of the testbench's random gaps/backpressure (default 1)")
    c.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    c.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    c.add_argument("--evaluate", action="store_true",
                   help="run the model file's evaluate(model) on the float32 and the hardware-exact model "
                        "(perplexity, top-1 agreement) into the report; minutes for an LLM")
    c.add_argument("--eval-tokens", type=int, default=0, metavar="N",
                   help="with --evaluate: evaluate(model, n_tokens=N) when evaluate takes n_tokens")

    s = sub.add_parser("sim", help="simulate a compiled design (Verilator + cocotb), compare with the reference")
    s.add_argument("out", help="a folder written by `masec compile`")
    s.add_argument("--seed", type=int, default=None, help="override the testbench seed")
    s.add_argument("--waves", action="store_true", help="write an FST waveform (sim_build/dump.fst)")
    s.add_argument("--prompt", default=None, help="text to run through the RTL (needs `tokenizer` in model.py)")
    s.add_argument("--generate", type=int, default=0, metavar="N",
                   help="with --prompt: generate N tokens greedily from the RTL's logits")
    s.add_argument("--debug", action="store_true",
                   help="also monitor every internal stream and name the first node that differs; "
                        "tracebacks of internal errors")

    from masec.passes.search.cli import add_search_arguments
    from masec.synth import add_synth_arguments

    add_search_arguments(sub.add_parser("search", help="choose every node's MX format on real data (precision.toml)"))
    add_synth_arguments(sub.add_parser("synth", help="synthesize a compiled design with Yosys (per kernel, cached)"))
    for name in ("search", "synth"):
        sub.choices[name].add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    return p


def _auto_precision(args, console: Console):
    """``--format auto``: run ``masec search`` (its defaults: within 2% of the float32 metric) into a
    temporary folder; compile its precision.toml; the search results land in OUT/search/."""
    import tempfile

    from masec.passes.search.cli import add_search_arguments, search_main

    if args.precision_file:
        raise MasecError("--format auto and --precision FILE: choose one (auto runs the search that writes the file)")
    if Path(args.out).exists() and any(Path(args.out).iterdir()) and not args.force:
        raise MasecError(f"--out {args.out}: folder exists and is not empty; pass --force to replace it")
    tmp = Path(tempfile.mkdtemp(prefix="masec-auto-"))
    sp = argparse.ArgumentParser(prog="masec search")
    add_search_arguments(sp)
    sargs = sp.parse_args([args.model_file, "--out", str(tmp / "search"), "--model", args.model_name,
                           "--inputs", args.inputs_name, "--parallelism", str(args.parallelism),
                           "--weight-rounding", args.weight_rounding or "nearest"])
    console.print("--format auto: searching the formats (masec search, max loss 2%) ...")
    search_main(sargs)
    args.precision_file = str(tmp / "search" / "precision.toml")
    args.format = "mx"
    return tmp / "search"


def _compile(args, console: Console) -> int:
    import shutil

    from masec.backend import compile_model

    search_dir = _auto_precision(args, console) if args.format == "auto" else None

    cfg = CompileConfig(model_file=args.model_file, out=args.out, format=args.format, block_size=args.block_size,
                        rounding=args.rounding, model_name=args.model_name, inputs_name=args.inputs_name,
                        parallelism=args.parallelism, budget=args.budget, part=args.part, clock_ns=args.clock_ns,
                        seed=args.seed,
                        force=args.force, precision_file=args.precision_file, debug=args.debug,
                        evaluate=args.evaluate, eval_tokens=args.eval_tokens,
                        weight_rounding=args.weight_rounding)
    try:
        with console.status("compiling") as status:
            res = compile_model(cfg, progress=lambda step: status.update(f"compiling: {step}"))
        if search_dir is not None:
            shutil.copytree(search_dir, Path(res.out) / "search")
    finally:
        if search_dir is not None:
            shutil.rmtree(search_dir.parent, ignore_errors=True)
    t = Table(title=f"masec compile {Path(args.model_file).name} -> {res.out}")
    for col in ("node", "op", "shape", "format", "kernel", "ideal cycles"):
        t.add_column(col, overflow="fold")
    for r in res.rows:
        if r["op"] in ("output", "fork"):
            continue
        fmts = r["format"] + "".join(f" {p}:{f}" for p, f in r["param_formats"].items())
        t.add_row(r["node"], r["op"], "x".join(map(str, r["shape"])), fmts, r["kernel"] or "-",
                  str(r["ideal_cycles"] or "-"))
    console.print(t)
    for a in res.accuracy:
        console.print(f"output {a['output']}: hardware-exact vs float32: relative RMS error {a['rel_rms']:.2e} "
                      f"(SQNR {a['sqnr_db']:.1f} dB), max abs error {a['max_abs']:.2e}")
    if res.evaluation:
        e = res.evaluation
        console.print(f"{e['metric']} on held-out data: float32 {e['float32']:.4f}, hardware-exact "
                      f"{e['hardware_exact']:.4f} ({100 * e['relative_change']:+.2f}%); next-token top-1 agreement "
                      f"{100 * e['top1_agreement']:.2f}% over {e['positions']} positions")
    if search_dir is not None:
        console.print(f"--format auto: the search's precision.toml, Pareto plot and table are in {res.out}/search/")
    console.print(f"wrote {res.out}/ (rtl/, tb/, vivado/, yosys/, report/, Makefile); next: masec sim {res.out}")
    return 0


def _generate(args, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from masec.simulate import generate

    n = max(args.generate, 1)
    with Progress(TextColumn("RTL generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[text]}"), console=console) as bar:
        task = bar.add_task("gen", total=n, text="")
        res = generate(Path(args.out), args.prompt, n, seed=args.seed,
                       progress=lambda k, text: bar.update(task, completed=k, text=repr(text[-40:])))
    t = Table(title=f"masec sim {args.out} --prompt {args.prompt!r} --generate {n}")
    for col in ("token", "RTL", "float32 model", "RTL cycles", "logits vs reference"):
        t.add_column(col)
    from masec.frontend import load_model_namespace
    from masec.simulate import _compiled_config

    cfg = _compiled_config(Path(args.out))
    tok = load_model_namespace(cfg.model_file, cfg.model_name, cfg.inputs_name)[2].tokenizer
    for k, (a, b, s) in enumerate(zip(res.rtl_ids, res.float_ids, res.steps)):
        t.add_row(str(k + 1), repr(tok.decode([a])), repr(tok.decode([b])), str(s["cycles"]),
                  "[green]exact[/]" if s["ok"] else "[red]differ[/]")
    console.print(t)
    console.print(f"RTL:     {res.rtl_text!r}")
    console.print(f"float32: {res.float_text!r}")
    console.print("[green]PASS[/]: every logit of every step matches the bit-exact reference")
    return 0


def _sim(args, console: Console) -> int:
    from masec.simulate import simulate

    if args.prompt is not None:
        return _generate(args, console)
    if args.generate:
        raise MasecError("--generate N needs --prompt TEXT")

    with console.status("building with Verilator and simulating (random gaps + backpressure, then full rate)"):
        s = simulate(Path(args.out), seed=args.seed, waves=args.waves, debug=args.debug)
    res = s.result
    t = Table(title=f"masec sim {args.out}  (seed {s.seed}; replay: masec sim {args.out} --seed {s.seed})")
    import json

    rep = Path(args.out) / "report" / "report.json"
    pred = json.loads(rep.read_text()).get("predicted_cycles") if rep.exists() else None
    for col in ("test", "vectors (in/out beats)", "cycles", "predicted", "bottleneck ideal", "results/cycle",
                "result"):
        t.add_column(col)
    for r in res.runs:
        per = r["output_elements"] / r["cycles"] if r["cycles"] else 0.0
        t.add_row(r["test"], f"{r['input_beats']}/{r['output_beats']}", str(r["cycles"]),
                  str(pred) if pred and r["test"] == "full_rate" else "-", str(r["ideal_cycles"]),
                  f"{per:.3f}", "[green]PASS[/]" if r["ok"] else "[red]FAIL[/]")
    console.print(t)
    if not res.ok:
        console.print(f"[red]FAIL[/]: {res.message}")
        return 1
    console.print("[green]PASS[/]: every output element matches the bit-exact reference"
                  + (f"; waves in {res.build_dir}/dump.fst" if args.waves else ""))
    for line in _sim_throughput(Path(args.out), res, s.seed):
        console.print(line)
    return 0


def _sim_throughput(out: Path, res, seed: int) -> list[str]:
    """Rows/s at the compiled clock (and at the post-route Fmax when `masec synth` measured one) from the
    measured full-rate latency and the bottleneck's cycles; written to report/sim.json."""
    import json

    from masec.throughput import describe, throughput

    rep_file, synth_file = out / "report" / "report.json", out / "report" / "synth.json"
    full = next((r for r in res.runs if r["test"] == "full_rate"), None)
    if full is None or not rep_file.exists():
        return []
    rep = json.loads(rep_file.read_text())
    rows = rep.get("throughput", {}).get("rows_per_inference", 1)
    clocks = {"compiled clock": 1000.0 / rep["config"]["clock_ns"]}
    fmax = json.loads(synth_file.read_text()).get("fmax_mhz") if synth_file.exists() else None
    if fmax:
        clocks["post-route Fmax"] = float(fmax)
    rates = {k: throughput(rep["bottleneck_cycles"], full["cycles"], mhz, rows) for k, mhz in clocks.items()}
    (out / "report" / "sim.json").write_text(json.dumps(
        {"seed": seed, "runs": res.runs, "predicted_cycles": rep.get("predicted_cycles"), "throughput": rates},
        indent=2, sort_keys=True) + "\n")
    return [describe(t, f"Measured latency, {k}") for k, t in rates.items()]


def _search(args, console: Console) -> int:
    from masec.passes.search.cli import search_main

    return search_main(args)


def _synth(args, console: Console) -> int:
    from masec.synth import synth_main

    return synth_main(args)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    console = Console(soft_wrap=True)  # never break paths or commands across lines
    try:
        return {"compile": _compile, "sim": _sim, "search": _search, "synth": _synth}[args.cmd](args, console)
    except MasecError as exc:
        msg = " ".join(str(exc).split()) if "\n" not in str(exc).strip() else str(exc).strip().splitlines()[0]
        print(f"masec: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("masec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a masec bug: say so, name where, traceback under --debug
        import traceback

        from masec.errors import InternalError

        root = exc.__cause__ if isinstance(exc, InternalError) and exc.__cause__ else exc
        tb = traceback.extract_tb(root.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        what = str(exc) if isinstance(exc, InternalError) else f"{type(exc).__name__}: {exc}"
        print(f"masec: internal error{where}: {' '.join(what.split())[:500]}"
              f"{'' if getattr(args, 'debug', False) else ' (rerun with --debug for the traceback)'}",
              file=sys.stderr)
        if getattr(args, "debug", False):
            traceback.print_exc()
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
