"""mx_softmax: model vs float softmax (measured error), RTL vs bit-exact model under gaps/backpressure;
score scale (softmax(s * x)) and key mask."""
import hashlib
import math
import random
import re

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels import mx_norm as MN
from masec.hw_templates.kernels import mx_softmax as S
from masec.hw_templates.render import render
from masec.hw_templates.render import render_with_deps
from masec.passes.hw.pipeline import pipe_depth
from masec.sim.runner import lint
from norm_helpers import compare_to_ideal, norm_vectors, rtl_tests, run_sim, simulate, stress_rows

XMAX = 4096 - 2 ** -12   # the kernel saturates x at +-(2^24 - 1) / 2^12


def elem(name):
    return parse_format(name).element


def score_rows(el, rows, n, b, gen):
    """Attention-score-like rows: stress blocks, but most rows with scales that put |x| in ~[0.1, 60]."""
    codes, scales = stress_rows(el, rows, n, b, gen)
    typical = torch.rand(rows, generator=gen) < 0.7
    top = 127 - el.emax + torch.randint(-3, 6, scales.shape, generator=gen)   # block max ~2^-3 .. 2^5
    scales = torch.where(typical.unsqueeze(-1), top, scales)
    return codes, scales


# ----------------------------------------------------------------------------- model-level tests
def test_tables_in_templates_equal_model():
    text = render("mx_softmax_exp2").text
    t = {int(i): (int(a), int(d)) for i, a, d in re.findall(r"6'd(\d+): begin t = \d+'d(\d+); d = \d+'d(\d+);", text)}
    tab = S.exp2_table()
    assert [t[i] for i in range(64)] == [(tab[i], tab[i + 1] - tab[i]) for i in range(64)]
    text = render("mx_softmax").text
    r = {int(i): int(v) for i, v in re.findall(r"7'd(\d+): y0 = \d+'d(\d+);", text)}
    assert [r[i] for i in range(128)] == list(S.recip_table())
    assert S.u_constant(1.0) == (S.L2E, S.LF) == (94548, 16)
    assert re.search(rf"parameter int unsigned U_MUL +=\s*{S.L2E},", render("mx_softmax_u").text)
    assert re.search(rf"parameter int unsigned U_MUL +=\s*{S.L2E},", text)
    assert re.search(rf"parameter int unsigned U_SH +=\s*{S.LF},", text)


def test_exp2_unit_error():
    """E * 2^(I - 16) vs 2^(v / 2^12) over every fraction: relative error < 2^-15 (measured 2^-15.6)."""
    worst = 0.0
    for f in range(1 << S.UF):
        v = f - (3 << S.UF)
        e, i = S.exp2_frac(v)
        assert (1 << S.EF) <= e < (2 << S.EF) and i == -3
        worst = max(worst, abs(math.ldexp(e, i - S.EF) / 2 ** (v / 4096) - 1))
    print(f"exp2 unit: max relative error {worst:.3g} (2^{math.log2(worst):.2f})")
    assert worst < 2 ** -15
    assert S.exp2_frac(-(1 << 24))[1] == S.IMIN


def test_reciprocal_unit_error(seed):
    rng = random.Random(seed)
    worst = 0.0
    for _ in range(20000):
        s = rng.randrange(1, 1 << rng.randrange(1, 40))
        y, er = S.recip_unit(s, 20)
        assert 0 < y < 1 << (S.YF + 1)
        worst = max(worst, abs(math.ldexp(y, er) * s * 2.0 ** -20 - 1))
    print(f"reciprocal unit: max relative error {worst:.3g} (2^{math.log2(worst):.2f})")
    assert worst < 2 ** -14


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4", "mxfp8_e5m2"])
@pytest.mark.parametrize("causal", [False, True])
def test_lanes_match_float_softmax(fmt, causal, seed):
    """(m, e) lanes vs float64 softmax: |err| <= 2^-10 * ref + 2^-20 (x to 2^-12, u floor, exp2
    interpolation, 1/S: measured ~2^-12.5 relative); masked entries exactly 0."""
    gen = torch.Generator().manual_seed(seed)
    el = elem(fmt)
    n, b, p = 72, 32, 8
    codes, scales = score_rows(el, 16, n, b, gen)
    m, e = S.softmax_lanes(codes, scales, el, n, p, causal, rows=10, offset=3)
    got = MN.lanes_to_float(m, e)[:, :n]
    x = MN.mx_values(codes, scales, el)[:, :n]
    # |x| >= 2^12 saturates in the kernel (documented); keep the reference comparable
    ref = S.softmax_reference(x.clamp(-4095, 4095), causal, rows=10, offset=3)
    assert ((got - ref).abs() <= 2 ** -10 * ref + 2 ** -20).all()
    keep = torch.tensor([S.keep_mask(n, 3, b, r, causal, 10, 3)[:n] for r in range(16)])
    assert torch.equal(got[~keep], torch.zeros_like(got[~keep]))
    rel = ((got - ref).abs() / ref)[ref > 1e-4].max().item()
    print(f"softmax {fmt} causal={causal}: max relative error {rel:.3g} where ref > 1e-4")


