"""mx_gelu / mx_gelu_tanh / mx_silu: model vs an mpmath reference (exact outside the ROM range, measured inside),
ROM contents, RTL vs model under gaps/backpressure, lint."""
import pytest
import torch

from masec.hw_templates.kernels.mx_act import (K_HI, K_LO, MAX_PIPE, act_me, act_model, instance_config, latency,
                                                lut, reference_model)
from masec.hw_templates.kernels.mx_eltwise import decode_sig_exp
from masec.hw_templates.kernels.mx_relu import resolve_format, stress_mx
from masec.hw_templates.render import render
from masec.hw_templates.render import render_with_deps
from masec.passes.hw.pipeline import pipe_depth
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import VectorFile
from pipe_helpers import assert_pipe_latency

IN_FORMATS = ["mxint8", "mxfp8_e4m3", "mxfp4", "mxfp8_e5m2"]


def _isolated_blocks(fmt):
    """One block per (finite non-zero code, scale), the code repeated: every value in isolation.
    Scales put the inputs in every binade from K_LO - 4 to K_HI(silu) + 4, and at the extremes."""
    el = fmt.element
    vals = el.decode_codes(el.all_codes())
    codes = el.all_codes()[torch.isfinite(vals) & (vals != 0)]
    scales = list(range(127 - K_LO - 30, 127 + K_HI["silu"] + 6)) + [0, 1, 253, 254]
    scales = sorted({s for s in scales if 0 <= s <= 254})
    c = codes.repeat(len(scales)).unsqueeze(-1)       # blocks of one element: E from that element
    s = torch.tensor(scales).repeat_interleave(len(codes))
    return c, s


def _rom_region(func, codes, scales, el):
    sig, exp = decode_sig_exp(codes[..., :1], el)
    t = scales.unsqueeze(-1) + exp - 127
    p = torch.floor(torch.log2(sig.abs().double())).long()
    k = (t + p).squeeze(-1)
    return (k >= K_LO) & (k <= K_HI[func])


@pytest.mark.parametrize("func", ["gelu", "silu", "gelu_tanh"])
@pytest.mark.parametrize("fmt_in,fmt_out", [
    ("mxint8", "mxint8"), ("mxfp8_e4m3", "mxfp8_e4m3"), ("mxfp4", "mxfp4"),
    pytest.param("mxfp8_e5m2", "mxint8", marks=pytest.mark.slow),
    pytest.param("mxint8", "mxfp4", marks=pytest.mark.slow)])
def test_act_model_vs_mpmath_reference(func, fmt_in, fmt_out):
    """Every input value in isolation: outside the ROM range the kernel output IS the correctly
    rounded MX value of f(x); inside, at most 1% of values differ, by one output step."""
    fi, fo = resolve_format(fmt_in, 32), resolve_format(fmt_out, 32)
    c, s = _isolated_blocks(fi)
    got_c, got_s = act_model(func, c, s, fi.element, fo.element)
    ref_c, ref_s = reference_model(func, c, s, fi.element, fo.element)
    same = (got_c[:, 0] == ref_c[:, 0]) & (got_s == ref_s)
    rom = _rom_region(func, c, s, fi.element)
    assert bool(same[~rom].all()), f"{int((~same[~rom]).sum())} values outside the ROM range differ"
    miss = ~same & rom
    assert int(miss.sum()) <= max(1, int(0.01 * int(rom.sum()))), f"{int(miss.sum())} of {int(rom.sum())}"
    if bool(miss.any()):
        el = fo.element
        gv = el.decode_codes(got_c[miss][:, 0]) * torch.pow(2.0, (got_s[miss] - 127).double())
        rv = el.decode_codes(ref_c[miss][:, 0]) * torch.pow(2.0, (ref_s[miss] - 127).double())
        # one output step: the value is its block's maximum, so a step is <= 2^-mbits relative
        assert bool(((gv - rv).abs() <= rv.abs() * 2.0 ** -el.mbits).all()), (gv, rv)
    print(f"{func} {fmt_in}->{fmt_out}: {int(rom.sum())} values in the ROM range, {int(miss.sum())} differ "
          f"from the correctly rounded result; {int((~rom).sum())} outside, all equal")


