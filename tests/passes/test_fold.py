"""fold: lanes per node under a resource budget (HiGHS), overrides, refusals, monotone throughput."""
from pathlib import Path

import pytest

from masec.config import CompileConfig
from masec.errors import MasecError
from masec.meta import meta
from masec.parts import RESOURCES, lookup_part
from masec.passes.hw.fold import LANE_CANDIDATES, Option, fold_nodes, fold_summary, solve_lanes

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"
LLAMA = ROOT / "tests" / "compiler" / "models" / "llama_block.py"


def _stand_in_estimate(kernel, params, n_outputs=None):
    """A cost model of the same shape as masec.cost_model's, for when its fit is not shipped yet."""
    p = {k: v for k, v in params.items() if isinstance(v, int)}
    lanes = max([p.get(k, 1) for k in ("P", "P_IN", "P_OUT", "P_N", "P_A")] + [1])
    macs = p.get("P_IN", 1) * p.get("P_OUT", 1) if kernel == "mx_linear" else p.get("P_N", lanes)
    if kernel == "stream_fifo":
        bits = p.get("WIDTH", 8) * p.get("DEPTH", 2)
        return {"LUT": 10 + p.get("WIDTH", 8) // 2, "FF": 2 * p.get("WIDTH", 8),
                "DSP": 0, "BRAM": (bits + 36863) // 36864 if p.get("RAM_STYLE") else 0}
    dsp = macs if kernel in ("mx_linear", "mx_matmul") else 0
    return {"LUT": 200 + 120 * lanes + 90 * (macs if dsp else 0), "FF": 150 + 60 * lanes, "DSP": dsp,
            "BRAM": 1 if kernel in ("mx_linear", "stream_reorder", "mx_matmul") else 0}


@pytest.fixture
def cost(monkeypatch):
    """The shipped cost model when its fit is there, else a stand-in with its interface."""
    import masec.cost_model as cm

    try:
        cm.estimate("mx_relu", {"P": 4, "W": 8, "REG": 1})
        return "shipped"
    except MasecError:
        pass

    def estimate_design(ir):
        nodes = {i.name: _stand_in_estimate(i.kernel, i.params) for i in ir.instances.values() if not i.is_port}
        for k, e in enumerate(ir.edges):
            nodes[f"fifo_e{k}"] = _stand_in_estimate("stream_fifo", {"WIDTH": e.type.bus_bits, "DEPTH": e.depth,
                                                                    "RAM_STYLE": e.ram_style})
        return {"total": {r: sum(n[r] for n in nodes.values()) for r in RESOURCES}, "nodes": nodes}

    monkeypatch.setattr(cm, "estimate", _stand_in_estimate)
    monkeypatch.setattr(cm, "estimate_design", estimate_design)
    return "stand-in"


def _lowered(model, part, budget, precision=""):
    from masec.backend import lower

    cfg = CompileConfig(model_file=str(model), out="unused", part=part, budget=budget,
                        precision_file=str(precision)).validated()
    gm, ir, _values, _inputs = lower(cfg)
    return cfg, gm, ir


def test_solver_minimizes_the_bottleneck_then_the_resources():
    # node 0 sets the bottleneck; node 1 is not widened past what the bottleneck needs
    opts = [[Option(1, 800, (100, 10, 0, 0)), Option(2, 400, (200, 20, 0, 0)), Option(4, 200, (400, 40, 0, 0))],
            [Option(1, 300, (50, 5, 0, 0)), Option(2, 150, (90, 9, 0, 0))]]
    big = [10_000, 10_000, 10, 10]
    assert solve_lanes(opts, big) == [2, 1]                     # T = 200 needs both widened
    assert solve_lanes(opts, [440, 10_000, 10, 10]) == [1, 0]   # 400+50 > 440: T = 400; node 1 stays narrow
    assert solve_lanes(opts, [140, 10_000, 10, 10]) is None     # even 100 + 50 > 140


def test_solver_matches_brute_force_on_random_instances():
    import itertools
    import random

    rng = random.Random(7)
    for _ in range(20):
        opts = [[Option(2 ** j, rng.randint(50, 1000) // (j + 1), tuple(float(rng.randint(1, 100) * (j + 1))
                                                                   for _ in RESOURCES)) for j in range(3)]
                for _ in range(4)]
        caps = [float(rng.randint(80, 800)) for _ in RESOURCES]
        best = None
        for pick in itertools.product(range(3), repeat=4):
            used = [sum(opts[i][j].res[k] for i, j in enumerate(pick)) for k in range(len(RESOURCES))]
            if all(u <= c for u, c in zip(used, caps)):
                t = max(opts[i][j].cycles for i, j in enumerate(pick))
                best = t if best is None else min(best, t)
        pick = solve_lanes(opts, caps)
        if best is None:
            assert pick is None
        else:
            assert max(opts[i][j].cycles for i, j in enumerate(pick)) == best


@pytest.mark.parametrize("model,part,budgets", [
    (MLP, "xc7z020", (0.002, 0.02, 0.05, 0.1, 0.25, 1.0)),
    (LLAMA, "xczu9eg", (0.01, 0.05, 0.1, 0.25, 1.0))])