def test_fully_masked_row_is_zero():
    el = elem("mxint8")
    codes = torch.randint(0, 256, (3, 1, 16))
    scales = torch.full((3, 1), 125)
    oc, osc = S.softmax_model(codes, scales, el, el, 16, 4, causal=True, rows=3, offset=-1)
    assert (oc[0] == 0).all()          # row 0 keeps j <= -1: nothing
    assert (oc[1, 0, 1:] == 0).all()   # row 1 keeps only j = 0: ~1.0 (0.992 or 1.0 after MX rounding)
    v = MN.mx_values(oc[1:2], osc[1:2], el)[0, 0].item()
    assert abs(v - 1) <= 2 ** -7


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4", "mxfp8_e5m2"])
def test_vectorized_model_equals_scalar_model(fmt, seed):
    """softmax_model runs the torch int64 path; it must equal the Python-int reference model."""
    gen = torch.Generator().manual_seed(seed)
    el = elem(fmt)
    for causal, rows, off in [(False, 1, 0), (True, 7, -2), (True, 5, 30)]:
        for n, b, p in [(72, 32, 8), (16, 16, 16), (100, 32, 1)]:
            c, s = score_rows(el, 10, n, b, gen)
            m, e = S.softmax_lanes(c, s, el, n, p, causal, rows, off)
            mt, et = S.softmax_lanes_t(c, s, el, n, p, causal, rows, off)
            assert mt.tolist() == m and et.tolist() == e, (causal, n, p)


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4"])
def test_outputs_close_to_mx_quantized_float_softmax(fmt, seed):
    gen = torch.Generator().manual_seed(seed)
    el = elem(fmt)
    n, b = 64, 32
    codes, scales = score_rows(el, 40, n, b, gen)
    scales[:] = 127 - el.emax + torch.randint(-2, 4, scales.shape, generator=gen)
    oc, osc = S.softmax_model(codes, scales, el, el, n, 8, causal=True, rows=40, offset=5)
    ref = S.softmax_reference(MN.mx_values(codes, scales, el), True, 40, 5)
    fo = parse_format(fmt, block_size=b)
    enc = fo.encode(ref.to(torch.float32))
    ec = enc.codes.to(torch.int64).reshape(oc.shape)
    es = enc.scales.to(torch.int64).reshape(osc.shape)
    compare_to_ideal(oc, osc, ec, es, el, f"softmax {fmt}")


# ----------------------------------------------------------------------------- RTL tests
# (fmt_in, fmt_out, N, P, B, causal, rows, offset)
DEFAULT = ("mxfp8_e4m3", "mxint8", 72, 4, 32, True, 5, 30)
SWEEP = [
    ("mxfp8_e4m3", "mxint8", 72, 8, 32, True, 5, 30),
    ("mxint8", "mxint8", 64, 4, 32, False, 1, 0),
    ("mxfp4", "mxfp4", 40, 32, 32, True, 4, 2),
    ("mxfp8_e5m2", "mxfp8_e4m3", 50, 2, 16, True, 6, -1),   # fully masked rows
    ("mxint8", "mxfp8_e4m3", 16, 16, 16, False, 1, 0),        # one beat per row
    ("mxint4", "mxint8", 100, 1, 32, True, 3, 50),
]


