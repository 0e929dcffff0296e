"""mx_linear (+ mx_dot, mx_facc): model vs exact references; RTL vs model under gaps/backpressure."""
import random
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels.mx_linear import (
    block_sums, exact_linear, facc_step, facc_step_torch, ideal_cycles, instance_config, linear_accumulators,
    linear_model, linear_widths, pack_bias_mem, pack_weight_mem,
)
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import VectorFile
from mx_helpers import floor_log2, pch_workaround_env


def fmt(name, block=32):
    return parse_format(name, block_size=block)


def finite_codes(el) -> list[int]:
    """Every finite code of an element format (both signs)."""
    vals = el.value_table()
    return [c for c in range(1 << el.bits) if torch.isfinite(vals[c])]


def random_mx(rng: random.Random, el, rows: int, nblocks: int, block: int, valid: int | None = None):
    """Random MX codes [rows, nblocks, block] + scales [rows, nblocks] with the extremes: all-zero
    blocks, max-magnitude codes, scales near 0 and near 254; elements beyond ``valid`` are padding (0)."""
    codes = finite_codes(el)
    maxc = el.max_code
    neg = (1 << (el.bits - 1))
    c = torch.zeros(rows, nblocks, block, dtype=torch.int64)
    s = torch.zeros(rows, nblocks, dtype=torch.int64)
    for r in range(rows):
        for b in range(nblocks):
            kind = rng.random()
            if kind < 0.06:
                blk = [0] * block
            elif kind < 0.14:
                blk = [rng.choice([maxc, maxc | neg if el.kind == "fp" else (-maxc) & ((1 << el.bits) - 1)])
                       for _ in range(block)]
            else:
                blk = [rng.choice(codes) if rng.random() < 0.8 else 0 for _ in range(block)]
            sk = rng.random()
            s[r, b] = rng.randint(0, 4) if sk < 0.08 else rng.randint(250, 254) if sk < 0.16 else rng.randint(112, 140)
            c[r, b] = torch.tensor(blk)
    if valid is not None:
        flat = c.reshape(rows, -1)
        flat[:, valid:] = 0
    return c, s


# ----------------------------------------------------------------------------- model tests
def exact_block_value(S, Y):
    return Fraction(S) * Fraction(2) ** Y


@pytest.mark.parametrize("xf,wf,lm", [("mxint8", "mxint8", False), ("mxfp8_e4m3", "mxfp8_e4m3", False),
                                      ("mxfp4", "mxfp4", False), ("mxfp8_e4m3", "mxint4", False),
                                      ("mxfp8_e5m2", "mxfp6_e3m2", False)])
def test_block_sums_are_exact(xf, wf, lm, seed):
    """S * 2^(Y) equals the exact rational dot product of every block (no approximation)."""
    rng = random.Random(seed)
    x_el, w_el = fmt(xf).element, fmt(wf).element
    xc, xs = random_mx(rng, x_el, 3, 2, 32)
    wc, ws = random_mx(rng, w_el, 5, 2, 32)
    w = linear_widths(x_el, w_el, 32, 4, lm)
    S = block_sums(xc, x_el, wc, w_el, lm)
    xv, wv = x_el.value_table(), w_el.value_table()
    for t in range(3):
        for o in range(5):
            for b in range(2):
                exact = sum(Fraction(float(xv[int(xc[t, b, i])])) * Fraction(float(wv[int(wc[o, b, i])]))
                            for i in range(32))
                s = int(S[t][o][b]) if isinstance(S, torch.Tensor) else S[t][o][b]
                assert abs(s) <= 1 << (w.DW - 2)
                assert Fraction(s) * Fraction(2) ** (w.C + 254) == exact


def test_lmul_products_match_the_paper_formula(seed):
    """L-Mul of two e4m3 values = (1 + fx + fy + 2^-l(3)) * 2^(ex + ey), l(3) = 3, zero -> 0."""
    el = fmt("mxfp8_e4m3").element
    rng = random.Random(seed)
    w = linear_widths(el, el, 32, 4, True)
    vals = el.value_table()
    codes = finite_codes(el)
    for _ in range(400):
        a, b = rng.choice(codes), rng.choice(codes)
        xc = torch.zeros(1, 1, 32, dtype=torch.int64)
        wc = torch.zeros(1, 1, 32, dtype=torch.int64)
        xc[0, 0, 0], wc[0, 0, 0] = a, b
        S = int(block_sums(xc, el, wc, el, True)[0, 0, 0])
        va, vb = Fraction(float(vals[a])), Fraction(float(vals[b]))
        if va == 0 or vb == 0:
            assert S == 0
            continue
        ea, eb = floor_log2(abs(va)), floor_log2(abs(vb))
        fa, fb = abs(va) / Fraction(2) ** ea - 1, abs(vb) / Fraction(2) ** eb - 1
        sign = 1 if (va > 0) == (vb > 0) else -1
        ref = sign * (1 + fa + fb + Fraction(1, 8)) * Fraction(2) ** (ea + eb)
        assert Fraction(S) * Fraction(2) ** (w.C + 254) == ref