def test_budget_respected_and_throughput_never_falls_as_the_budget_grows(cost, model, part, budgets):
    cap = lookup_part(part).capacity()
    seen = []
    for budget in budgets:
        try:
            cfg, gm, ir = _lowered(model, part, budget)
        except MasecError as exc:
            assert "no design fits" in str(exc) or "does not" in str(exc), str(exc)
            assert not seen, f"budget {budget} infeasible after a smaller one fitted"
            continue
        s = fold_summary(ir, cfg)
        for r in RESOURCES:                          # the whole design's estimate is within the budget
            assert s["total"][r] <= budget * cap[r] + 1e-6, (budget, r, s["total"][r])
        assert all(s["within_budget"].values())
        assert all(meta(n).folding.origin == "budget" for n in fold_nodes(gm))
        seen.append((budget, s["bottleneck_cycles"]))
        print(f"[{cost}] {model.stem} on {part} budget {budget}: bottleneck {s['bottleneck']} "
              f"{s['bottleneck_cycles']} cycles, total {s['total']}")
    assert len(seen) >= 3, seen
    cycles = [c for _, c in seen]
    assert all(b <= a for a, b in zip(cycles, cycles[1:])), seen     # throughput = 1 / bottleneck cycles
    assert cycles[-1] < cycles[0], seen                               # the budget buys throughput


def test_infeasible_budget_is_refused_with_the_resource(cost):
    with pytest.raises(MasecError, match=r"--budget 0\.0001 of xc7z020: no design fits .*LUT"):
        _lowered(LLAMA, "xc7z020", 0.0001)


def test_no_budget_keeps_the_global_parallelism_and_says_so(cost):
    cfg, gm, ir = _lowered(MLP, "xcu250", None)
    assert {meta(n).folding.lanes for n in fold_nodes(gm)} == {4}
    assert not any(i.kernel == "mx_retile" for i in ir.instances.values())
    s = fold_summary(ir, cfg)
    assert "no --budget" in s["mode"] and "--parallelism 4" in s["mode"]
    assert all(s["fits_part"].values())


def test_lanes_override_is_a_fixed_choice_under_a_budget(cost, tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('[node."fc2"]\nlanes = 1\n')
    cfg, gm, ir = _lowered(MLP, "xcu250", 0.5, p)
    f = {n.name: meta(n).folding for n in fold_nodes(gm)}
    assert f["fc2"].lanes == 1 and f["fc2"].origin == "override"
    assert ir.instances["fc2"].params["P_IN"] == 1
    assert max(LANE_CANDIDATES) >= f["fc1"].lanes > 1 and f["fc1"].origin == "budget"
    from masec.passes.hw.fold import fold

    assert fold(gm, cfg) == (gm, False)                          # a second run changes nothing


def test_budget_is_validated_before_any_pass():
    for bad in (0, -0.1, 1.5):
        with pytest.raises(MasecError, match=r"--budget .*0 < F <= 1"):
            CompileConfig(model_file=str(MLP), out="o", budget=bad).validated()


@pytest.mark.slow
def test_yosys_total_of_a_budgeted_design_stays_within_the_budget(tmp_path, monkeypatch, capsys):
    """masec synth (Yosys synth_xilinx, per kernel) of the MLP folded onto 10% of an xc7z020."""
    import json

    import masec.cost_model as cm
    from masec.cli import main

    try:
        cm.estimate("mx_relu", {"P": 4, "W": 8, "REG": 1})
    except MasecError as exc:
        pytest.skip(f"the cost model's fit is not shipped: {exc}")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "o"
    budget, part = 0.1, "xc7z020"
    assert main(["compile", str(MLP), "--out", str(out), "--part", part, "--budget", str(budget)]) == 0
    folding = json.loads((out / "report" / "report.json").read_text())["folding"]
    assert main(["synth", str(out)]) == 0
    total = json.loads((out / "report" / "synth.json").read_text())["total"]
    cap = lookup_part(part).capacity()
    print(f"budget {budget} of {part}: estimated {folding['total']}, Yosys {total}")
    for r in RESOURCES:
        assert total[r] <= budget * cap[r], (r, total[r], budget * cap[r], folding["total"])


def test_the_budget_is_checked_on_the_pipelined_design(cost):
    """fold checks the budget on the IR the compiler builds: same kernels, same PIPE per instance and
    per block-RAM FIFO as the compiled design (at --clock 4 every kernel has registers to pay for)."""
    from masec.passes.hw.fold import build_design_ir

    cfg, gm, ir = _lowered(LLAMA, "xczu9eg", 0.25)
    again = build_design_ir(gm, cfg)
    pipes = {n: i.params.get("PIPE") for n, i in ir.instances.items() if not i.is_port}
    assert {n: i.params.get("PIPE") for n, i in again.instances.items() if not i.is_port} == pipes
    assert any(p for p in pipes.values()), pipes            # the clock asks for pipelined kernels
    assert [e.pipe for e in again.edges] == [e.pipe for e in ir.edges]