def _build_and_run(tmp, cfg, seed, pipe=0, rows=8):
    fi, fo, n, p, b, causal, nrows, offset = cfg
    el, oel = elem(fi), elem(fo)
    gen = torch.Generator().manual_seed(seed)
    codes, scales = score_rows(el, rows, n, b, gen)
    oc, osc = S.softmax_model(codes, scales, el, oel, n, p, causal, nrows, offset)
    params = S.sim_params(n, el, oel, p, b, causal, nrows, offset, pipe=pipe)
    return simulate(tmp, "mx_softmax", params, seed, codes, scales, oc, osc, el, oel, p, b, rows)


def _lint_parameters(cfg, pipe):
    fi, fo, n, p, b, causal, nrows, offset = cfg
    return S.sim_params(n, elem(fi), elem(fo), p, b, causal, nrows, offset, pipe=pipe)


# latency: 7 cycles statistics + 4 output stages + mx_quantize's block (B/P beats + 1), at PIPE 0;
# PIPE 0 and the deepest PIPE (S.latency more)
(default_run, test_rtl_matches_model, test_check_can_fail, test_rtl_matches_model_sweep, test_lints_clean,
 test_pipeline_latency) = rtl_tests(
    "mx_softmax", _build_and_run, DEFAULT, SWEEP, latency=14, lint_parameters=_lint_parameters,
    pipes=(0, S.MAX_PIPE), pipe_latency=S.latency,
    sweep_id=lambda c: f"{c[0]}-{c[1]}-N{c[2]}-P{c[3]}-B{c[4]}-c{int(c[5])}",
    lint_id=lambda c: f"{c[0]}-{c[1]}-N{c[2]}-P{c[3]}-c{int(c[5])}")


def test_instance_config():
    ctx, params, module = S.instance_config(64, "mxint8", "mxfp8_e4m3", 8, causal=True, rows=64)
    assert ctx == {} and module == "mx_softmax"
    assert params == S.sim_params(64, elem("mxint8"), elem("mxfp8_e4m3"), 8, 32, True, 64, 0)


# ----------------------------------------------------------------------------- score scale, key mask
SCALES = [1.0, 1 / math.sqrt(8), 1 / math.sqrt(64), 2 ** -8, 4.0]


def test_u_constant():
    """U_MUL in [2^16, 2^17): the constant's relative error is <= 2^-17 at every scale in [2^-16, 8];
    u_width is the documented minimum (26 for scale 1)."""
    rng = random.Random(7)
    scales = SCALES + [2 ** -16, 8.0, 0.5 / math.log2(math.e)] + [2 ** rng.uniform(-16, 3) for _ in range(2000)]
    worst = 0.0
    for sc in scales:
        mul, sh = S.u_constant(sc)
        assert 1 << S.LF <= mul < 2 << S.LF and 13 <= sh <= 32
        worst = max(worst, abs(mul * 2.0 ** -sh / (sc * math.log2(math.e)) - 1))
        uw = S.u_width(mul, sh)
        umax = S.u_of((1 << (S.XI + S.XF)) - 1, mul, sh)
        umin = S.u_of(-((1 << (S.XI + S.XF)) - 1), mul, sh)
        assert umax + (1 << S.UF) - 1 < 1 << (uw - 1) and umin >= -(1 << (uw - 1))
        assert umax + (1 << S.UF) - 1 >= 1 << (uw - 2)     # minimal
    print(f"U_MUL * 2^-U_SH vs scale * log2(e): max relative error {worst:.3g} (2^{math.log2(worst):.2f})")
    assert worst <= 2 ** -17
    assert S.u_width() == 26
    assert S.u_constant(0.5 / math.log2(math.e)) == (1 << 16, 17)
    for bad in (0.0, -1.0, 2 ** -17, 8.5, math.inf, math.nan):
        with pytest.raises(ValueError):
            S.u_constant(bad)


# sha256 of the model's outputs (codes, scales, m, e) before the scale / key mask were added
_GOLDEN_UNSCALED = "9b6e386ec5316304344b57c0565a53975fe337cd4e57ca5a84ee78034e349adc"


