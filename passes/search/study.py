"""Optuna stage: a study over the per-group candidates, seeded with the ILP points.

Storage is SQLite in the output folder by default (``sqlite:///DIR/study.db``); any Optuna RDB
URL (PostgreSQL, MySQL) works, so several workers on several machines run trials of one study.
Studies are created with ``load_if_exists`` and resume where they stopped.

* Constraint mode (``max_loss`` set): TPE, one objective (average bits, minimized), the loss
  beyond ``max_loss`` as an Optuna constraint (``trial.set_constraint``).
* Bits mode (``max_bits`` set): TPE, one objective (the metric), the bits beyond ``max_bits`` as
  the constraint.
* Pareto mode (``max_loss`` None): NSGA-II, two objectives (metric, average bits).
"""
from __future__ import annotations

import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from masec.passes.search.space import Candidate, Space

log = logging.getLogger("masec.search")

CONSTRAINT_KEY = "over_budget"


@dataclass(frozen=True)
class Goal:
    """What the study optimizes. ``loss``: fewest bits, loss <= max_loss as a constraint (TPE);
    ``bits``: best metric, average bits <= max_bits as a constraint (TPE); ``pareto``: (metric,
    bits) (NSGA-II)."""

    mode: str
    higher_is_better: bool = False
    max_loss: object = None        # objectives.MaxLoss
    max_bits: float | None = None

    def directions(self) -> list[str]:
        metric = "maximize" if self.higher_is_better else "minimize"
        return {"pareto": [metric, "minimize"], "loss": ["minimize"], "bits": [metric]}[self.mode]

    def values(self, p: dict) -> list[float]:
        return {"pareto": [p["metric"], p["avg_bits"]], "loss": [p["avg_bits"]], "bits": [p["metric"]]}[self.mode]

    def constraint(self, p: dict) -> float | None:
        if self.mode == "loss" and self.max_loss is not None:
            return p["loss"] - self.max_loss.value
        if self.mode == "bits":
            return p["avg_bits"] - self.max_bits
        return None


def default_storage(out_dir) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_study(storage: str, study_name: str, *, goal: Goal, seed: int, n_groups: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if goal.mode == "pareto":
        sampler = optuna.samplers.NSGAIISampler(population_size=max(8, min(50, 2 * n_groups)), seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)
    directions = goal.directions()
    kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {}
    # workers starting together race to create the schema and the study: retry a few times
    for attempt in range(6):
        try:
            st = optuna.storages.RDBStorage(storage, engine_kwargs=kwargs)
            return optuna.create_study(storage=st, study_name=study_name, sampler=sampler, directions=directions,
                                       load_if_exists=True)
        except Exception as exc:  # noqa: BLE001 - re-raised after the last attempt
            if attempt == 5 or isinstance(exc, ValueError):
                raise
            log.warning("creating study %s failed (%s: %s); retrying", study_name, type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")
            time.sleep(0.5 + random.random())


def distributions(space: Space, choices: dict[str, list[Candidate]]):
    import optuna

    return {g: optuna.distributions.CategoricalDistribution([c.key for c in choices[g]]) for g in space.groups}


def add_points(study, space: Space, choices, points: list[dict], goal: Goal) -> int:
    """Record already evaluated points (ILP) as completed trials, skipping any already present."""
    import optuna

    dists = distributions(space, choices)
    have = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)}
    n = 0
    for p in points:
        params = dict(p["assignment"])
        if any(params[g] not in dists[g].choices for g in params):
            continue
        key = tuple(sorted(params.items()))
        if key in have:
            continue
        have.add(key)
        attrs = {k: p[k] for k in ("avg_bits", "metric", "loss", "source", "predicted") if k in p}
        attrs["worker"] = worker_id()
        c = goal.constraint(p)
        constraints = None if c is None else {CONSTRAINT_KEY: c}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  values=goal.values(p), user_attrs=attrs,
                                                  constraints=constraints))
        n += 1
    return n


def run_trials(study, space: Space, choices, evaluate_point, n_trials: int, goal: Goal, callback=None) -> None:
    """``n_trials`` new trials; ``evaluate_point(assignment, source)`` returns a point dict."""
    if n_trials <= 0:
        return

    def objective(trial):
        assign = {g: Candidate.parse(trial.suggest_categorical(g, [c.key for c in choices[g]]))
                  for g in space.groups}
        p = evaluate_point(assign, "optuna")
        for k in ("avg_bits", "metric", "loss"):
            trial.set_user_attr(k, p[k])
        trial.set_user_attr("source", "optuna")
        trial.set_user_attr("worker", worker_id())
        c = goal.constraint(p)
        if c is not None:
            trial.set_constraint(CONSTRAINT_KEY, c)
        v = goal.values(p)
        return tuple(v) if len(v) > 1 else v[0]

    cbs = [callback] if callback else []
    try:
        study.optimize(objective, n_trials=n_trials, callbacks=cbs, gc_after_trial=False)
    except KeyboardInterrupt:  # keep what was found; rerunning with the same study continues it
        log.warning("interrupted: writing the results so far; rerun the same command to continue the study")


def study_points(study, space: Space) -> list[dict]:
    """Every completed trial of the study (all workers, all sessions) as a point dict."""
    import optuna

    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        ua = t.user_attrs
        if "avg_bits" not in ua or set(t.params) != set(space.groups):
            continue
        out.append({"avg_bits": float(ua["avg_bits"]), "metric": float(ua["metric"]), "loss": float(ua["loss"]),
                    "source": ua.get("source", "optuna"), "trial": t.number, "worker": ua.get("worker"),
                    "assignment": {g: t.params[g] for g in sorted(t.params)}})
    return out
