"""Precision search (``masec search``): choose the MX format of every weight and activation.

    from masec.passes.search import run_search, load_precision
    res = run_search(model, example_inputs, evaluate, calibration_data, "out/search",
                     metric_name="perplexity", max_loss="2%", trials=20, storage=None,
                     device="cpu", by="node", seed=0)
    res.chosen["avg_bits"], res.chosen["metric"], res.float32_metric
    spec = load_precision("out/search/precision.toml")
    spec.resolve("linear", "layers.0.attention.wq", "weight")     # ("mxfp4_e2m1", 32)

See docs/search.md. Modules: ``precision_file`` (the precision.toml schema, reader, writer),
``space`` (sites, candidates, grouping), ``emulate`` (fake quantization), ``objectives``,
``ilp`` (sensitivity + HiGHS knapsack), ``study`` (Optuna), ``runner`` (``run_search``),
``report`` (outputs), ``cli`` (``add_search_arguments``, ``search_main``).
"""
from __future__ import annotations

from masec.passes.search.precision_file import (
    OPS,
    PrecisionError,
    PrecisionSpec,
    Section,
    dump_precision,
    load_precision,
    parse_precision,
)

__all__ = ["OPS", "PrecisionError", "PrecisionSpec", "Section", "dump_precision", "load_precision",
           "parse_precision", "run_search", "SearchResult"]


def __getattr__(name):  # run_search pulls torch/optuna/highspy: import it lazily
    if name in ("run_search", "SearchResult"):
        from masec.passes.search import runner

        return getattr(runner, name)
    raise AttributeError(name)
