"""One-shot sensitivity analysis and its multiple-choice knapsack ILP (HiGHS through ``highspy``).

``sensitivity(space, emulator, proxy)`` quantizes one group at a time at every candidate (the rest
float32) and records the calibration proxy. Under the additive model the predicted proxy of an
assignment is the sum of its groups' entries; ``solve_mckp`` picks one candidate per group that
minimizes the cost (bits x elements) subject to predicted proxy <= budget, exactly (a MIP, not a
greedy heuristic).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np

from masec.passes.search.space import Candidate, Space


def sensitivity(space: Space, emulator, proxy, progress=None) -> dict[str, dict[str, float]]:
    """{group: {candidate key: proxy with only that group quantized}}; ``progress()`` per evaluation."""
    table: dict[str, dict[str, float]] = {}
    for g, site_keys in space.groups.items():
        row = {}
        for c in space.cands_for(g):
            emulator.apply({s: c for s in site_keys})
            v = proxy()
            row[c.key] = v if math.isfinite(v) else 1e30
            if progress:
                progress()
        table[g] = row
    emulator.restore()
    return table


def dominated_pruned(space: Space, sens: dict[str, dict[str, float]], g: str) -> list[Candidate]:
    """Candidates of group ``g`` not dominated by another (fewer or equal bits and lower proxy)."""
    cands = sorted(space.cands_for(g), key=lambda c: (c.bits, sens[g][c.key], c.key))
    keep, best = [], float("inf")
    for c in cands:
        if sens[g][c.key] < best:
            keep.append(c)
            best = sens[g][c.key]
    return keep


@contextlib.contextmanager
def _quiet_fd1():
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def solve_mckp(costs: list[list[float]], losses: list[list[float]], budget: float,
               time_limit: float = 30.0) -> list[int] | None:
    """Multiple-choice knapsack: one choice j per group i, minimize sum costs[i][j] subject to
    sum losses[i][j] <= budget. Returns the chosen index per group, or None if infeasible."""
    import highspy

    if sum(min(row) for row in losses) > budget * (1 + 1e-12) + 1e-15:
        return None
    with _quiet_fd1():  # HiGHS prints its banner on stdout when the first model is made
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", 1e-6)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("threads", 1)
    idx = []
    n = 0
    for row in costs:
        idx.append(list(range(n, n + len(row))))
        n += len(row)
    flat_c = np.array([c for row in costs for c in row], dtype=np.float64)
    flat_l = np.array([v for row in losses for v in row], dtype=np.float64)
    inf = highspy.kHighsInf
    h.addVars(n, np.zeros(n), np.ones(n))
    h.changeColsCost(n, np.arange(n, dtype=np.int32), flat_c)
    h.changeColsIntegrality(n, np.arange(n, dtype=np.int32),
                            np.array([highspy.HighsVarType.kInteger] * n))
    for cols in idx:  # exactly one choice per group
        h.addRow(1.0, 1.0, len(cols), np.array(cols, dtype=np.int32), np.ones(len(cols)))
    # scale the knapsack row so that its coefficients are O(1) for the solver's tolerances
    scale = max(float(flat_l.max(initial=0.0)), budget, 1e-300)
    h.addRow(-inf, budget / scale, n, np.arange(n, dtype=np.int32), flat_l / scale)
    knap = len(idx)
    b = budget
    for _ in range(4):  # HiGHS works to a tolerance: tighten until the solution is within the budget
        h.run()
        status = h.getModelStatus()
        if status not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit):
            return None
        x = np.array(h.getSolution().col_value)
        if x.size != n:
            return None
        choice = [int(np.argmax(x[cols])) for cols in idx]
        used = sum(losses[i][j] for i, j in enumerate(choice))
        if used <= budget * (1 + 1e-9) + 1e-15:
            return choice
        b = b - 2 * (used - budget) - 1e-9 * scale
        if b < 0:
            return None
        h.changeRowBounds(knap, -inf, b / scale)
    return None


def ilp_assignment(space: Space, sens: dict[str, dict[str, float]], budget: float) -> dict[str, Candidate] | None:
    """Cheapest group assignment whose predicted proxy (sum of sensitivities) is <= ``budget``."""
    groups = list(space.groups)
    options = [dominated_pruned(space, sens, g) for g in groups]
    total = max(space.total_numel, 1)
    costs = [[space.group_numel(g) * c.bits / total for c in opts] for g, opts in zip(groups, options)]
    losses = [[max(sens[g][c.key], 0.0) for c in opts] for g, opts in zip(groups, options)]
    p_min = sum(min(row) for row in losses)
    if budget <= p_min * (1 + 1e-9):   # only the most accurate choices fit
        choice = [min(range(len(row)), key=lambda j: (row[j], costs[i][j])) for i, row in enumerate(losses)]
        return {g: opts[j] for g, opts, j in zip(groups, options, choice)} if budget >= p_min * (1 - 1e-9) else None
    choice = solve_mckp(costs, losses, budget)
    if choice is None:
        return None
    return {g: opts[j] for g, opts, j in zip(groups, options, choice)}


def predicted(space: Space, sens, assignment: dict[str, Candidate]) -> float:
    return sum(max(sens[g][c.key], 0.0) for g, c in assignment.items())


def min_loss_assignment(space: Space, sens) -> dict[str, Candidate]:
    """Per group the candidate with the lowest proxy (ties: fewer bits)."""
    return {g: min(space.cands_for(g), key=lambda c: (sens[g][c.key], c.bits, c.key)) for g in space.groups}


def ilp_min_loss_at_bits(space: Space, sens: dict[str, dict[str, float]], max_bits: float) -> dict[str, Candidate] | None:
    """The dual knapsack: the assignment with the lowest predicted proxy whose average bits are
    <= ``max_bits`` (None when even the cheapest candidates exceed it)."""
    groups = list(space.groups)
    options = [dominated_pruned(space, sens, g) for g in groups]
    total = max(space.total_numel, 1)
    costs = [[space.group_numel(g) * c.bits / total for c in opts] for g, opts in zip(groups, options)]
    losses = [[max(sens[g][c.key], 0.0) for c in opts] for g, opts in zip(groups, options)]
    choice = solve_mckp(losses, costs, max_bits)
    if choice is None:
        return None
    return {g: opts[j] for g, opts, j in zip(groups, options, choice)}
