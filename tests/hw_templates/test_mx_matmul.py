"""mx_matmul: model vs exact rational reference; RTL vs model (both transposes) under gaps/backpressure."""
import random
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels.mx_matmul import (
    MAX_PIPE, exact_matmul, ideal_cycles, instance_config, interleave, latency, matmul_accumulators, matmul_model, matmul_widths,
)
from masec.hw_templates.render import render_with_deps
from masec.passes.hw.pipeline import pipe_depth
from masec.sim.mxstream import mx_beats
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile
from mx_helpers import write_multi_top, yosys_netlist
from pipe_helpers import assert_pipe_latency
from test_mx_linear import random_mx


def fmt(name, block=32):
    return parse_format(name, block_size=block)


def operands(rng, a_el, b_el, M, K, N, BA, BB, trans_b):
    a = random_mx(rng, a_el, M, -(-K // BA), BA, K)
    if trans_b:
        b = random_mx(rng, b_el, N, -(-K // BB), BB, K)
    else:
        b = random_mx(rng, b_el, K, -(-N // BB), BB, N)
    return a, b


# ----------------------------------------------------------------------------- model tests
@pytest.mark.parametrize("af,bf,trans_b", [("mxint8", "mxint8", True), ("mxfp8_e4m3", "mxfp8_e4m3", False),
                                           ("mxfp4", "mxint8", True), ("mxfp8_e5m2", "mxfp4", False)])
def test_accumulators_within_bound_of_exact(af, bf, trans_b, seed):
    """|acc - exact| <= K ulps of the final accumulator exponent (one per product step)."""
    rng = random.Random(seed)
    a_el, b_el = fmt(af).element, fmt(bf).element
    M, K, N = 3, 40, 5
    (ac, asc), (bc, bsc) = operands(rng, a_el, b_el, M, K, N, 32, 32, trans_b)
    asc.clamp_(110, 145)
    bsc.clamp_(110, 145)
    A, X = matmul_accumulators(ac, asc, a_el, bc, bsc, b_el, trans_b, K, N)
    ex = exact_matmul(ac, asc, a_el, bc, bsc, b_el, trans_b, K, N)
    w = matmul_widths(a_el, b_el)
    worst = 0.0
    for m in range(M):
        for n in range(N):
            err = abs(Fraction(A[m][n]) * Fraction(2) ** X[m][n] - ex[m][n])
            assert err <= K * Fraction(2) ** X[m][n]
            assert abs(A[m][n]) <= 1 << (w["AW"] - 2)
            if ex[m][n]:
                worst = max(worst, float(err / abs(ex[m][n])))
    print(f"{af} x {bf} (TRANS_B={int(trans_b)}): worst relative accumulator error {worst:.3g}")


def test_transposes_agree():
    """A B^T with B given as [N, K] equals A B with the same B given as [K, N] (where scales allow)."""
    rng = random.Random(3)
    el = fmt("mxint8").element
    M, K, N = 2, 32, 32
    (ac, asc), _ = operands(rng, el, el, M, K, N, 32, 32, True)
    # a B whose every block scale is equal: the same values in both layouts
    bcodes = torch.tensor([[rng.randrange(256) for _ in range(K)] for _ in range(N)])
    bt = bcodes.reshape(N, 1, K), torch.full((N, 1), 127)
    bn = bcodes.t().contiguous().reshape(K, 1, N), torch.full((K, 1), 127)
    c1 = matmul_model(ac, asc, el, *bt, el, el, 32, True, K, N)
    c2 = matmul_model(ac, asc, el, *bn, el, el, 32, False, K, N)
    assert torch.equal(c1[0], c2[0]) and torch.equal(c1[1], c2[1])


# ----------------------------------------------------------------------------- RTL tests
RTL_CONFIGS = [  # af, bf, of, M, K, N, trans_b, BA, BB, BC, P_A, P_B, P_N, loads
    # NPN = 4 passes per row: the accumulator interleave is 2 at PIPE 2 and 4 at PIPE 3
    ("mxint8", "mxint8", "mxint8", 3, 40, 14, True, 32, 32, 32, 8, 4, 4, 2),
    ("mxfp8_e4m3", "mxfp4", "mxfp8_e4m3", 3, 12, 28, False, 16, 32, 32, 4, 8, 8, 2),
]
RTL_PARAMS = {"N": 14, "P_N": 4}   # the NPN (and so the latency) both RTL_CONFIGS share
SLOW_CONFIGS = [
    ("mxint8", "mxint8", "mxint8", 3, 40, 12, True, 32, 32, 16, 8, 4, 4, 2),
    ("mxfp8_e4m3", "mxfp4", "mxfp8_e4m3", 3, 12, 40, False, 16, 32, 32, 4, 8, 8, 2),
    ("mxfp4", "mxfp4", "mxfp4", 4, 64, 32, True, 32, 32, 32, 32, 32, 8, 2),
    ("mxint8", "mxfp8_e4m3", "mxint8", 4, 16, 64, False, 32, 32, 32, 16, 16, 16, 2),
]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mx_matmul_builds")


def run_configs(build_root, seed, cfgs, mutate=False, yosys=False, pipe=0):
    """Simulate ``cfgs`` together (instance i = streams s_a<i>, s_b<i>, m_y<i>) at ``PIPE = pipe``;
    returns (result, slack)."""
    rng = random.Random(seed)
    inputs, outputs, insts, ideal, slack = {}, {}, [], 0, 0
    for i, cfg in enumerate(cfgs):
        af, bf, of, M, K, N, tb, BA, BB, BC, pa, pb, pn, loads = cfg
        a_fmt, b_fmt, o_fmt = fmt(af, BA), fmt(bf, BB), fmt(of, BC)
        a_el, b_el, o_el = a_fmt.element, b_fmt.element, o_fmt.element
        a_beats, b_beats, y_beats = [], [], []
        for _ in range(loads):
            (ac, asc), (bc, bsc) = operands(rng, a_el, b_el, M, K, N, BA, BB, tb)
            yc, ys = matmul_model(ac, asc, a_el, bc, bsc, b_el, o_el, BC, tb, K, N)
            a_beats += mx_beats(ac, asc, a_el.bits, pa)
            b_beats += mx_beats(bc, bsc, b_el.bits, pb)
            y_beats += mx_beats(yc, ys, o_el.bits, pn)
        inputs[f"s_a{i}"] = StreamVectors(("data", "scale"), a_beats, {"data": (pa, a_el.bits)})
        inputs[f"s_b{i}"] = StreamVectors(("data", "scale"), b_beats, {"data": (pb, b_el.bits)})
        outputs[f"m_y{i}"] = StreamVectors(("data", "scale"), y_beats, {"data": (pn, o_el.bits)})
        _, params, top = instance_config(M, K, N, a_fmt, b_fmt, o_fmt, tb, pa, pb, pn)
        params["PIPE"] = pipe
        insts.append((params, {"s_a": (pa * a_el.bits, True), "s_b": (pb * b_el.bits, True),
                               "m_y": (pn * o_el.bits, True)}))
        ideal_i = loads * ideal_cycles(M, K, N, pn, BB, tb, pb)
        # per load: the RAM read after the last B write and the pipeline (6); then one C block in the quantizer
        # (+ the pipeline's latency)
        ideal, slack = max(ideal, ideal_i), max(slack, ideal_i + loads * 6 + BC // pn + 2 + latency(params))
    if mutate:
        outputs["m_y0"].beats[5][0] ^= 1
    vf = VectorFile(inputs, outputs, seed=seed, gap_prob=0.3, stall_prob=0.3, ideal_cycles=ideal)
    folder = build_root / (f"multi_pipe{pipe}_" + "_".join("-".join(map(str, c)) for c in cfgs))
    files = render_with_deps("mx_matmul", folder / "rtl")
    files.append(write_multi_top(folder / "rtl" / "tb_mx_matmul.sv", "tb_mx_matmul", "mx_matmul", insts))
    if yosys:
        files = [yosys_netlist(files, "tb_mx_matmul", folder / "yosys_netlist.v")]
        folder = folder / "yosys"
    return run_stream_test(files, "tb_mx_matmul", vf, folder / "build"), slack


def check_rtl(build_root, seed, cfgs, pipe=0):
    res, slack = run_configs(build_root, seed, cfgs, pipe=pipe)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_matmul PIPE {pipe} {cfgs}: full_rate {full['cycles']} cycles (slowest instance), ideal "
          f"{full['ideal_cycles']} (ratio {full['cycles'] / full['ideal_cycles']:.3f}), bound {slack}")
    assert full["cycles"] <= slack
    return full["cycles"]


_FULL_RATE: dict = {}   # PIPE -> full-rate cycles of RTL_CONFIGS (test_pipeline_latency)
_SEED0 = random.SystemRandom().randrange(1, 2 ** 31)   # one stimulus for both PIPEs


@pytest.mark.parametrize("pipe", [0, 2, MAX_PIPE])
def test_rtl_matches_model(build_root, pipe):
    """Q K^T (TRANS_B = 1, int8, K = 40 partial block, N = 14: two lanes masked in the last pass, four
    zero beats padding C's block) and scores x V (TRANS_B = 0, fp8 x fp4, N = 28) in one build, two B
    loads each; gaps and backpressure, exact comparison; unpipelined, at PIPE 2 (accumulators
    interleaved by 2) and at the deepest PIPE (by 4)."""
    print(f"\n[masec] mx_matmul PIPE {pipe} seed {_SEED0}")
    _FULL_RATE[pipe] = check_rtl(build_root, _SEED0, RTL_CONFIGS, pipe)


def test_pipeline_latency(build_root):
    """The deepest PIPE finishes exactly latency(params) cycles after PIPE 0 at full rate (1 product per
    lane per cycle kept)."""
    for pipe in (0, MAX_PIPE):
        if pipe not in _FULL_RATE:
            _FULL_RATE[pipe] = check_rtl(build_root, _SEED0, RTL_CONFIGS, pipe)
    assert_pipe_latency("mx_matmul", _FULL_RATE[0], _FULL_RATE[MAX_PIPE], MAX_PIPE, RTL_PARAMS)


def test_pipeline_depth_rules():
    assert [pipe_depth("mx_matmul", ns) for ns in (20.0, 10.0, 8.0, 5.0, 3.0, 2.0)] == [0, 0, 1, 2, 3, 3]
    # the template's default N 64, P_N 8: NPN 8, interleaved by 2 at PIPE 2 and by 4 at PIPE 3
    assert [latency({"PIPE": p}) for p in range(MAX_PIPE + 1)] == [0, 4, 8, 13]
    assert [interleave({"PIPE": 3, "N": n, "P_N": 4}) for n in (4, 8, 12, 16, 20, 14)] == [1, 2, 1, 4, 1, 4]
    assert [interleave({"PIPE": p, "N": 16, "P_N": 4}) for p in range(MAX_PIPE + 1)] == [1, 1, 2, 4]
    with pytest.raises(ValueError):
        latency({"PIPE": MAX_PIPE + 1})


@pytest.mark.slow
@pytest.mark.parametrize("cfg", SLOW_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}-T{int(c[6])}-P{c[12]}")
@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_rtl_matches_model_sweep(build_root, seed, cfg, pipe):
    """NPN 3 and 5 (no interleave at any PIPE) and 4 (interleaved by 4 at PIPE 3)."""
    check_rtl(build_root, seed, [cfg], pipe)


@pytest.mark.slow
@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_yosys_netlist_matches_model(build_root, seed, pipe):
    """Both transposes synthesized by native Yosys (generic cells) and simulated with the same vectors,
    unpipelined and with the accumulators interleaved by 4. (This caught the interleave's accumulators
    as one vector written by every lane at a variable index: overlapping drivers in synthesis only.)"""
    res, _ = run_configs(build_root, seed, RTL_CONFIGS, yosys=True, pipe=pipe)
    assert res.ok, res.message


def test_rtl_check_can_fail(build_root, seed):
    res, _ = run_configs(build_root, seed, RTL_CONFIGS, mutate=True, pipe=MAX_PIPE)  # same build as above
    assert not res.ok
    assert "beat 5" in res.message


def _mm_id(c):
    return f"{c[0]}x{c[1]}-T{int(c[6])}-P{c[12]}"


@pytest.mark.parametrize("cfg", [pytest.param(c, id=_mm_id(c)) for c in RTL_CONFIGS]
                         + [pytest.param(c, id=_mm_id(c), marks=pytest.mark.slow)
                            for c in SLOW_CONFIGS if c not in RTL_CONFIGS])
@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_lint_clean(tmp_path, cfg, pipe):
    af, bf, of, M, K, N, tb, BA, BB, BC, pa, pb, pn, loads = cfg
    _, params, top = instance_config(M, K, N, fmt(af, BA), fmt(bf, BB), fmt(of, BC), tb, pa, pb, pn)
    params["PIPE"] = pipe
    files = render_with_deps("mx_matmul", tmp_path)
    lint(files, top, parameters=params)
