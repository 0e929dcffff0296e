"""mx_rmsnorm: model vs float reference (measured error), RTL vs bit-exact model under gaps/backpressure."""
import math
import random
import re

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels import mx_norm as M
from masec.hw_templates.render import render
from masec.passes.hw.pipeline import pipe_depth
from norm_helpers import compare_to_ideal, rtl_tests, simulate, stress_rows


def elem(name):
    return parse_format(name).element


# ----------------------------------------------------------------------------- model-level tests
def test_rsqrt_table_in_template_equals_model():
    text = render("mx_rmsnorm_rsqrt").text
    table = {int(i): int(v) for i, v in re.findall(r"\d+'d(\d+): begin y0 = \d+'d(\d+);", text)}
    assert len(table) == len(M.rsqrt_lut()) == 2 << M.LUT_BITS
    assert [table[i] for i in range(len(table))] == list(M.rsqrt_lut())
    # PIPE 3 reads Y0^2 from the table instead of squaring Y0: exactly the squares
    sq = {int(i): int(v) for i, v in re.findall(r"\d+'d(\d+): begin y0 = \d+'d\d+; y0sq = \d+'d(\d+);", text)}
    assert [sq[i] for i in range(len(sq))] == [y * y for y in M.rsqrt_lut()]


def test_rsqrt_unit_relative_error_below_2_pow_minus_14(seed):
    """(R, er) vs sqrt(N) / sqrt(v 2^ev + N eps) in exact arithmetic: measured max ~2^-15."""
    rng = random.Random(seed)
    worst = 0.0
    for n, eps in ((64, 1e-5), (172, 1e-5), (768, 1e-12), (1, 1e-6)):
        k = M.norm_consts(n, eps)
        for _ in range(3000):
            v = rng.randrange(0, 1 << rng.randrange(1, 90))
            ev = rng.randrange(-300, 200)
            r, er = M.rsqrt_unit(v, ev, k)
            assert 0 < r < 1 << M.RW
            exact = math.sqrt(n) / math.sqrt(v * 2.0 ** ev + n * eps) if ev < 900 else 0.0
            worst = max(worst, abs(math.ldexp(r, er) / exact - 1))
    print(f"rsqrt unit: max relative error {worst:.3g} (2^{math.log2(worst):.2f})")
    assert worst < 2 ** -14


def test_constants_round_to_nearest():
    k = M.norm_consts(172, 1e-5)
    assert abs(k.sqn_m * 2.0 ** k.sqn_e / math.sqrt(172) - 1) <= 2 ** -M.CB
    assert abs(k.eps_m * 2.0 ** k.eps_e / (172 * 1e-5) - 1) <= 2 ** -M.NMB
    assert abs(k.inv_m * 2.0 ** k.inv_e * 172 - 1) <= 2 ** -M.IB
    assert (k.sqn_m >> (M.CB - 1), k.eps_m >> (M.NMB - 1), k.inv_m >> (M.IB - 1)) == (1, 1, 1)
    k64 = M.norm_consts(64, 1e-5)
    assert (k64.sqn_m, k64.sqn_e, k64.inv_m, k64.inv_e) == (1 << 16, -13, 1 << 25, -31)  # exact for N = 64


@pytest.mark.parametrize("fmt,gfmt", [("mxint8", "mxint8"), ("mxfp8_e4m3", "mxfp8_e4m3"),
                                      ("mxfp4", "mxfp8_e4m3"), ("mxfp8_e5m2", "mxfp4")])