def _digest(**kw):
    h = hashlib.sha256()
    for fi, fo, n, p, b, causal, rows, off in [("mxint8", "mxint8", 72, 8, 32, True, 10, 3),
                                               ("mxfp8_e4m3", "mxint8", 64, 4, 32, False, 1, 0),
                                               ("mxfp4", "mxfp8_e4m3", 40, 16, 16, True, 7, -2)]:
        el, eo = elem(fi), elem(fo)
        c, sc = stress_rows(el, 24, n, b, torch.Generator().manual_seed(1234))
        oc, os_ = S.softmax_model(c, sc, el, eo, n, p, causal, rows, off, **kw)
        m, e = S.softmax_lanes_t(c, sc, el, n, p, causal, rows, off, **kw)
        for t in (oc, os_, m, e):
            h.update(repr(t.tolist()).encode())
    return h.hexdigest()


def test_scale_one_is_bit_identical_to_unscaled_kernel():
    """scale=1.0 (and an all-ones key mask) reproduce the kernel's results from before the score scale
    existed, bit for bit, and the same SV parameters / module."""
    assert _digest() == _GOLDEN_UNSCALED
    assert _digest(scale=1.0) == _GOLDEN_UNSCALED
    for xfix in range(-(1 << 24) + 1, 1 << 24, 4099):
        assert S.u_of(xfix, *S.u_constant(1.0)) == (xfix * 94548) >> 16
    el = elem("mxint8")
    c, sc = score_rows(el, 6, 40, 32, torch.Generator().manual_seed(3))
    base = S.softmax_model(c, sc, el, el, 40, 4, True, 6, 2)
    ones = S.softmax_model(c, sc, el, el, 40, 4, True, 6, 2, scale=1.0, key_mask=torch.ones(40))
    assert all(torch.equal(a, b) for a, b in zip(base, ones))
    assert S.instance_config(40, "mxint8", "mxint8", 4, key_mask=[1] * 40)[0::2] == ({}, "mx_softmax")


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4", "mxfp8_e5m2"])
@pytest.mark.parametrize("scale", SCALES + [8.0], ids=["1", "isqrt8", "isqrt64", "2^-8", "4", "8"])
def test_scaled_lanes_match_float_softmax(fmt, scale, seed):
    """(m, e) lanes vs float64 softmax(scale * x): |err| <= 2^-11 (1 + scale) ref + 2^-20. The scale adds
    the constant's 2^-17 relative error to u, and multiplies the 2^-12 floor of x (exp error <= scale
    * 2^-12 relative); measured 2^-12.2 .. 2^-12.9 for scales <= 1/sqrt(8), 2^-9 at scale 8."""
    gen = torch.Generator().manual_seed(seed)
    el = elem(fmt)
    n, b, p = 72, 32, 8
    codes, scales = score_rows(el, 16, n, b, gen)
    m, e = S.softmax_lanes_t(codes, scales, el, n, p, True, 10, 3, scale=scale)
    got = (m.double() * torch.pow(2.0, e.double()))[:, :n]
    x = MN.mx_values(codes, scales, el)[:, :n]
    ref = S.softmax_reference(x.clamp(-XMAX, XMAX), True, 10, 3, scale=scale)
    assert ((got - ref).abs() <= 2 ** -11 * (1 + scale) * ref + 2 ** -20).all()
    rel = ((got - ref).abs() / ref)[ref > 1e-4].max().item()
    print(f"softmax {fmt} scale={scale:.4g}: max relative error {rel:.3g} (2^{math.log2(rel):.2f}) where ref > 1e-4")


