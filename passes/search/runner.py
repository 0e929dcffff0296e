"""``run_search``: sensitivity -> ILP -> Optuna, then write precision.toml, search.json, the
per-node table, the Pareto plot and the log into the output folder.

    result = run_search(model, example_inputs, evaluate, calibration_data, "out/search",
                        metric_name="perplexity", max_loss="2%", trials=20)
    result.chosen["avg_bits"], result.chosen["metric"], result.float32_metric
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from masec.errors import MasecError
from masec.passes.search import ilp as ilp_mod
from masec.passes.search import report
from masec.passes.search import study as study_mod
from masec.passes.search.emulate import Emulator, spec_from_assignment  # noqa: F401 (re-exported)
from masec.passes.search.objectives import MaxLoss, Proxy, loss_of, pareto_front
from masec.passes.search.precision_file import PrecisionSpec, dump_precision
from masec.passes.search.space import (BLOCK_SIZES, GROUPINGS, Candidate, Space, build_space,
                                       candidates, discover_sites)

log = logging.getLogger("masec.search")

#: uniform reference points evaluated in every search (reported, never chosen unless in the space)
UNIFORM_REFERENCES = (("mxint8", 32), ("mxfp4", 32))


@dataclass
class SearchResult:
    out_dir: Path
    chosen: dict
    float32_metric: float
    points: list[dict]
    pareto: list[dict]
    spec: PrecisionSpec
    space: Space
    metric_name: str
    higher_is_better: bool
    max_loss: MaxLoss | None
    wall_s: float
    uniform: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    max_bits: float | None = None
    emulation: str = "hardware"
    parallelism: int = 4
    weight_rounding: str = "nearest"


def _as_tuple(b):
    if isinstance(b, torch.Tensor):
        return (b,)
    if isinstance(b, (list, tuple)):
        return tuple(b)
    raise MasecError(f"calibration_data must yield input tuples (or tensors), got {type(b).__name__}")


def _fingerprint(model: nn.Module, space: Space, batches, proxy_kind: str, emulation: str = "hardware",
                 weight_rounding: str = "nearest") -> str:
    h = hashlib.sha256()
    h.update(f"emulation={emulation}".encode())
    if weight_rounding != "nearest":
        h.update(f"weight_rounding={weight_rounding}".encode())
    h.update(json.dumps([[s.key, s.numel, s.op] for s in space.sites]).encode())
    h.update(json.dumps([c.key for c in space.cands]).encode())
    h.update(json.dumps(space.groups, sort_keys=True).encode())
    h.update(json.dumps(space.seed_acts, sort_keys=True).encode())
    h.update(str(proxy_kind).encode())
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes()[:1 << 16])
        h.update(str(float(p.detach().float().sum())).encode())
    for b in batches:
        for t in b:
            if isinstance(t, torch.Tensor):
                h.update(t.detach().cpu().contiguous().numpy().tobytes()[:1 << 16])
    return h.hexdigest()[:16]


def make_emulator(model, space: Space, device: str, example_inputs, emulation: str = "auto",
                  graph_cache: dict | None = None, exact_ops=(), weight_rounding: str = "nearest", calibration=None):
    """``(Emulator, description)``: ``hardware`` emulation (``auto``: unless masec cannot compile the
    model, then ``linear`` with a warning)."""
    if emulation not in ("auto", "hardware", "linear"):
        raise MasecError(f"emulation {emulation!r}: use auto, hardware or linear")
    if emulation == "linear":
        return Emulator(model, space, device=device, mode="linear", weight_rounding=weight_rounding,
                        calibration=calibration), "linear"
    try:
        emu = Emulator(model, space, device=device, example_inputs=example_inputs, mode="hardware",
                       graph_cache=graph_cache, exact_ops=exact_ops, weight_rounding=weight_rounding,
                       calibration=calibration)
        return emu, "hardware" + (f" (bit-exact models of {', '.join(emu.exact_ops)})" if emu.exact_ops else "")
    except Exception as exc:  # noqa: BLE001 - auto: any failure to compile the model falls back, logged
        if emulation == "hardware" or weight_rounding != "nearest":
            raise
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("hardware emulation unavailable (%s): weights and nn.Linear inputs only", why)
        return Emulator(model, space, device=device, mode="linear"), f"linear (masec cannot compile the model: {why})"


def _optuna_choices(space: Space, sens, pruned, ilp_pts, pareto, feasible) -> dict[str, list[Candidate]]:
    """Optuna's choices per group. Pareto mode: every non-dominated candidate. Constraint mode: a
    neighbourhood of the cheapest feasible ILP point (its candidate and the next cheaper and the
    next more accurate non-dominated ones), where random and TPE samples are mostly near-feasible."""
    if pareto:
        return pruned
    feas = [p for p in ilp_pts if feasible(p)]
    if not feas:
        return pruned
    best = min(feas, key=lambda p: (p["avg_bits"], p["loss"]))
    out = {}
    for g in space.groups:
        c = Candidate.parse(best["assignment"][g])
        opts = pruned[g]
        i = opts.index(c) if c in opts else 0
        out[g] = opts[max(0, i - 1): i + 2]
    return out


def run_search(model: nn.Module, example_inputs, evaluate=None, calibration_data=None, out_dir="out/search", *,
               metric_name: str = "metric", max_loss="2%", trials: int = 20, storage: str | None = None,
               device: str = "cpu", by: str = "node", seed: int = 0, progress: bool = True,
               higher_is_better: bool = False, study_name: str | None = None, pareto: bool | None = None,
               types=None, blocks=BLOCK_SIZES, calib_batches: int = 8, ilp_points: int = 8,
               threads: int | None = None, proxy: str = "auto", max_bits: float | None = None,
               console=None, emulation: str = "auto", graph_cache: dict | None = None,
               exact_ops=(), parallelism: int = 4, weight_rounding: str = "nearest",
               gptq_batches: int | None = None) -> SearchResult:
    """Search the formats of ``model``'s weights and activations; write the results into ``out_dir``.

    ``evaluate(model) -> float`` is the metric (lower is better unless ``higher_is_better``); without
    it the metric is the relative output error on the calibration data. ``max_loss``: ``"2%"``
    (relative to the float32 metric) or a number (absolute change); ``None`` means Pareto mode.
    ``pareto=True`` runs NSGA-II on (metric, bits) and still chooses the cheapest point within
    ``max_loss``. ``trials``: new Optuna trials in this run (0: sensitivity + ILP only).
    ``max_bits``: bits mode: the best metric within this many average bits (``max_loss`` is then
    only reported).
    ``proxy``: the sensitivity analysis's output distance, ``auto`` / ``mse`` / ``kl`` (objectives.Proxy).
    ``threads``: torch CPU threads during the search (restored after; small models run fastest
    with 1, and a loaded machine makes more threads much slower).
    ``emulation``: ``hardware`` (every stream and parameter port in the format the compiled design
    gives it, emulate.py), ``linear`` (weights and nn.Linear inputs only) or ``auto`` (hardware,
    or linear with a warning when masec cannot compile the model). ``graph_cache``: a dict shared
    by several searches of one model, so its canonical graphs are exported once (emulate.Emulator).
    ``exact_ops``: ops (of ``emulate.EXACT_OPS``) computed by their kernels' bit-exact models
    instead of float rounded once (the emulation then matches the hardware-exact design exactly
    when it names them all; about 3x slower per evaluation on stories260K).
    ``parallelism``: the ``masec compile --parallelism`` the chosen precision file is meant for; a seed
    activation format is offered to an activation group only where the compiler builds it at these
    lanes (``Space.check_seed_acts``; M2XFP activations need a multiple of 8).
    ``weight_rounding``: ``nearest`` or ``gptq`` (every point evaluated with its linear weights rounded by
    GPTQ on the first ``gptq_batches`` calibration batches, as ``masec compile`` rounds them; the precision
    file records it under ``[options]``).
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _search(model, example_inputs, evaluate, calibration_data, out_dir, metric_name, max_loss, trials,
                       storage, device, by, seed, progress, higher_is_better, study_name, pareto, types, blocks,
                       calib_batches, ilp_points, proxy, max_bits, console, emulation, graph_cache, exact_ops,
                       parallelism, weight_rounding, gptq_batches)
    finally:
        torch.set_num_threads(old_threads)


