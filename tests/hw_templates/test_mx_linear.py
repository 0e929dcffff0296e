"""mx_linear (+ mx_dot, mx_facc): model vs exact references; RTL vs model under gaps/backpressure."""
import math
import random
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels.mx_linear import (
    MAX_PIPE, accumulator_stages, block_sums, dot_latency, exact_linear, facc_step, facc_step_torch, ideal_cycles,
    instance_config, latency, linear_accumulators, linear_model, linear_widths, pack_bias_mem, pack_weight_mem,
)
from masec.hw_templates.render import render_with_deps
from masec.passes.hw.pipeline import pipe_depth
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import VectorFile
from mx_helpers import floor_log2, write_multi_top, yosys_netlist


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
def build_case(tmp, rng, xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, has_bias, lmul=False, p_y=None, acc_guard=4,
               pipe=0):
    """ROM images in ``tmp``; returns (input StreamVectors, output StreamVectors, sv_params, ideal, slack)
    (``pipe``: the instance's PIPE; the slack grows by its latency)."""
    x_fmt, w_fmt, o_fmt = fmt(xf, B), fmt(wf, B), fmt(of, BO)
    x_el, w_el, o_el = x_fmt.element, w_fmt.element, o_fmt.element
    nb = -(-IN // B)
    xc, xs = random_mx(rng, x_el, T, nb, B, IN)
    wc, ws = random_mx(rng, w_el, OUT, nb, B, IN)
    bc = bs = None
    if has_bias:
        bc, bs = random_mx(rng, w_el, 1, -(-OUT // B), B, OUT)
        bc, bs = bc[0], bs[0]
        bs.clamp_(100, 150)
    yc, ys = linear_model(xc, xs, x_el, wc, ws, w_el, bc, bs, o_el, BO, acc_guard, lmul)
    tmp.mkdir(parents=True, exist_ok=True)
    wl, sl = pack_weight_mem(wc, ws, w_el, IN, OUT, B, p_in, p_out)
    (tmp / "w.mem").write_text("\n".join(wl) + "\n")
    (tmp / "ws.mem").write_text("\n".join(sl) + "\n")
    if has_bias:
        (tmp / "b.mem").write_text("\n".join(pack_bias_mem(bc, bs, w_el, OUT, p_out)) + "\n")
    _, params, _ = instance_config(IN, OUT, x_fmt, w_fmt, o_fmt, has_bias, p_in, p_out, acc_guard=acc_guard,
                                   lmul=lmul, w_mem=str(tmp / "w.mem"), ws_mem=str(tmp / "ws.mem"),
                                   b_mem=str(tmp / "b.mem"), p_y=p_y)
    if pipe:
        params["PIPE"] = pipe
    # compute-bound ideal, unless the output stream itself needs more beats (P_Y < P_OUT)
    ideal = max(ideal_cycles(T, IN, OUT, p_in, p_out), T * (-(-OUT // BO)) * BO // params["P_Y"])
    # beyond the ideal: the all-padding input beats of pass 0 (they arrive on the stream) and the
    # pipeline + quantizer latency (4 stages, one output block of B_OUT/P_Y beats, P_OUT/P_Y beats per
    # result, the zero beats that complete the last block)
    pad = T * (nb * B // p_in - (-(-IN // p_in)))
    nz = ((-(-OUT // BO)) * BO - (-(-OUT // p_out)) * p_out) // params["P_Y"]   # zero beats padding y's last block
    slack = pad + 4 + BO // params["P_Y"] + params["P_OUT"] // params["P_Y"] + nz + 4 + latency(params)
    return mx_stream(xc, xs, x_el.bits, p_in), mx_stream(yc, ys, o_el.bits, params["P_Y"]), params, ideal, slack


# one Verilator build holds several configurations (tests/hw_templates/mx_helpers.py:write_multi_top)
DEFAULT_CONFIGS = [  # xf, wf, of, IN, OUT, T, B, B_OUT, P_IN, P_OUT, bias, lmul, P_Y
    ("mxint8", "mxfp4", "mxfp8_e4m3", 40, 40, 8, 32, 32, 8, 8, True, False, 4),
    ("mxfp8_e4m3", "mxfp8_e4m3", "mxint8", 64, 12, 8, 32, 16, 32, 4, False, True, 4),
]
SLOW_CONFIGS = [
    ("mxint8", "mxint8", "mxint8", 40, 40, 6, 32, 32, 8, 8, True, False, 8),
    ("mxfp8_e4m3", "mxfp4", "mxfp8_e4m3", 64, 12, 6, 32, 16, 32, 4, False, False, 4),
    ("mxfp4", "mxfp4", "mxfp4", 48, 32, 6, 16, 16, 4, 16, True, False, 4),
    ("mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", 172, 20, 4, 32, 32, 4, 2, True, False, 1),
    ("mxfp6_e3m2", "mxfp8_e4m3", "mxfp4", 64, 64, 4, 32, 32, 16, 16, True, True, 16),
    ("mxint4", "mxint8", "mxint8", 64, 64, 16, 32, 32, 32, 32, False, False, 32),
]

# IN <= B: the whole row is one input block (NB = 1): the compiler's nn.Linear(32, 32) case, a partial
# block (IN = 16 of B = 32) with bias, and B = 8; more in SLOW_CONFIGS (P_IN 8 and P_IN = B)
SINGLE_BLOCK_CONFIGS = [
    ("mxint8", "mxint8", "mxint8", 32, 32, 6, 32, 32, 4, 4, False, False, 4),
    ("mxint8", "mxfp4", "mxfp8_e4m3", 16, 24, 6, 32, 32, 4, 8, True, False, 4),
    ("mxint8", "mxint8", "mxint8", 8, 8, 6, 8, 8, 4, 4, True, False, 4),
]
SLOW_CONFIGS += [
    ("mxint8", "mxint8", "mxint8", 32, 32, 6, 32, 32, 8, 8, True, False, 8),
    ("mxfp8_e4m3", "mxfp8_e4m3", "mxint8", 16, 12, 6, 32, 16, 32, 4, False, False, 4),
    ("mxfp8_e4m3", "mxint8", "mxint8", 32, 16, 6, 32, 16, 32, 4, True, False, 4),
    ("mxfp6_e3m2", "mxfp6_e3m2", "mxfp4", 8, 16, 6, 8, 8, 8, 8, False, False, 8),
]


def _lin_id(c):
    return f"{c[0]}x{c[1]}-{c[3]}x{c[4]}-P{c[8]}x{c[9]}-L{int(c[11])}-Y{c[12]}"


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mx_linear_builds")


def run_configs(build_root, seed, cfgs, mutate=False, yosys=False, pipe=0):
    """Simulate ``cfgs`` together (instance i = streams s_x<i> / m_y<i>) at ``PIPE = pipe``; returns
    (result, ideal, slack)."""
    rng = random.Random(seed)
    folder = build_root / (f"multi_pipe{pipe}_" + "_".join(str(abs(hash(c)) % 10**8) for c in cfgs))
    inputs, outputs, insts, ideal, slack = {}, {}, [], 0, 0
    for i, c in enumerate(cfgs):
        xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, bias, lm, p_y = c
        sx, sy, params, ideal_i, slack_i = build_case(folder / f"mem{i}", rng, xf, wf, of, IN, OUT, T, B, BO,
                                                      p_in, p_out, bias, lm, p_y, pipe=pipe)
        inputs[f"s_x{i}"], outputs[f"m_y{i}"] = sx, sy
        insts.append((params, {"s_x": (p_in * fmt(xf).element.bits, True),
                               "m_y": (p_y * fmt(of).element.bits, True)}))
        ideal, slack = max(ideal, ideal_i), max(slack, ideal_i + slack_i)
    if mutate:
        outputs["m_y0"].beats[3][0] ^= 1
    vf = VectorFile(inputs, outputs, seed=seed, gap_prob=0.3, stall_prob=0.3, ideal_cycles=ideal)
    files = render_with_deps("mx_linear", folder / "rtl")
    files.append(write_multi_top(folder / "rtl" / "tb_mx_linear.sv", "tb_mx_linear", "mx_linear", insts))
    if yosys:
        files = [yosys_netlist(files, "tb_mx_linear", folder / "yosys_netlist.v")]
        folder = folder / "yosys"
    res = run_stream_test(files, "tb_mx_linear", vf, folder / "build")
    return res, ideal, slack


def check_configs(build_root, seed, cfgs, pipe=0):
    res, ideal, slack = run_configs(build_root, seed, cfgs, pipe=pipe)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_linear PIPE {pipe} {cfgs}: full_rate {full['cycles']} cycles (slowest instance), ideal {ideal}, "
          f"ideal + padding beats + latency {slack}")
    assert full["cycles"] <= slack
    return full["cycles"]


@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_rtl_matches_model(build_root, seed, pipe):
    """int8 x fp4 -> fp8 with bias and partial blocks (IN = OUT = 40), and fp8 x fp8 -> int8 with
    L-Mul products and P_IN = B, in one build; random gaps and backpressure, exact comparison;
    unpipelined and with every register stage."""
    check_configs(build_root, seed, DEFAULT_CONFIGS, pipe)


@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_rtl_matches_model_single_input_block(build_root, seed, pipe):
    """IN <= B (one input block per row, NB = 1): IN = B = 32 without bias, a partial block
    (IN = 16, B = 32) and B = 8 with bias, in one build (regression: the first-block flag
    truncated to never-true when NB = 1, so the accumulator carried over from the previous pass)."""
    check_configs(build_root, seed, SINGLE_BLOCK_CONFIGS, pipe)


@pytest.mark.slow
@pytest.mark.parametrize("pipe", [0, 2])
@pytest.mark.parametrize("cfg", SLOW_CONFIGS, ids=lambda c: _lin_id(c))
def test_rtl_matches_model_sweep(build_root, seed, cfg, pipe):
    check_configs(build_root, seed, [cfg], pipe)


def test_pipe_latency_model():
    """latency() adds up the cuts of the template's header: the slice on s_x (cut X), cut R, mx_dot's,
    the accumulator's extra stages (PIPE 1, 2: up to 1, PIPE 3: up to 3, never more than the beats
    between a pass's blocks allow), the seed formats' extra cuts, the slice in front of mx_quantize
    (cut Q) and the nested mx_quantize's 2 * PIPE (+ 1 at PIPE 3)."""
    assert [dot_latency(8, p) for p in range(4)] == [0, 3, 5, 5]     # P8: 3 tree levels
    assert [dot_latency(32, p) for p in range(4)] == [0, 4, 7, 7]    # P32: 5 tree levels
    assert [dot_latency(1, p) for p in range(4)] == [0, 1, 2, 2]
    base = {"P_IN": 8, "B": 32, "IN": 64}
    # slice X + cut R + mx_dot + [accumulator stages - 1] + [seed cuts] + slice Q + mx_quantize (2 * PIPE, + 1 at PIPE 3)
    assert [latency({**base, "PIPE": p}) for p in range(4)] == [0, 1 + 1 + 3 + 1 + 1 + 2, 1 + 1 + 5 + 1 + 1 + 4,
                                                                1 + 1 + 5 + 3 + 1 + 7]
    assert latency({"P_IN": 32, "B": 32, "IN": 64, "PIPE": 3}) == 1 + 1 + 7 + 0 + 1 + 7   # P_IN = B: one-cycle step
    assert latency({**base, "IN": 40, "PIPE": 3}) == 1 + 1 + 5 + 0 + 1 + 7   # last block of one beat in passes 1..
    assert latency({**base, "IN": 48, "PIPE": 3}) == 1 + 1 + 5 + 1 + 1 + 7   # ... of two beats
    assert latency({**base, "IN": 56, "PIPE": 3}) == 1 + 1 + 5 + 2 + 1 + 7   # ... of three beats
    assert latency({"P_IN": 32, "B": 32, "IN": 20, "PIPE": 3}) == 1 + 1 + 7 + 3 + 1 + 7   # one block per row
    assert [accumulator_stages({"P_IN": 4, "B": 32, "IN": 96, "PIPE": p}) for p in range(4)] == [1, 2, 2, 4]
    assert latency({**base, "WFMT": 2, "PIPE": 3}) == 1 + 1 + 5 + 3 + 1 + 3 + 1 + 7     # NVFP4: scale cut, tail
    assert latency({**base, "WFMT": 1, "PIPE": 2}) == 1 + 1 + 5 + 1 + 1 + 1 + 4         # M2XFP: (4 + m) cut
    assert [pipe_depth("mx_linear", ns) for ns in (20.0, 10.0, 8.0, 6.0, 4.0, 3.0, 2.0)] == [0, 0, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError):
        latency({**base, "PIPE": MAX_PIPE + 1})


def test_rtl_pipeline_latency_and_rate(build_root, seed):
    """One configuration (int8 x fp4, bias, two input blocks: the two-cycle accumulator step, a partial
    output block, P_Y < P_OUT) at PIPE 0, 1 and 3: exact under gaps and backpressure at each, still
    one beat per cycle, and at full rate the last output beat comes exactly latency(params) cycles
    later than at PIPE 0."""
    cfg = ("mxint8", "mxfp4", "mxfp8_e4m3", 64, 40, 6, 32, 32, 8, 8, True, False, 4)
    xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, bias, lm, p_y = cfg
    base = check_configs(build_root, seed, [cfg], 0)
    for pipe in (1, MAX_PIPE):
        cycles = check_configs(build_root, seed, [cfg], pipe)
        _, params, _ = instance_config(IN, OUT, fmt(xf, B), fmt(wf, B), fmt(of, BO), bias, p_in, p_out, p_y=p_y)
        lat = latency({**params, "PIPE": pipe})
        print(f"PIPE {pipe}: full rate {cycles} cycles, PIPE 0 {base}, latency({pipe}) = {lat}")
        assert cycles - base == lat


@pytest.mark.slow
def test_rtl_full_rate_ratio(build_root, seed):
    """A long run (64 rows, 64x64, P8x8, one output lane): measured / ideal cycles close to 1."""
    cfg = ("mxint8", "mxint8", "mxint8", 64, 64, 64, 32, 32, 8, 8, True, False, 1)
    res, ideal, bound = run_configs(build_root, seed, [cfg])
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_linear 64x64 P8x8 P_Y1, 64 rows: {full['cycles']} cycles, ideal {ideal}, "
          f"ratio {full['cycles'] / ideal:.4f} (the excess is the last output block's latency, B_OUT/P_Y = 32)")
    assert full["cycles"] <= bound   # ideal + 4 + B_OUT/P_Y + P_OUT/P_Y + 4


@pytest.mark.slow
def test_yosys_netlist_matches_model(build_root, seed):
    """The default configurations (incl. ROMs and L-Mul) synthesized by native Yosys and simulated."""
    cfgs = [c[:5] + (3,) + c[6:] for c in DEFAULT_CONFIGS]  # 3 rows each: the netlist simulates slowly
    res, _, _ = run_configs(build_root, seed, cfgs, yosys=True)
    assert res.ok, res.message


def test_rtl_check_can_fail(build_root, seed):
    res, _, _ = run_configs(build_root, seed, DEFAULT_CONFIGS, mutate=True)  # same build as above
    assert not res.ok
    assert "beat 3" in res.message


@pytest.mark.parametrize("pipe", [0, 1, MAX_PIPE])
@pytest.mark.parametrize("cfg", [pytest.param(c, id=_lin_id(c)) for c in DEFAULT_CONFIGS + SINGLE_BLOCK_CONFIGS]
                         + [pytest.param(c, id=_lin_id(c), marks=pytest.mark.slow) for c in SLOW_CONFIGS])
def test_lint_clean(tmp_path, cfg, pipe):
    xf, wf, of, IN, OUT, T, B, BO, p_in, p_out, bias, lm, p_y = cfg
    _, params, top = instance_config(IN, OUT, fmt(xf, B), fmt(wf, B), fmt(of, BO), bias, p_in, p_out, lmul=lm,
                                     p_y=p_y)
    params["PIPE"] = pipe
    files = render_with_deps("mx_linear", tmp_path)
    lint(files, top, parameters=params)


# ----------------------------------------------------------------------------- L-Mul on a real model
def _stories_forward(ck, tokens, linear):
    """llama2.c forward (float32) over one window; every matmul with a weight goes through
    ``linear(name, x [T, IN], W [OUT, IN]) -> [T, OUT]``. Returns the logits [T, vocab]."""
    cfg = ck.config
    T, hd = len(tokens), cfg.head_dim

    def rms(x, g):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * g

    pos = torch.arange(T, dtype=torch.float32)
    freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = pos[:, None] * freq[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(x):  # [T, H, hd], interleaved pairs
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = x0 * cos[:, None] - x1 * sin[:, None]
        out[..., 1::2] = x0 * sin[:, None] + x1 * cos[:, None]
        return out

    x = ck.tok_embeddings[torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for li, L in enumerate(ck.layers):
        xb = rms(x, L["attention_norm"])
        q = rope(linear(f"l{li}.wq", xb, L["wq"]).view(T, cfg.n_heads, hd))
        k = rope(linear(f"l{li}.wk", xb, L["wk"]).view(T, cfg.n_kv_heads, hd))
        v = linear(f"l{li}.wv", xb, L["wv"]).view(T, cfg.n_kv_heads, hd)
        rep = cfg.n_heads // cfg.n_kv_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        att = torch.einsum("thd,shd->hts", q, k) / hd ** 0.5 + mask
        o = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(T, -1)
        x = x + linear(f"l{li}.wo", o, L["wo"])
        xb = rms(x, L["ffn_norm"])
        h = torch.nn.functional.silu(linear(f"l{li}.w1", xb, L["w1"])) * linear(f"l{li}.w3", xb, L["w3"])
        x = x + linear(f"l{li}.w2", h, L["w2"])
    return rms(x, ck.norm) @ ck.classifier.t()


def mx_linear_float(x, W, fmt_name, lmul):
    """The hardware accumulators of mx_linear (x and W MX-encoded) as float32 outputs (no output quantization)."""
    f = fmt(fmt_name)
    xe, we = f.encode(x), f.encode(W)
    A, X = linear_accumulators(xe.codes.to(torch.int64), xe.scales.to(torch.int64), f.element,
                               we.codes.to(torch.int64), we.scales.to(torch.int64), f.element, lmul=lmul)
    return (torch.tensor(A, dtype=torch.float64) * torch.pow(2.0, torch.tensor(X, dtype=torch.float64))).float()


@pytest.mark.slow
@pytest.mark.parametrize("fmt_name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3"])
def test_lmul_accuracy_on_stories260k(fmt_name):
    """Perplexity of stories260K on TinyStories text with every weight linear computed by mx_linear's
    arithmetic (x and W in ``fmt_name``), exact products vs L-Mul; plus the per-linear error of L-Mul
    against the exact MX products. Prints the table used in docs/kernels/mx_linear.md."""
    from masec.models.llama2c import data_file, load_checkpoint, load_tokenizer

    ck = load_checkpoint(data_file("stories260k", "stories260K.bin"))
    tok = load_tokenizer(data_file("stories260k", "tok512.bin"), ck.config.vocab_size)
    paras = [p for p in data_file("text", "tinystories_valid.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()]
    ids = []
    for p in paras:
        ids += tok.encode(p.strip(), bos=True)
        if len(ids) >= 2 * 256 + 1:
            break
    windows = [ids[i * 256:(i + 1) * 256 + 1] for i in range(2)]
    errs = {}

    def run(mode):
        def linear(name, x, W):
            if mode == "float":
                return x @ W.t()
            y = mx_linear_float(x, W, fmt_name, mode == "lmul")
            if mode == "lmul":
                ref = mx_linear_float(x, W, fmt_name, False)
                errs.setdefault(name.split(".")[1], []).append(
                    float((y - ref).norm() / ref.norm()))
            return y
        nll, n = 0.0, 0
        for w in windows:
            logits = _stories_forward(ck, w[:-1], linear)
            nll += float(torch.nn.functional.cross_entropy(logits, torch.tensor(w[1:]), reduction="sum"))
            n += len(w) - 1
        return math.exp(nll / n)

    ppl = {m: run(m) for m in ("float", "exact", "lmul")}
    print(f"\n{fmt_name}: perplexity float32 {ppl['float']:.4f}, MX exact products {ppl['exact']:.4f}, "
          f"MX L-Mul {ppl['lmul']:.4f} ({sum(len(w) - 1 for w in windows)} tokens)")
    for k, v in errs.items():
        print(f"  {k}: L-Mul vs exact relative output error {sum(v) / len(v):.4f} (mean over layers/windows)")
    assert ppl["exact"] < ppl["float"] * 1.5
    assert ppl["lmul"] < ppl["float"] * 3