def _bert_mask(n, gen):
    """A padding mask: the last columns padded, plus a few random holes (any constant bit vector works)."""
    km = torch.ones(n, dtype=torch.int64)
    km[n - int(torch.randint(1, n // 3, (1,), generator=gen)):] = 0
    km[torch.randint(0, n, (3,), generator=gen)] = 0
    return km


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3"])
@pytest.mark.parametrize("causal", [False, True])
def test_key_mask(fmt, causal, seed):
    """Key-masked columns output exact 0 and enter neither max nor sum: the result is the float softmax
    over the kept columns, and equals the kernel run on the same row with the masked columns' inputs
    changed arbitrarily."""
    gen = torch.Generator().manual_seed(seed)
    el = elem(fmt)
    n, b, p = 72, 32, 8
    km = _bert_mask(n, gen)
    codes, scales = score_rows(el, 16, n, b, gen)
    sc = 1 / math.sqrt(8)
    m, e = S.softmax_lanes_t(codes, scales, el, n, p, causal, 10, 3, scale=sc, key_mask=km)
    got = (m.double() * torch.pow(2.0, e.double()))[:, :n]
    x = MN.mx_values(codes, scales, el)[:, :n]
    ref = S.softmax_reference(x.clamp(-XMAX, XMAX), causal, 10, 3, scale=sc, key_mask=km)
    assert ((got - ref).abs() <= 2 ** -10 * ref + 2 ** -20).all()
    keep = torch.tensor([S.keep_mask(n, 3, b, r, causal, 10, 3, km.tolist())[:n] for r in range(16)])
    assert (ref[~keep] == 0).all() and (got[~keep] == 0).all() and (got[:, km == 0] == 0).all()
    # masked columns do not matter: scramble their codes (the maximum of a row may sit there)
    flat = codes.reshape(16, -1).clone()
    cols = (km == 0).nonzero().flatten()
    flat[:, cols] = torch.randint(0, 1 << el.bits, (16, len(cols)), generator=gen)
    m2, e2 = S.softmax_lanes_t(flat.reshape(codes.shape), scales, el, n, p, causal, 10, 3, scale=sc, key_mask=km)
    kept = torch.cat([keep, torch.zeros(16, m.shape[1] - n, dtype=torch.bool)], 1)
    # the block scale is shared, so only kept lanes are compared (their codes and scales are unchanged)
    assert torch.equal(m2[kept], m[kept]) and torch.equal(e2[kept], e[kept])
    # a key mask with every column masked gives all-zero rows
    oc, _ = S.softmax_model(codes, scales, el, el, n, p, causal, 10, 3, scale=sc, key_mask=[0] * n)
    assert (oc == 0).all()


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4"])
def test_vectorized_model_equals_scalar_model_scaled_masked(fmt, seed):
    gen = torch.Generator().manual_seed(seed)
    el = elem(fmt)
    for scale in (1 / math.sqrt(8), 2 ** -8, 4.0):
        for causal, rows, off in [(False, 1, 0), (True, 7, -2)]:
            for n, b, p in [(72, 32, 8), (16, 16, 16), (100, 32, 1)]:
                km = _bert_mask(n, gen) if (n + p) % 2 == 0 else None
                c, s = score_rows(el, 6, n, b, gen)
                m, e = S.softmax_lanes(c, s, el, n, p, causal, rows, off, scale=scale, key_mask=km)
                mt, et = S.softmax_lanes_t(c, s, el, n, p, causal, rows, off, scale=scale, key_mask=km)
                assert mt.tolist() == m and et.tolist() == e, (scale, causal, n, p)


def test_instance_config_scale_and_key_mask():
    km = [1] * 60 + [0] * 12
    ctx, params, module = S.instance_config(72, "mxint8", "mxint8", 8, causal=True, rows=72,
                                            scale=1 / math.sqrt(8), key_mask=km)
    assert ctx == {"key_mask": tuple(km)} and module == S.module_name(72, km) and module.startswith("mx_softmax_km")
    assert (params["U_MUL"], params["U_SH"]) == S.u_constant(1 / math.sqrt(8)) == (66856, 17)
    assert module != S.module_name(72, km[::-1]) and module == S.module_name(72, torch.tensor(km))
    text = render("mx_softmax", module, **ctx).text
    assert "KEY_MASK  = 72'b00000000_00001111_" + "_".join(["11111111"] * 7) + "\n" in text
    with pytest.raises(ValueError):
        S.instance_config(72, "mxint8", "mxint8", 8, key_mask=[1] * 71)
    with pytest.raises(ValueError):
        S.instance_config(72, "mxint8", "mxint8", 8, scale=0.0)


# RTL: (fmt_in, fmt_out, N, P, B, causal, rows, offset, scale, key mask seed or None[, PIPE])
SCALED_DEFAULT = [
    ("mxfp8_e4m3", "mxint8", 72, 4, 32, True, 5, 30, 1 / math.sqrt(8), None),
    ("mxint8", "mxfp8_e4m3", 64, 8, 32, True, 64, 0, 1 / math.sqrt(64), 11, 3),   # attention prefill + padding
]
SCALED_SWEEP = [
    ("mxfp4", "mxfp4", 40, 32, 32, False, 1, 0, 4.0, 5),
    ("mxint8", "mxint8", 50, 2, 16, True, 6, -1, 2 ** -8, 3),
    ("mxfp8_e5m2", "mxint8", 16, 16, 16, False, 1, 0, 1 / math.sqrt(8), 2),   # one beat per row
    ("mxint4", "mxint8", 100, 1, 32, True, 3, 50, 8.0, None),
]


def _scaled_id(c):
    return f"{c[0]}-{c[1]}-N{c[2]}-P{c[3]}-c{int(c[5])}-s{c[8]:.3g}-km{c[9]}" + (f"-pipe{c[10]}" if len(c) > 10 else "")


def _scaled_instance(cfg):
    fi, fo, n, p, b, causal, nrows, offset, scale, km_seed = cfg[:10]
    km = None if km_seed is None else _bert_mask(n, torch.Generator().manual_seed(km_seed))
    ctx, params, module = S.instance_config(n, fi, fo, p, causal, nrows, offset, b, scale=scale, key_mask=km)
    if len(cfg) > 10:
        params["PIPE"] = cfg[10]
    return km, ctx, params, module


def _run_scaled(tmp, cfg, seed, rows=8):
    fi, fo, n, p, b, causal, nrows, offset, scale, _ = cfg[:10]
    km, ctx, params, module = _scaled_instance(cfg)
    el, oel = elem(fi), elem(fo)
    gen = torch.Generator().manual_seed(seed)
    codes, scales = score_rows(el, rows, n, b, gen)
    oc, osc = S.softmax_model(codes, scales, el, oel, n, p, causal, nrows, offset, scale=scale, key_mask=km)
    assert (oc != 0).any()
    files = render_with_deps("mx_softmax", tmp / "rtl", module, **ctx)
    row_beats = codes.shape[1] * b // p
    vf = norm_vectors(codes, scales, oc, osc, el, oel, p, seed, rows, row_beats)
    res = run_sim(files, module, vf, tmp / "build", params)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"{module} {cfg}: full_rate {full['cycles']} cycles, ideal {full['ideal_cycles']}")
    assert full["cycles"] <= full["ideal_cycles"] + b // p + 14 + S.latency(params)


@pytest.mark.parametrize("cfg", SCALED_DEFAULT, ids=_scaled_id)
def test_rtl_matches_model_scaled_masked(tmp_path, seed, cfg):
    print(f"\n[masec] mx_softmax scaled/masked seed {seed}")
    _run_scaled(tmp_path, cfg, seed)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", SCALED_SWEEP, ids=_scaled_id)
def test_rtl_matches_model_scaled_masked_sweep(tmp_path, seed, cfg):
    _run_scaled(tmp_path, cfg, seed)


@pytest.mark.parametrize("cfg", [*SCALED_DEFAULT, *(pytest.param(c, marks=pytest.mark.slow) for c in SCALED_SWEEP)],
                         ids=_scaled_id)
def test_lints_clean_scaled_masked(tmp_path, cfg):
    _, ctx, params, module = _scaled_instance(cfg)
    lint(render_with_deps("mx_softmax", tmp_path, module, **ctx), module, parameters=params)


def test_pipeline_depth_rules():
    for k in ("mx_softmax", "mx_softmax_u", "mx_softmax_exp2"):
        assert [pipe_depth(k, ns) for ns in (20.0, 10.0, 8.0, 5.0, 3.0, 2.0)] == [0, 0, 1, 2, 3, 3]
    assert [S.softmax_latency(p) for p in range(S.MAX_PIPE + 1)] == [0, 11, 15, 26]
    assert S.latency({}) == 0 and [S.lane_latency({"PIPE": p}) for p in range(S.MAX_PIPE + 1)] == [0, 1, 1, 2]
    with pytest.raises(ValueError):
        S.softmax_latency(S.MAX_PIPE + 1)