def _search(model, example_inputs, evaluate, calibration_data, out_dir, metric_name, max_loss, trials, storage,
            device, by, seed, progress, higher_is_better, study_name, pareto, types, blocks, calib_batches,
            ilp_points, proxy_kind, max_bits, console, emulation="auto", graph_cache=None, exact_ops=(),
            parallelism=4, weight_rounding="nearest", gptq_batches=None):
    t0 = time.time()
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if by not in GROUPINGS:
        raise MasecError(f"--by {by!r}: use one of {', '.join(GROUPINGS)}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise MasecError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu")
    ml = MaxLoss.parse(max_loss)
    pareto = (ml is None) if pareto is None else bool(pareto)
    handler = logging.FileHandler(out / "search.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    ui = report.UI(progress, console)
    try:
        return _run(model, example_inputs, evaluate, calibration_data, out, metric_name, ml, trials, storage,
                    device, by, seed, higher_is_better, study_name, pareto, types, blocks, calib_batches,
                    ilp_points, proxy_kind, max_bits, ui, t0, emulation, graph_cache, exact_ops, parallelism,
                    weight_rounding, gptq_batches)
    finally:
        ui.stop()
        log.removeHandler(handler)
        handler.close()


def _run(model, example_inputs, evaluate, calibration_data, out, metric_name, ml, trials, storage, device, by,
         seed, higher_is_better, study_name, pareto, types, blocks, calib_batches, ilp_points, proxy_kind, max_bits,
         ui, t0, emulation="auto", graph_cache=None, exact_ops=(), parallelism=4, weight_rounding="nearest",
         gptq_batches=None):
    from masec.passes.transform.gptq import CALIBRATION_BATCHES, check_mode

    check_mode(weight_rounding)
    gptq_batches = int(gptq_batches or CALIBRATION_BATCHES)
    model.eval()
    example_inputs = _as_tuple(example_inputs)
    log.info("search: by=%s max_loss=%s max_bits=%s trials=%d device=%s seed=%d pareto=%s emulation=%s", by, ml,
             max_bits, trials, device, seed, pareto, emulation)
    sites, traced, why = discover_sites(model, example_inputs)
    if not sites:
        raise MasecError("the model has no nn.Linear / nn.Embedding: nothing to search")
    if not traced:
        log.warning("torch.fx cannot trace the model (%s): one activation format for all linear inputs", why)
    space = build_space(sites, by=by, cands=candidates(types, blocks))
    min_bits = min(c.bits for c in space.cands)
    if max_bits is not None and max_bits < min_bits - 1e-12:
        raise MasecError(f"--max-bits {max_bits:g}: below the cheapest candidate ({min_bits:g} bits per element); "
                         f"give at least {min_bits:g}")
    goal = study_mod.Goal("bits" if max_bits is not None else ("pareto" if pareto else "loss"), higher_is_better,
                          ml, max_bits)
    log.info("space: %d sites (%d weight, %d activation), %d groups, %d candidates each, %d elements",
             len(sites), sum(s.kind == "weight" for s in sites), sum(s.kind == "act" for s in sites),
             len(space.groups), len(space.cands), space.total_numel)

    if weight_rounding == "gptq" and calibration_data is None:
        raise MasecError("--weight-rounding gptq needs `calibration_data` in the model file (an iterable of input "
                         "tuples)")
    calib = [_as_tuple(b) for _, b in zip(range(max(calib_batches, gptq_batches if weight_rounding == "gptq" else 0)),
                                          calibration_data)] if calibration_data is not None else []
    batches = calib[:calib_batches] or [example_inputs]
    gptq_calib = calib[:gptq_batches] if weight_rounding == "gptq" else None

    emu, emulation = make_emulator(model, space, device, example_inputs, emulation, graph_cache, exact_ops,
                                   weight_rounding, gptq_calib)
    if weight_rounding == "gptq":
        emulation += f", GPTQ weights ({len(gptq_calib)} calibration batches)"
    try:
        if emu.mode == "hardware":   # seed activation formats where the compiler builds them
            verdicts = space.check_seed_acts(lambda a: emu.refusal(a, parallelism=parallelism))
            if verdicts:
                log.info("seed activation formats (--parallelism %d): offered to %d of %d activation groups%s",
                         parallelism, len(space.seed_acts), len(verdicts),
                         "".join(f"; {g}: {', '.join(v)}" for g, v in sorted(space.seed_acts.items())))
        proxy = Proxy(model, batches, kind=proxy_kind, emulator=emu)  # on a GPU the proxy stays on the GPU
        log.info("calibration: %d batches%s; sensitivity proxy: %s", len(batches),
                 " (merged into one forward)" if proxy.merged else "", proxy.kind)
        if evaluate is None:
            metric_name = f"output_{proxy.kind}"
            higher_is_better = False
            metric_fn = lambda _m: proxy()  # noqa: E731
        else:
            metric_fn = evaluate
        with torch.no_grad():
            emu.restore()
            float_metric = float(metric_fn(model))
        log.info("float32 %s = %.6g", metric_name, float_metric)

        cache: dict[tuple, dict] = {}
        points: list[dict] = []

        def evaluate_point(assign: dict[str, Candidate], source: str, predicted_val=None) -> dict:
            keys = space.to_keys(assign)
            k = tuple(sorted(keys.items()))
            if k in cache:
                return cache[k]
            emu.apply(space.expand(assign))
            with torch.no_grad():
                m = float(metric_fn(model))
            emu.restore()
            if not math.isfinite(m):
                m = float("inf") if not higher_is_better else float("-inf")
            p = {"avg_bits": round(space.avg_bits(assign), 6), "metric": m,
                 "loss": loss_of(m, float_metric, higher_is_better, ml.relative if ml else True),
                 "source": source, "assignment": keys}
            if predicted_val is not None:
                p["predicted"] = predicted_val
            cache[k] = p
            points.append(p)
            log.info("%-7s bits=%.4f %s=%.6g loss=%+.4g", source, p["avg_bits"], metric_name, m, p["loss"])
            ui.point(p, metric_name)
            return p

        def feasible(p):
            if goal.mode == "bits":
                return p["avg_bits"] <= max_bits + 1e-9
            return ml is None or p["loss"] <= ml.value + 1e-12

        # 1. uniform references
        uniform = {}
        for name, b in UNIFORM_REFERENCES:
            c = Candidate.make(name, b)
            emu.apply({s.key: c for s in space.sites})
            with torch.no_grad():
                m = float(metric_fn(model))
            emu.restore()
            uniform[c.key] = {"avg_bits": round(c.bits, 6), "metric": m,
                              "loss": loss_of(m, float_metric, higher_is_better, ml.relative if ml else True)}
            log.info("uniform %s: bits=%.4f %s=%.6g", c.key, c.bits, metric_name, m)

        # 2. sensitivity (cached in out/sensitivity.json by a fingerprint of model, space, data)
        fp = _fingerprint(model, space, batches, proxy.kind, emulation, weight_rounding)
        sens_path = out / "sensitivity.json"
        sens = None
        if sens_path.exists():
            try:
                cached = json.loads(sens_path.read_text())
                if cached.get("fingerprint") == fp:
                    sens = cached["table"]
                    log.info("sensitivity: reusing %s", sens_path)
            except (json.JSONDecodeError, KeyError):
                sens = None
        if sens is None:
            n = sum(len(space.cands_for(g)) for g in space.groups)
            task = ui.task("sensitivity", n)
            ts = time.time()
            sens = ilp_mod.sensitivity(space, emu, proxy, progress=lambda: ui.advance(task))
            log.info("sensitivity: %d evaluations of the calibration proxy in %.1f s", n, time.time() - ts)
            sens_path.write_text(json.dumps({"fingerprint": fp, "table": sens}, indent=1, sort_keys=True))

        # 3. ILP over the proxy budget (bisection in constraint mode, a grid in Pareto mode)
        choices = {g: ilp_mod.dominated_pruned(space, sens, g) for g in space.groups}
        p_min = ilp_mod.predicted(space, sens, ilp_mod.min_loss_assignment(space, sens))
        cheapest = {g: choices[g][0] for g in space.groups}
        p_max = max(ilp_mod.predicted(space, sens, cheapest), p_min)
        lo_b = max(p_min, p_max * 1e-9, 1e-30)
        ilp_task = ui.task("ILP", ilp_points)

        def ilp_point(budget):
            a = ilp_mod.ilp_assignment(space, sens, budget * (1 + 1e-9))
            ui.advance(ilp_task)
            if a is None:
                return None
            return evaluate_point(a, "ilp", ilp_mod.predicted(space, sens, a))

        ilp_pts = []
        if goal.mode == "bits":   # the dual knapsack: least predicted error within max_bits
            a = ilp_mod.ilp_min_loss_at_bits(space, sens, max_bits)
            ui.advance(ilp_task)
            if a is not None:
                ilp_pts.append(evaluate_point(a, "ilp", ilp_mod.predicted(space, sens, a)))
        elif pareto or ml is None:
            for i in range(ilp_points):
                frac = i / max(ilp_points - 1, 1)
                b = math.exp(math.log(lo_b) + frac * (math.log(p_max) - math.log(lo_b))) if p_max > lo_b else lo_b
                p = ilp_point(b)
                if p:
                    ilp_pts.append(p)
        else:
            p = ilp_point(p_max)
            if p:
                ilp_pts.append(p)
            if not (p and feasible(p)):
                p = ilp_point(lo_b)
                if p:
                    ilp_pts.append(p)
                if p and feasible(p) and p_max > lo_b:
                    lo, hi = math.log(lo_b), math.log(p_max)
                    for _ in range(max(ilp_points - 2, 0)):
                        mid = (lo + hi) / 2
                        q = ilp_point(math.exp(mid))
                        if q is None:
                            lo = mid
                            continue
                        ilp_pts.append(q)
                        if feasible(q):
                            lo = mid
                        else:
                            hi = mid
        ui.finish(ilp_task)

        # 4. Optuna, seeded with the ILP points
        storage_url = storage or study_mod.default_storage(out)
        name = study_name or (f"masec-{by}-bits{max_bits:g}" if goal.mode == "bits" else
                              f"masec-{by}-{'pareto' if pareto else 'max' + str(ml).replace('%', 'pct')}")
        study = None
        if trials > 0 or storage:
            study = study_mod.make_study(storage_url, name, goal=goal, seed=seed, n_groups=len(space.groups))
            n_prev = len(study.trials)
            opt_choices = _optuna_choices(space, sens, choices, ilp_pts, goal.mode == "pareto", feasible)
            saved = study.user_attrs.get("choices")
            if saved and set(saved) == set(space.groups):
                opt_choices = {g: [Candidate.parse(k) for k in saved[g]] for g in space.groups}
            else:
                study.set_user_attr("choices", {g: [c.key for c in opt_choices[g]] for g in space.groups})
            choices = opt_choices
            added = study_mod.add_points(study, space, choices, ilp_pts, goal)
            log.info("study %s at %s: %d earlier trials, %d ILP points added", name,
                     report.mask_url(storage_url), n_prev, added)
            task = ui.task("optuna", trials)
            study_mod.run_trials(study, space, choices, evaluate_point, trials, goal,
                                 callback=lambda st, tr: ui.advance(task))
            # every completed trial of the study (all workers): one point per distinct assignment,
            # listing the trial numbers and workers that evaluated it
            for p in study_mod.study_points(study, space):
                k = tuple(sorted(p["assignment"].items()))
                q = cache.setdefault(k, p)
                if q is p:
                    points.append(p)
                q.setdefault("trials", [])
                q.setdefault("workers", [])
                q["trials"].append(p.pop("trial") if q is p else p["trial"])
                w = p.pop("worker", None) if q is p else p["worker"]
                if w is not None and w not in q["workers"]:
                    q["workers"].append(w)
    finally:
        emu.close()

    # 5. choose
    front = pareto_front(points, higher_is_better=higher_is_better)
    feas = [p for p in points if feasible(p)]
    if goal.mode == "bits":
        if feas:
            chosen = min(feas, key=lambda p: (p["loss"], p["avg_bits"]))
        else:
            chosen = min(points, key=lambda p: (p["avg_bits"], p["loss"]))
            log.warning("no evaluated point is within --max-bits %g; chose the cheapest one", max_bits)
    elif ml is not None and feas:
        chosen = min(feas, key=lambda p: (p["avg_bits"], p["loss"]))
    elif ml is not None:
        chosen = min(points, key=lambda p: (p["loss"], p["avg_bits"]))
        log.warning("no evaluated point is within --max-loss %s; chose the most accurate one (loss %.4g)",
                    ml, chosen["loss"])
    else:
        chosen = report.knee(front)
    chosen = dict(chosen)
    chosen["within_max_loss"] = (bool(chosen["loss"] <= ml.value + 1e-12) if ml is not None else None)
    if goal.mode == "bits":
        chosen["within_max_bits"] = bool(feasible(chosen))
    chosen_assign = space.from_keys(chosen["assignment"])
    site_assign = space.expand(chosen_assign)
    spec = spec_from_assignment(space, site_assign)
    if weight_rounding == "gptq":      # masec compile --precision rounds the weights the same way
        spec.options = {"weight_rounding": "gptq", "calibration_batches": len(gptq_calib)}

    wall = time.time() - t0
    res = SearchResult(out, chosen, float_metric, points, front, spec, space, metric_name, higher_is_better, ml,
                       wall, uniform, max_bits=max_bits, emulation=emulation, parallelism=parallelism,
                       weight_rounding=weight_rounding)
    res.files = report.write_all(res, sens, site_assign, storage_url if study is not None else None,
                                 name if study is not None else None, by, seed, dump_precision)
    ui.summary(res)
    log.info("chosen: bits=%.4f %s=%.6g loss=%+.4g (float32 %.6g); %d points; %.1f s",
             chosen["avg_bits"], metric_name, chosen["metric"], chosen["loss"], float_metric, len(points), wall)
    return res