def test_lanes_match_float_rmsnorm(fmt, gfmt, seed):
    """Before the quantizer every lane is x * R * gamma exactly: the error is R's (<= 2^-13 measured)."""
    gen = torch.Generator().manual_seed(seed)
    el, gel = elem(fmt), elem(gfmt)
    n, b = 72, 32
    codes, scales = stress_rows(el, 12, n, b, gen)
    gc, gs = stress_rows(gel, 1, n, b, gen)
    gs[0] = 127 + torch.randint(-2, 3, gs[0].shape, generator=gen)   # gamma near 1 (as trained)
    m, e = M.rmsnorm_lanes(codes, scales, el, gc[0], gs[0], gel, n)
    got = M.lanes_to_float(m, e)[:, :n]
    x = M.mx_values(codes, scales, el)[:, :n]
    g = M.mx_values(gc[0], gs[0], gel)[:n]
    ref = M.rmsnorm_reference(x, g)
    nz = ref != 0
    assert torch.equal(got != 0, nz)
    rel = ((got[nz] - ref[nz]) / ref[nz]).abs().max().item() if nz.any() else 0.0
    print(f"rmsnorm {fmt} gamma {gfmt}: max relative error of the (m, e) lanes {rel:.3g}")
    assert rel < 2 ** -13
    assert all(mi == 0 for row in m for mi in row[n:])  # padding lanes


def test_lanes_are_exact_products_and_sums_exact_at_one_scale(seed):
    """Exactness where the kernel is exact: every lane is x * (R 2^er) * gamma as a Fraction, and with
    one scale per row the accumulator holds sum xi^2 exactly (no alignment loss)."""
    from fractions import Fraction

    gen = torch.Generator().manual_seed(seed)
    el, gel = elem("mxfp8_e4m3"), elem("mxint8")
    n, b = 50, 32
    codes, scales = stress_rows(el, 6, n, b, gen)
    scales[:, 1] = scales[:, 0]
    gc, gs = stress_rows(gel, 1, n, b, gen)
    m, e = M.rmsnorm_lanes(codes, scales, el, gc[0], gs[0], gel, n)
    k = M.norm_consts(n, 1e-5)
    for r in range(6):
        xis = [[M.decode_fixed(c, el) if j * b + i < n else 0 for i, c in enumerate(blk)]
               for j, blk in enumerate(codes[r].tolist())]
        a1, a2, sa = M.accumulate_row([(*M.block_sums(x), int(s)) for x, s in zip(xis, scales[r].tolist())])
        assert a2 == sum(x * x for blk in xis for x in blk) << M.G2
        assert a1 == sum(x for blk in xis for x in blk) << M.G1
        rr, er = M.rsqrt_unit(a2, 2 * (sa - 127 + M.unit_exp(el)) - M.G2, k)
        for idx in range(n):
            j, i = divmod(idx, b)
            x = el.code_value(int(codes[r, j, i])) * Fraction(2) ** (int(scales[r, j]) - 127)
            g = gel.code_value(int(gc[0, j, i])) * Fraction(2) ** (int(gs[0, j]) - 127)
            assert Fraction(m[r][idx]) * Fraction(2) ** e[r][idx] == x * rr * Fraction(2) ** er * g


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4"])
def test_outputs_equal_mx_quantized_float_reference_almost_always(fmt, seed):
    """The output codes equal masec.formats' MX encoding of the float reference except where the
    reference lies within R's error of a rounding boundary (measured: < 1% of elements, 1 step)."""
    gen = torch.Generator().manual_seed(seed)
    el = elem(fmt)
    gel = elem("mxfp8_e4m3")
    n, b = 64, 32
    codes, scales = stress_rows(el, 30, n, b, gen)
    scales[:] = 127 + torch.randint(-3, 4, scales.shape, generator=gen)
    gc, gs = stress_rows(gel, 1, n, b, gen)
    gs[0] = 127
    oc, osc = M.rmsnorm_model(codes, scales, el, gc[0], gs[0], gel, el, n)
    ref = M.rmsnorm_reference(M.mx_values(codes, scales, el), M.mx_values(gc[0], gs[0], gel))
    fo = parse_format(fmt, block_size=b)
    enc = fo.encode(ref.to(torch.float32))
    ec = enc.codes.to(torch.int64).reshape(oc.shape)
    es = enc.scales.to(torch.int64).reshape(osc.shape)
    compare_to_ideal(oc, osc, ec, es, el, f"rmsnorm {fmt}")


