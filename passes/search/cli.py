"""``masec search`` command line: ``add_search_arguments(parser)`` and ``search_main(args)``.

    masec search model.py --out out/search [--max-loss 2%] [--trials 20] [--storage URL]
                 [--device cpu|cuda] [--by node|layer|type] [--seed 0] [--pareto]

Also runnable on its own: ``python -m masec.passes.search.cli model.py --out DIR``.

The model file defines ``model`` and ``example_inputs`` (as for ``masec compile``) and may define
``calibration_data`` (an iterable of input tuples), ``evaluate(model) -> float`` (lower is better
unless ``higher_is_better = True``) and ``metric_name`` (a string naming the metric).
"""
from __future__ import annotations

import argparse
import sys

from masec.errors import MasecError


def add_search_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("model_file", help="model.py defining model, example_inputs and optionally "
                   "calibration_data, evaluate(model) -> float, higher_is_better, metric_name")
    p.add_argument("--out", required=True, help="output folder (created; an existing one resumes the study)")
    p.add_argument("--model", default="model", help="name of the model in the file (default: model)")
    p.add_argument("--inputs", default="example_inputs", help="name of the example inputs (default: example_inputs)")
    p.add_argument("--metric", default="evaluate",
                   help="name of the evaluate(model) -> float function in the file (default: evaluate); "
                        "without one the metric is the --proxy distance from float32 on the calibration data")
    p.add_argument("--calibration", default="calibration_data",
                   help="name of the calibration data in the file (default: calibration_data; "
                        "example_inputs when absent)")
    p.add_argument("--max-loss", default="2%",
                   help="accuracy budget: a percentage of the float32 metric (2%%) or an absolute change (0.05); "
                        "'none' = Pareto mode without a budget (default: 2%%)")
    p.add_argument("--max-bits", type=float, default=None,
                   help="bits mode: the best metric within this many average bits per element (incl. block "
                        "scales); --max-loss is then only reported")
    p.add_argument("--pareto", action="store_true",
                   help="Pareto mode: NSGA-II on (metric, bits); still chooses the cheapest point within --max-loss")
    p.add_argument("--trials", type=int, default=20, help="new Optuna trials in this run (default: 20; 0 = ILP only)")
    p.add_argument("--storage", default=None,
                   help="Optuna RDB URL shared by workers, e.g. postgresql://user@host/db "
                        "(default: sqlite:///OUT/study.db)")
    p.add_argument("--study", default=None, help="Optuna study name (default: from --by and --max-loss)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (where torch sees a GPU)")
    p.add_argument("--by", choices=("type", "layer", "node"), default="node",
                   help="grouping: one choice per op type, per layer or per node (default: node)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
    p.add_argument("--types", default=None,
                   help="comma-separated element types (default: mxint8,mxint6,mxint4,mxfp8_e4m3,mxfp8_e5m2,"
                        "mxfp6_e3m2,mxfp6_e2m3,mxfp4 and the seed formats the compiler has kernels for)")
    p.add_argument("--block-sizes", default=None, help="comma-separated block sizes (default: 16,32,64)")
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches used (default: 8)")
    p.add_argument("--ilp-points", type=int, default=8, help="ILP budgets evaluated (default: 8)")
    p.add_argument("--proxy", choices=("auto", "mse", "kl"), default=None,
                   help="sensitivity distance on the calibration data: mse (relative output error), kl (softmax KL "
                        "of logits), auto = kl for [batch, seq, vocab] outputs (default: the file's search_proxy, "
                        "else auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads during the search (default: torch's; 1 is fastest for small models)")
    p.add_argument("--parallelism", type=int, default=4,
                   help="the `masec compile --parallelism` the chosen precision file is for (default: 4); a seed "
                        "activation format is offered only where a design at these lanes builds it (m2xfp4_a: 8)")
    p.add_argument("--weight-rounding", default="nearest", choices=("nearest", "gptq"),
                   help="linear weights: nearest (default) or gptq (error-compensating rounding on the calibration "
                        "data, as `masec compile --weight-rounding gptq`; recorded in precision.toml [options])")
    p.add_argument("--gptq-batches", type=int, default=None,
                   help="with --weight-rounding gptq: calibration batches for the Hessians (default 16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or summary table")
    return p


def load_search_inputs(path, model_name="model", inputs_name="example_inputs", metric="evaluate",
                       calibration="calibration_data") -> dict:
    """Everything ``run_search`` needs from a model file: ``masec compile``'s own loader
    (``masec.frontend.load_model_namespace``: same rules and messages for the model and its
    inputs), plus the optional ``evaluate`` / ``calibration_data`` / ``higher_is_better``."""
    from masec.frontend import load_model_namespace

    model, inputs, module = load_model_namespace(path, model_name, inputs_name)
    evaluate = getattr(module, metric, None)
    if evaluate is not None and not callable(evaluate):
        raise MasecError(f"{path}: `{metric}` must be a function evaluate(model) -> float")
    if evaluate is None and metric != "evaluate":
        raise MasecError(f"{path}: defines no `{metric}` (--metric); define evaluate(model) -> float or drop --metric")
    calib = getattr(module, calibration, None)
    if callable(calib):
        calib = calib()
    if calib is not None and not hasattr(calib, "__iter__"):
        raise MasecError(f"{path}: `{calibration}` must be an iterable of input tuples")
    return {"model": model.eval(), "example_inputs": tuple(inputs), "evaluate": evaluate,
            "calibration_data": calib, "search_proxy": str(getattr(module, "search_proxy", "auto")), "higher_is_better": bool(getattr(module, "higher_is_better", False)),
            "metric_name": str(getattr(module, "metric_name", None) or ("metric" if evaluate is not None else "output_rel_mse"))}


def _csv(text):
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def search_main(args: argparse.Namespace) -> int:
    """Run ``masec search`` from parsed arguments; returns the exit code (MasecError propagates)."""
    from masec.formats import FormatError
    from masec.passes.search.runner import run_search
    from masec.passes.search.space import BLOCK_SIZES, default_types, get_format

    ins = load_search_inputs(args.model_file, args.model, args.inputs, args.metric, args.calibration)
    types = _csv(args.types) or list(default_types())
    try:
        blocks = [int(b) for b in (_csv(args.block_sizes) or BLOCK_SIZES)]
        for t in types:
            for b in blocks:
                get_format(t, b)
    except (FormatError, ValueError) as exc:
        raise MasecError(f"--types/--block-sizes: {exc}") from None
    max_loss = None if str(args.max_loss).lower() in ("none", "") else args.max_loss
    if args.gptq_batches is not None and args.gptq_batches < 1:
        raise MasecError(f"--gptq-batches {args.gptq_batches}: give 1 or more")
    if args.trials < 0:
        raise MasecError(f"--trials {args.trials}: give 0 or more")
    if args.parallelism < 1 or args.parallelism & (args.parallelism - 1):
        raise MasecError(f"--parallelism {args.parallelism}: a power of two, as for masec compile")
    run_search(ins["model"], ins["example_inputs"], ins["evaluate"], ins["calibration_data"], args.out,
               metric_name=ins["metric_name"], max_loss=max_loss, trials=args.trials, storage=args.storage,
               device=args.device, by=args.by, seed=args.seed, progress=not args.no_progress,
               higher_is_better=ins["higher_is_better"], study_name=args.study, pareto=args.pareto or None,
               types=types, blocks=blocks, calib_batches=args.calib_batches, ilp_points=args.ilp_points,
               threads=args.threads, proxy=args.proxy or ins["search_proxy"], max_bits=args.max_bits,
               parallelism=args.parallelism, weight_rounding=args.weight_rounding,
               gptq_batches=args.gptq_batches)
    return 0


def main(argv=None) -> int:
    parser = add_search_arguments(argparse.ArgumentParser(
        prog="masec search", description="Choose the MX format of every weight and activation of a model."))
    args = parser.parse_args(argv)
    try:
        return search_main(args)
    except MasecError as exc:
        print(f"masec search: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