@pytest.mark.parametrize("func", ["gelu", "silu", "gelu_tanh"])
def test_act_model_mixed_blocks_vs_reference(func):
    """Stress blocks (mixed values, scale extremes, zeros): >= 99% of blocks equal the ideal output."""
    gen = torch.Generator().manual_seed(21)
    for fmt_in, fmt_out in (("mxint8", "mxfp8_e4m3"), ("mxfp4", "mxint8"), ("mxfp8_e4m3", "mxfp4")):
        fi, fo = resolve_format(fmt_in, 32), resolve_format(fmt_out, 32)
        c, s = stress_mx(fi.element, 300, 32, gen)
        got = act_model(func, c, s, fi.element, fo.element)
        ref = reference_model(func, c, s, fi.element, fo.element)
        blk_eq = (got[0] == ref[0]).all(-1) & (got[1] == ref[1])
        assert float(blk_eq.float().mean()) >= 0.99, (fmt_in, fmt_out, float(blk_eq.float().mean()))


@pytest.mark.parametrize("func", ["gelu", "silu", "gelu_tanh"])
def test_rom_entries_are_g_bit_roundings_of_h(func):
    import mpmath

    def h_of(a):
        if func == "gelu":
            return mpmath.erfc(a / mpmath.sqrt(2)) / 2
        if func == "silu":
            return 1 / (1 + mpmath.exp(a))
        # tanh GELU: g(-a) = (1 - tanh(u)) / 2 = 1 / (1 + e^(2u)), u = sqrt(2/pi) (a + 0.044715 a^3)
        with mpmath.workdps(60):
            u = mpmath.sqrt(2 / mpmath.pi) * (a + mpmath.mpf("0.044715") * a ** 3)
            assert abs((1 - mpmath.tanh(u)) / 2 - 1 / (1 + mpmath.exp(2 * u))) < mpmath.mpf(2) ** -150
            return 1 / (1 + mpmath.exp(2 * u))

    for f_bits in (1, 3, 6):
        entries = lut(func, f_bits)
        assert len(entries) == (K_HI[func] - K_LO + 1) << f_bits
        for idx in range(0, len(entries), 37):
            hm, hsx = entries[idx]
            k, j = K_LO + (idx >> f_bits), idx & ((1 << f_bits) - 1)
            a = mpmath.mpf((1 << f_bits) + j) * mpmath.mpf(2) ** (k - f_bits)
            h = h_of(a)
            approx = mpmath.mpf(hm) * mpmath.mpf(2) ** -(hsx + 16)
            assert 2 ** 14 <= hm < 2 ** 15 and 0 <= hsx
            assert abs(approx - h) <= h * 2 ** -15, (idx, hm, hsx)


def test_act_me_width_bounds():
    for name in IN_FORMATS:
        fi = resolve_format(name, 32)
        for fo_name in ("mxint8", "mxfp4"):
            fo = resolve_format(fo_name, 32)
            gen = torch.Generator().manual_seed(1)
            c, s = stress_mx(fi.element, 200, 32, gen)
            from masec.hw_templates.kernels.mx_act import widths
            wd = widths(fi.element, fo.element)
            for func in ("gelu", "silu", "gelu_tanh"):
                m, e = act_me(func, c, s, fi.element, fo.element)
                assert int(m.abs().max()) < 2 ** (wd["MW"] - 1)
                assert int(e.min()) >= -512 and int(e.max()) <= 511


# ------------------------------------------------------------------------------ RTL
RTL_CASES = [("gelu", "mxint8", "mxfp4", 32, 8), ("silu", "mxfp8_e4m3", "mxint8", 32, 4),
             ("gelu_tanh", "mxint8", "mxint8", 16, 4)]
SLOW_CASES = [("gelu", "mxfp4", "mxfp8_e4m3", 32, 32), ("silu", "mxint8", "mxint8", 16, 2),
              ("gelu", "mxfp8_e5m2", "mxfp8_e4m3", 32, 1), ("silu", "mxfp4", "mxfp4", 32, 16)]


PIPES = [0, MAX_PIPE]   # unpipelined and every cut


@pytest.fixture(scope="module")
def build_cache(tmp_path_factory):
    cache = {}

    def get(func, ctx, module, params):
        key = (module, tuple(sorted(params.items())))
        if key not in cache:
            d = tmp_path_factory.mktemp(module)
            deps = render_with_deps("mx_elem_decode", d / "rtl")
            deps += [render("mx_quantize").write(d / "rtl"), render(f"mx_{func}", module, **ctx).write(d / "rtl")]
            cache[key] = (deps, d / "build")
        return cache[key]
    get.full_cycles = {}
    return get