# ----------------------------------------------------------------------------- RTL tests
# (fmt_in, fmt_gamma, fmt_out, N, P, B)
DEFAULT = ("mxfp8_e4m3", "mxfp4", "mxint8", 80, 4, 32)
SWEEP = [
    ("mxfp8_e4m3", "mxfp4", "mxint8", 80, 8, 32),
    ("mxint8", "mxint8", "mxint8", 64, 4, 32),
    ("mxint8", "mxfp8_e4m3", "mxfp8_e4m3", 40, 32, 32),
    ("mxfp4", "mxfp8_e4m3", "mxfp4", 72, 16, 32),
    ("mxfp8_e5m2", "mxint8", "mxfp8_e4m3", 50, 2, 16),
    ("mxfp8_e4m3", "mxfp8_e4m3", "mxint8", 16, 16, 16),   # one beat per row
    ("mxint4", "mxfp4", "mxint8", 100, 1, 32),
]


def _build_and_run(tmp, cfg, seed, pipe=0, rows=8):
    fi, fg, fo, n, p, b = cfg
    el, gel, oel = elem(fi), elem(fg), elem(fo)
    gen = torch.Generator().manual_seed(seed)
    codes, scales = stress_rows(el, rows, n, b, gen)
    gc, gs = stress_rows(gel, 1, n, b, gen)
    while not (gc != 0).any():   # a stress row may be all zero; gamma = 0 would test nothing
        gc, gs = stress_rows(gel, 1, n, b, gen)
    oc, osc = M.rmsnorm_model(codes, scales, el, gc[0], gs[0], gel, oel, n)
    tmp.mkdir(parents=True, exist_ok=True)
    mem = tmp / "gamma.mem"
    mem.write_text(M.pack_gamma_mem(gc[0], gs[0], gel))
    params = M.sim_params("rmsnorm", n, el, gel, oel, p, b, gamma_mem=str(mem), pipe=pipe)
    return simulate(tmp, "mx_rmsnorm", params, seed, codes, scales, oc, osc, el, oel, p, b, rows)


def _lint_parameters(cfg, pipe):
    fi, fg, fo, n, p, b = cfg
    return M.sim_params("rmsnorm", n, elem(fi), elem(fg), elem(fo), p, b, pipe=pipe)


# latency: 8 cycles statistics + 2 output stages + mx_quantize's block (B/P beats + 1), at PIPE 0;
# PIPE 0 and the deepest PIPE (M.rmsnorm_latency more)
(default_run, test_rtl_matches_model, test_check_can_fail, test_rtl_matches_model_sweep, test_lints_clean,
 test_pipeline_latency) = rtl_tests(
    "mx_rmsnorm", _build_and_run, DEFAULT, SWEEP, latency=12, lint_parameters=_lint_parameters,
    pipes=(0, M.MAX_PIPE), pipe_latency=M.rmsnorm_latency,
    sweep_id=lambda c: f"{c[0]}-{c[1]}-{c[2]}-N{c[3]}-P{c[4]}-B{c[5]}",
    lint_id=lambda c: f"{c[0]}-{c[1]}-{c[2]}-N{c[3]}-P{c[4]}")


def test_instance_config_matches_sim_params():
    ctx, params, module = M.instance_config("rmsnorm", 172, "mxint8", "mxfp8_e4m3", "mxfp8_e4m3", 4,
                                            gamma_mem="g.mem")
    assert ctx == {} and module == "mx_rmsnorm"
    assert params == M.sim_params("rmsnorm", 172, elem("mxint8"), elem("mxfp8_e4m3"), elem("mxfp8_e4m3"),
                                  4, 32, gamma_mem="g.mem")
    with pytest.raises(ValueError):
        M.instance_config("rmsnorm", 64, "mxint8", "mxint8", "mxint8", 3)


def test_pipeline_depth_rules():
    for k in ("mx_rmsnorm", "mx_rmsnorm_rsqrt", "mx_layernorm"):
        assert [pipe_depth(k, ns) for ns in (20.0, 10.0, 8.0, 5.0, 3.0, 2.0)] == [0, 0, 1, 2, 3, 3]
    assert [M.norm_latency("rmsnorm", p) for p in range(M.MAX_PIPE + 1)] == [0, 7, 12, 18]
    assert M.rmsnorm_latency({}) == 0 and M.rmsnorm_latency({"PIPE": 2}) == 12
    with pytest.raises(ValueError):
        M.norm_latency("rmsnorm", M.MAX_PIPE + 1)