def test_facc_torch_equals_python(seed):
    rng = random.Random(seed)
    AW, G = 30, 4
    n = 4000
    A = [rng.choice([0, rng.randint(-(1 << (AW - 2)), 1 << (AW - 2))]) for _ in range(n)]
    X = [rng.randint(-300, 300) for _ in range(n)]
    S = [rng.choice([0, rng.randint(-(1 << (AW - G - 3)), 1 << (AW - G - 3))]) for _ in range(n)]
    Y = [x + rng.randint(-40, 40) for x in X]
    At, Xt = facc_step_torch(*(torch.tensor(v) for v in (A, X, S, Y)), AW, G)
    for i in range(n):
        a, x = facc_step(A[i], X[i], S[i], Y[i], AW, G)
        assert (a, x) == (int(At[i]), int(Xt[i]))
        assert abs(a) <= 1 << (AW - 2)


def test_facc_error_is_bounded(seed):
    """Each step's error is at most half an accumulator ulp per rounding (<= 2 roundings)."""
    rng = random.Random(seed)
    AW, G = 24, 2
    for _ in range(3000):
        A = rng.randint(-(1 << (AW - 2)), 1 << (AW - 2))
        X = rng.randint(-50, 50)
        S = rng.randint(-(1 << (AW - G - 3)), 1 << (AW - G - 3))
        Y = X + rng.randint(-30, 30)
        a, x = facc_step(A, X, S, Y, AW, G)
        exact = Fraction(A) * Fraction(2) ** X + Fraction(S) * Fraction(2) ** Y
        got = Fraction(a) * Fraction(2) ** x
        assert abs(got - exact) <= Fraction(2) ** x  # half ulp (alignment) + half ulp (renormalization)


@pytest.mark.parametrize("xf,wf,of", [("mxint8", "mxint8", "mxint8"), ("mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3"),
                                      ("mxfp4", "mxfp4", "mxfp4")])
def test_linear_model_error_vs_exact(xf, wf, of, seed):
    """The accumulator's error vs the exact rational result is at most one final-exponent ulp per
    block step (each step rounds at most twice by half an ulp, exponents never decrease); the
    measured relative error and the output mismatch rate vs MX-quantizing the exact result are printed."""
    from masec.hw_templates.kernels.mx_quantize import quantize_block
    rng = random.Random(seed)
    x_el, w_el, o_el = fmt(xf).element, fmt(wf).element, fmt(of).element
    T, NBK, OUT = 6, 3, 32
    xc, xs = random_mx(rng, x_el, T, NBK, 32)
    wc, ws = random_mx(rng, w_el, OUT, NBK, 32)
    xs.clamp_(100, 150)
    ws.clamp_(100, 150)
    A, X = linear_accumulators(xc, xs, x_el, wc, ws, w_el)
    ex = exact_linear(xc, xs, x_el, wc, ws, w_el)
    yc, ys = linear_model(xc, xs, x_el, wc, ws, w_el, None, None, o_el, 32)
    worst, mism = 0.0, 0
    for t in range(T):
        for o in range(OUT):
            err = abs(Fraction(A[t][o]) * Fraction(2) ** X[t][o] - ex[t][o])
            assert err <= NBK * Fraction(2) ** X[t][o]
            if ex[t][o]:
                worst = max(worst, float(err / abs(ex[t][o])))
        # exact values as (m, e) with a common exponent -> the exact MX quantization
        den = max(v.denominator for v in ex[t])
        e0 = -(den.bit_length() - 1)
        ref_c, ref_s = quantize_block([int(v * den) for v in ex[t]], [e0] * OUT, o_el)
        mism += sum(int(a != b) for a, b in zip(ref_c, yc[t, 0].tolist())) + int(ref_s != int(ys[t, 0]))
    print(f"{xf}x{wf}->{of}: worst relative accumulator error {worst:.3g}; "
          f"{mism} of {T * (OUT + 1)} output codes/scales differ from quantizing the exact result")
    assert mism <= T * (OUT + 1) // 10