def _run(build_cache, seed, func, fmt_in, fmt_out, block, lanes, mutate=False, pipe=0):
    fi, fo = resolve_format(fmt_in, block), resolve_format(fmt_out, block)
    ctx, params, module = instance_config((2, 2 * block), fi, fo, lanes, func=func, pipe=pipe)
    files, build_dir = build_cache(func, ctx, module, params)
    gen = torch.Generator().manual_seed(seed)
    nblocks = 6 if mutate else 24
    c, s = stress_mx(fi.element, nblocks, block, gen)
    oc, os_ = act_model(func, c, s, fi.element, fo.element)
    notes = [f"block {b} beat {j}: input scale {int(s[b])}" for b in range(nblocks) for j in range(block // lanes)]
    vf = VectorFile({"s_x": mx_stream(c, s, fi.element.bits, lanes)},
                    {"m_y": mx_stream(oc, os_, fo.element.bits, lanes, notes)}, seed=seed)
    if mutate:
        vf.outputs["m_y"].beats[4] = [vf.outputs["m_y"].beats[4][0], vf.outputs["m_y"].beats[4][1] ^ 1]
    res = run_stream_test(files, module, vf, build_dir, parameters=params)
    if mutate:
        return res
    assert res.ok, res.message
    full = res.run("full_rate")
    allowed = block // lanes + 2 + latency(params)
    print(f"{module} {fmt_in}->{fmt_out} B{block} P{lanes} PIPE {pipe}: full_rate {full['cycles']} cycles, ideal "
          f"{full['ideal_cycles']} ({full['output_beats']} beats), allowed latency {allowed}; seed {seed}")
    assert full["cycles"] <= full["ideal_cycles"] + allowed
    build_cache.full_cycles[(func, fmt_in, fmt_out, block, lanes, pipe)] = full["cycles"]
    return res


@pytest.mark.parametrize("pipe", PIPES)
@pytest.mark.parametrize("func,fmt_in,fmt_out,block,lanes", RTL_CASES)
def test_act_rtl_matches_model(build_cache, seed, func, fmt_in, fmt_out, block, lanes, pipe):
    _run(build_cache, seed, func, fmt_in, fmt_out, block, lanes, pipe=pipe)


@pytest.mark.slow
@pytest.mark.parametrize("pipe", [1, 2])
@pytest.mark.parametrize("func,fmt_in,fmt_out,block,lanes", SLOW_CASES)
def test_act_rtl_matches_model_sweep(build_cache, seed, func, fmt_in, fmt_out, block, lanes, pipe):
    _run(build_cache, seed, func, fmt_in, fmt_out, block, lanes, pipe=pipe)


def test_act_rtl_check_can_fail(build_cache, seed):
    res = _run(build_cache, seed, *RTL_CASES[0], mutate=True)
    assert not res.ok and "beat 4" in res.message


@pytest.mark.parametrize("case", RTL_CASES, ids=[c[0] for c in RTL_CASES])
def test_act_pipe_latency(build_cache, seed, case):
    """Full rate: PIPE = MAX_PIPE takes exactly SPEC.extra["latency"] cycles more than PIPE 0 (so
    the pipeline still takes one beat per cycle), for each of the three kernels."""
    for pipe in PIPES:
        if (*case, pipe) not in build_cache.full_cycles:
            _run(build_cache, seed, *case, pipe=pipe)
    c0, cmax = (build_cache.full_cycles[(*case, p)] for p in PIPES)
    assert_pipe_latency(f"mx_{case[0]}", c0, cmax, MAX_PIPE)


def test_act_latency_and_pipe_depth():
    assert [latency({"PIPE": p}) for p in range(MAX_PIPE + 1)] == [0, 4, 7, 12]
    for k in ("mx_silu", "mx_gelu", "mx_gelu_tanh"):
        assert [pipe_depth(k, ns) for ns in (20.0, 10.0, 8.0, 4.0, 3.0, 2.0)] == [0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError):
        latency({"PIPE": MAX_PIPE + 1})


@pytest.mark.parametrize("func,fmt_in,fmt_out,block,lanes", RTL_CASES + SLOW_CASES)
def test_act_lints_clean(tmp_path, func, fmt_in, fmt_out, block, lanes):
    fi, fo = resolve_format(fmt_in, block), resolve_format(fmt_out, block)
    ctx, _, module = instance_config((1, block), fi, fo, lanes, func=func)
    files = render_with_deps("mx_elem_decode", tmp_path) + [render("mx_quantize").write(tmp_path),
                                                             render(f"mx_{func}", module, **ctx).write(tmp_path)]
    lint(files, module)
    for pipe in PIPES:
        _, params, _ = instance_config((1, block), fi, fo, lanes, func=func, pipe=pipe)
        lint(files, module, parameters=params)


def test_gelu_tanh_float_reference_is_torch_tanh_gelu():
    from masec.hw_templates.kernels.mx_act import float_reference

    x = torch.linspace(-12, 12, 2001, dtype=torch.float64)
    want = torch.nn.functional.gelu(x, approximate="tanh")
    assert torch.allclose(float_reference("gelu_tanh", x), want, rtol=1e-12, atol=1e-12)
