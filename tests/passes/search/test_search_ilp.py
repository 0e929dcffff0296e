"""Sensitivity analysis and the HiGHS knapsack: budget respected, optimal, known-best on the toy model."""
import itertools
import random
import sys
from pathlib import Path

import pytest
import torch

from masec.passes.search import ilp
from masec.passes.search.emulate import Emulator
from masec.passes.search.objectives import Proxy
from masec.passes.search.space import Candidate, build_space, candidates, discover_sites

sys.path.insert(0, str(Path(__file__).parent))
import toy_model  # noqa: E402


def brute(costs, losses, budget):
    best = None
    for choice in itertools.product(*[range(len(r)) for r in costs]):
        if sum(losses[i][j] for i, j in enumerate(choice)) <= budget:
            c = sum(costs[i][j] for i, j in enumerate(choice))
            if best is None or c < best[0] - 1e-12:
                best = (c, choice)
    return best


def test_mckp_is_optimal_and_respects_budget():
    rng = random.Random(7)
    for _ in range(25):
        n, m = rng.randint(1, 4), rng.randint(2, 4)
        costs = [[rng.uniform(1, 10) for _ in range(m)] for _ in range(n)]
        losses = [[rng.uniform(0, 1) ** 3 for _ in range(m)] for _ in range(n)]
        budget = rng.uniform(0, 1.5)
        got = ilp.solve_mckp(costs, losses, budget)
        want = brute(costs, losses, budget)
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert sum(losses[i][j] for i, j in enumerate(got)) <= budget + 1e-9
        assert sum(costs[i][j] for i, j in enumerate(got)) == pytest.approx(want[0], rel=1e-6)


@pytest.fixture(scope="module")
def toy_sens():
    model = toy_model.model
    sites, _, _ = discover_sites(model, toy_model.example_inputs)
    space = build_space(sites, "node", candidates(("mxint8", "mxint6", "mxint4", "mxfp6_e2m3", "mxfp4"), (32, 64)))
    with Emulator(model, space, example_inputs=toy_model.example_inputs) as emu:
        sens = ilp.sensitivity(space, emu, Proxy(model, toy_model.calibration_data))
        # the emulator gives the float model back
        assert toy_model.evaluate(model) == pytest.approx(float(toy_model.evaluate(model)))
    return space, sens


def test_sensitivity_ordering(toy_sens):
    space, sens = toy_sens
    for c in space.cands:
        # the scaled-down layers are ~100^2 times less sensitive than the main one
        assert sens["weight:big"][c.key] > 100 * sens["weight:small1"][c.key]
        assert sens["weight:big"][c.key] > 100 * sens["weight:small2"][c.key]
    for g in space.groups:
        for b in (32, 64):
            s8, s6, s4 = (sens[g][f"mxint{k}:{b}"] for k in (8, 6, 4))
            assert s8 < s6 < s4
        assert sens[g]["mxint4:32"] <= sens[g]["mxint4:64"] * 1.5  # smaller blocks are not (much) worse


def test_ilp_finds_known_best(toy_sens):
    space, sens = toy_sens
    budget = 1e-3
    a = ilp.ilp_assignment(space, sens, budget)
    assert a is not None and ilp.predicted(space, sens, a) <= budget
    cheapest = min(c.bits for c in space.cands)
    assert a["weight:small1"].bits == cheapest and a["weight:small2"].bits == cheapest
    assert a["weight:big"].bits > cheapest + 1 and a["act:x"].bits > cheapest + 1
    # optimal under the additive model: brute force over every assignment
    groups = list(space.groups)
    best = None
    for combo in itertools.product(space.cands, repeat=len(groups)):
        cand = dict(zip(groups, combo))
        if ilp.predicted(space, sens, cand) <= budget:
            bits = space.avg_bits(cand)
            best = bits if best is None else min(best, bits)
    assert space.avg_bits(a) == pytest.approx(best)
    # infeasible budget -> None; huge budget -> cheapest everywhere
    assert ilp.ilp_assignment(space, sens, 0.0) is None or ilp.predicted(space, sens, ilp.ilp_assignment(space, sens, 0.0)) == 0
    big = ilp.ilp_assignment(space, sens, 1e9)
    assert all(c.bits == cheapest for c in big.values())


@torch.no_grad()
def test_linear_emulator_quantizes_weights_and_linear_inputs():
    model = toy_model.model
    sites, _, _ = discover_sites(model, toy_model.example_inputs)
    space = build_space(sites, "node")
    w0 = model.big.weight.detach().clone()
    c = Candidate.make("mxint4", 32)
    with Emulator(model, space, mode="linear") as emu:
        emu.apply({"weight:big": c})
        assert (model.big.weight == c.format.quantize(w0)).all()
        assert (model.small1.weight != c.format.quantize(model.small1.weight)).any()
        x = toy_model.example_inputs[0]
        emu.apply({"act:x": c})
        y = model(x)
        emu.apply({})
        want = model(c.format.quantize(x))
        assert (y == want).all()
    assert (model.big.weight == w0).all()
    assert not model.big._forward_pre_hooks


def test_dual_knapsack_at_a_bits_budget(toy_sens):
    space, sens = toy_sens
    cap = 5.0
    a = ilp.ilp_min_loss_at_bits(space, sens, cap)
    assert a is not None and space.avg_bits(a) <= cap + 1e-9
    best = min(ilp.predicted(space, sens, dict(zip(space.groups, combo)))
               for combo in itertools.product(space.cands, repeat=len(space.groups))
               if space.avg_bits(dict(zip(space.groups, combo))) <= cap + 1e-9)
    assert ilp.predicted(space, sens, a) == pytest.approx(best, rel=1e-6)
    assert ilp.ilp_min_loss_at_bits(space, sens, 3.0) is None