# ----------------------------------------------------------------------------- RTL tests
def build_case(tmp, rng, seed, xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, has_bias, lmul=False, acc_guard=4):
    x_fmt, w_fmt, o_fmt = fmt(xf, B), fmt(wf, B), fmt(of, BO)
    x_el, w_el, o_el = x_fmt.element, w_fmt.element, o_fmt.element
    nb = -(-IN // B)
    xc, xs = random_mx(rng, x_el, T, nb, B, IN)
    wc, ws = random_mx(rng, w_el, OUT, nb, B, IN)
    bc = bs = None
    if has_bias:
        nbo_b = -(-OUT // B)
        bc, bs = random_mx(rng, w_el, 1, nbo_b, B, OUT)
        bc, bs = bc[0], bs[0]
        bs.clamp_(100, 150)
    yc, ys = linear_model(xc, xs, x_el, wc, ws, w_el, bc, bs, o_el, BO, acc_guard, lmul)
    tmp.mkdir(parents=True, exist_ok=True)
    wl, sl = pack_weight_mem(wc, ws, w_el, IN, OUT, B, p_in, p_out)
    (tmp / "w.mem").write_text("\n".join(wl) + "\n")
    (tmp / "ws.mem").write_text("\n".join(sl) + "\n")
    if has_bias:
        (tmp / "b.mem").write_text("\n".join(pack_bias_mem(bc, bs, w_el, OUT, p_out)) + "\n")
    _, params, top = instance_config(IN, OUT, x_fmt, w_fmt, o_fmt, has_bias, p_in, p_out, acc_guard=acc_guard,
                                     lmul=lmul, w_mem=str(tmp / "w.mem"), ws_mem=str(tmp / "ws.mem"),
                                     b_mem=str(tmp / "b.mem"))
    vf = VectorFile({"s_x": mx_stream(xc, xs, x_el.bits, p_in)}, {"m_y": mx_stream(yc, ys, o_el.bits, p_out)},
                    seed=seed, gap_prob=0.3, stall_prob=0.3,
                    ideal_cycles=ideal_cycles(T, IN, OUT, p_in, p_out))
    return vf, params, top


def sim_params(params):
    return {k: (f'"{v}"' if isinstance(v, str) else v) for k, v in params.items()}


RTL_CONFIGS = [  # xf, wf, of, IN, OUT, T, B, B_OUT, P_IN, P_OUT, bias
    ("mxint8", "mxint8", "mxint8", 40, 40, 4, 32, 32, 8, 8, True),
    ("mxfp8_e4m3", "mxfp4", "mxfp8_e4m3", 64, 12, 3, 32, 16, 32, 4, False),
    ("mxfp4", "mxfp4", "mxfp4", 48, 32, 3, 16, 16, 4, 16, True),
]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    with pch_workaround_env():
        yield tmp_path_factory.mktemp("mx_linear_builds")


def run_case(build_root, seed, cfg, lmul=False, mutate=False):
    xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, bias = cfg
    rng = random.Random(seed)
    folder = build_root / f"{xf}_{wf}_{of}_{IN}_{OUT}_{B}_{BO}_{p_in}_{p_out}_{int(bias)}_{int(lmul)}"
    vf, params, top = build_case(folder / "mem", rng, seed, xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, bias, lmul)
    if mutate:
        vf.outputs["m_y"].beats[3][0] ^= 1
    files = render_with_deps("mx_linear", folder / "rtl")
    res = run_stream_test(files, top, vf, folder / "build", parameters=sim_params(params))
    return res, params


@pytest.mark.parametrize("cfg", RTL_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}-{c[3]}x{c[4]}-P{c[8]}x{c[9]}")
def test_rtl_matches_model(build_root, seed, cfg):
    res, _ = run_case(build_root, seed, cfg)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_linear {cfg}: full_rate {full['cycles']} cycles, ideal {full['ideal_cycles']} "
          f"(ratio {full['cycles'] / full['ideal_cycles']:.3f})")
    xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, bias = cfg
    nb = -(-IN // B)
    padded_beats = T * (-(-OUT // p_out)) * (nb * B // p_in - (-(-IN // p_in)))   # zero-padded input beats
    zero_passes = T * ((-(-OUT // BO)) * BO // p_out - (-(-OUT // p_out)))
    latency = 4 + BO // p_out + 1
    assert full["cycles"] <= full["ideal_cycles"] + padded_beats + zero_passes + latency


def test_rtl_check_can_fail(build_root, seed):
    res, _ = run_case(build_root, seed, RTL_CONFIGS[0], mutate=True)
    assert not res.ok
    assert "beat 3" in res.message


@pytest.mark.parametrize("cfg", RTL_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}-{c[3]}x{c[4]}-P{c[8]}x{c[9]}")
def test_lint_clean(tmp_path, cfg):
    xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, bias = cfg
    _, params, top = instance_config(IN, OUT, fmt(xf, B), fmt(wf, B), fmt(of, BO), bias, p_in, p_out)
    files = render_with_deps("mx_linear", tmp_path)
    lint(files, top, parameters=params)
