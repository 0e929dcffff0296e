"""mx_matmul: model vs exact rational reference; RTL vs model (both transposes) under gaps/backpressure."""
import random
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels.mx_matmul import (
    exact_matmul, ideal_cycles, instance_config, matmul_accumulators, matmul_model, matmul_widths,
)
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_beats
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile
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
    ("mxint8", "mxint8", "mxint8", 3, 40, 12, True, 32, 32, 16, 8, 4, 4, 2),
    ("mxfp8_e4m3", "mxfp4", "mxfp8_e4m3", 3, 12, 40, False, 16, 32, 32, 4, 8, 8, 2),
]
SLOW_CONFIGS = [
    ("mxfp4", "mxfp4", "mxfp4", 4, 64, 32, True, 32, 32, 32, 32, 32, 8, 2),
    ("mxint8", "mxfp8_e4m3", "mxint8", 4, 16, 64, False, 32, 32, 32, 16, 16, 16, 2),
]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mx_matmul_builds")


def run_case(build_root, seed, cfg, mutate=False):
    af, bf, of, M, K, N, tb, BA, BB, BC, pa, pb, pn, loads = cfg
    rng = random.Random(seed)
    a_fmt, b_fmt, o_fmt = fmt(af, BA), fmt(bf, BB), fmt(of, BC)
    a_el, b_el, o_el = a_fmt.element, b_fmt.element, o_fmt.element
    a_beats, b_beats, y_beats = [], [], []
    for _ in range(loads):
        (ac, asc), (bc, bsc) = operands(rng, a_el, b_el, M, K, N, BA, BB, tb)
        yc, ys = matmul_model(ac, asc, a_el, bc, bsc, b_el, o_el, BC, tb, K, N)
        a_beats += mx_beats(ac, asc, a_el.bits, pa)
        b_beats += mx_beats(bc, bsc, b_el.bits, pb)
        y_beats += mx_beats(yc, ys, o_el.bits, pn)
    if mutate:
        y_beats[5][0] ^= 1
    _, params, top = instance_config(M, K, N, a_fmt, b_fmt, o_fmt, tb, pa, pb, pn)
    vf = VectorFile({"s_a": StreamVectors(("data", "scale"), a_beats, {"data": (pa, a_el.bits)}),
                     "s_b": StreamVectors(("data", "scale"), b_beats, {"data": (pb, b_el.bits)})},
                    {"m_y": StreamVectors(("data", "scale"), y_beats, {"data": (pn, o_el.bits)})},
                    seed=seed, gap_prob=0.3, stall_prob=0.3,
                    ideal_cycles=loads * ideal_cycles(M, K, N, pn, BB, tb, pb))
    folder = build_root / "_".join(str(c) for c in cfg)
    files = render_with_deps("mx_matmul", folder / "rtl")
    return run_stream_test(files, top, vf, folder / "build", parameters=params), params


def check_rtl(build_root, seed, cfg):
    res, _ = run_case(build_root, seed, cfg)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_matmul {cfg}: full_rate {full['cycles']} cycles, ideal {full['ideal_cycles']} "
          f"(ratio {full['cycles'] / full['ideal_cycles']:.3f})")
    BC, pn, loads = cfg[9], cfg[12], cfg[13]
    # per load: B RAM write-to-read turnaround + pipeline (4) ; plus the last block's quantizer latency
    assert full["cycles"] <= full["ideal_cycles"] + loads * 6 + BC // pn + 2


@pytest.mark.parametrize("cfg", RTL_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}-T{int(c[6])}-P{c[12]}")
def test_rtl_matches_model(build_root, seed, cfg):
    check_rtl(build_root, seed, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", SLOW_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}-T{int(c[6])}-P{c[12]}")
def test_rtl_matches_model_sweep(build_root, seed, cfg):
    check_rtl(build_root, seed, cfg)


def test_rtl_check_can_fail(build_root, seed):
    res, _ = run_case(build_root, seed, RTL_CONFIGS[0], mutate=True)
    assert not res.ok
    assert "beat 5" in res.message


@pytest.mark.parametrize("cfg", RTL_CONFIGS + SLOW_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}-T{int(c[6])}-P{c[12]}")
def test_lint_clean(tmp_path, cfg):
    af, bf, of, M, K, N, tb, BA, BB, BC, pa, pb, pn, loads = cfg
    _, params, top = instance_config(M, K, N, fmt(af, BA), fmt(bf, BB), fmt(of, BC), tb, pa, pb, pn)
    files = render_with_deps("mx_matmul", tmp_path)
    lint(files, top, parameters=params)
