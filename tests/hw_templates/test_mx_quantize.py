"""mx_quantize: model vs exact references and masec.formats; RTL vs model under gaps/backpressure."""
import random
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels.mx_quantize import (
    MAX_PIPE, latency, pack_lanes_me, pipe_for_clock, quantize_block, quantize_blocks, sv_params,
)
from masec.hw_templates.render import render_with_deps
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile
from mx_helpers import ref_quantize_values, write_multi_top, yosys_netlist

FORMATS = ["mxint8", "mxfp8_e4m3", "mxfp4", "mxfp8_e5m2", "mxfp6_e2m3", "mxint4"]


def elem(name):
    return parse_format(name).element


def random_block(rng: random.Random, n: int, mw: int, ew: int) -> tuple[list[int], list[int]]:
    """A block of (m, e) lanes with the extremes mixed in: all-zero blocks, E clamped at both ends,
    most negative mantissas, exact ties, zeros among huge values, wide exponent spreads."""
    emin_e, emax_e = -(1 << (ew - 1)), (1 << (ew - 1)) - 1
    mmin, mmax = -(1 << (mw - 1)), (1 << (mw - 1)) - 1
    kind = rng.randrange(9)
    if kind == 0:
        return [0] * n, [rng.randint(emin_e, emax_e) for _ in range(n)]
    if kind == 1:  # huge: E would exceed 127 -> clamp, lanes saturate
        base = rng.randint(min(120, emax_e - 1), emax_e)
    elif kind == 2:  # tiny: E below -127 -> clamp, small lanes flush / subnormal
        base = rng.randint(emin_e, max(emin_e, -150))
    else:
        base = rng.randint(max(emin_e, -60), min(emax_e, 60) - 6)
    m, e = [], []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            mi = 0
        elif r < 0.22:
            mi = rng.choice([mmin, mmax, -mmax, 1, -1])
        elif r < 0.4:  # few significant bits: exact ties after rounding
            mi = rng.choice([-1, 1]) * (rng.randrange(1, 1 << min(6, mw - 3)) * 2 + 1) << rng.randrange(0, max(1, mw - 8))
        else:
            mi = rng.randint(mmin, mmax) >> rng.randrange(0, mw)
        ei = min(max(base + (rng.randint(-3, 3) if kind != 8 else rng.randint(-40, 40)), emin_e), emax_e)
        m.append(mi)
        e.append(ei)
    return m, e


# ----------------------------------------------------------------------------- model tests
@pytest.mark.parametrize("fmt", FORMATS)
def test_model_matches_exact_rational_reference(fmt, seed):
    """quantize_block == nearest-grid-point rounding of the exact values, incl. E clamping at both ends."""
    rng = random.Random(seed)
    el = elem(fmt)
    for _ in range(300):
        m, e = random_block(rng, 8, 20, 10)
        vals = [Fraction(mi) * Fraction(2) ** ei for mi, ei in zip(m, e)]
        assert quantize_block(m, e, el) == ref_quantize_values(vals, el), (m, e)


def test_model_clamps_shared_exponent_at_both_ends():
    el = elem("mxfp8_e4m3")
    codes, scale = quantize_block([3, -1, 0], [200, 190, 0], el)
    assert scale == 254 and codes == [0x7E, 0xFE, 0]          # E = 127: both saturate to +-448
    codes, scale = quantize_block([1, 5], [-140, -142], el)
    # E clamps to -127: 2^-140 / 2^-127 = 2^-13 is below half the smallest e4m3 subnormal (2^-9)
    # -> 0; 5 * 2^-142 likewise -> 0
    assert (codes, scale) == ([0, 0], 0)
    codes, scale = quantize_block([1, 5], [-133, -136], el)
    # 2^-6 (min normal, code 0x08) and 5 * 2^-9 (subnormal 5 * 2^-9, code 0x05)
    assert (codes, scale) == ([0x08, 0x05], 0)
    ref = ref_quantize_values([Fraction(2) ** -133, Fraction(5) * Fraction(2) ** -136], el)
    assert (codes, scale) == ref and scale == 0
    codes, scale = quantize_block([0, 0], [5, -5], elem("mxint8"))
    assert (codes, scale) == ([0, 0], 1)                         # all-zero int block: E = -126
    codes, scale = quantize_block([0, 0], [5, -5], elem("mxfp4"))
    assert (codes, scale) == ([0, 0], 0)                         # all-zero fp block: E = -127


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4", "mxfp6_e3m2"])
def test_model_equals_masec_formats_on_float32_exact_values(fmt, seed):
    """Where m * 2^e is a float32, the quantizer equals MXFormat(..., "even").encode of it."""
    rng = random.Random(seed)
    el = elem(fmt)
    fmt_obj = parse_format(fmt, block_size=16)
    ms, es = [], []
    for i in range(400):
        m, e = random_block(rng, 16, 24, 10)
        # keep values float32-exact: |m| < 2^24, lsb >= 2^-149, top < 2^127
        e = [min(max(ei, -149), 127 - 24) for ei in e]
        if i % 5 == 0:  # amax in the float32 subnormal range: E clamps to -127
            e = [-149 + (ei % 8) for ei in e]
        ms.append(m)
        es.append(e)
    mt = torch.tensor(ms, dtype=torch.int64)
    et = torch.tensor(es, dtype=torch.int64)
    x = (mt.to(torch.float64) * torch.pow(2.0, et.to(torch.float64))).to(torch.float32)
    assert torch.equal(x.to(torch.float64), mt.to(torch.float64) * torch.pow(2.0, et.to(torch.float64)))
    enc = fmt_obj.encode(x)
    codes, scales = quantize_blocks(mt, et, el)
    assert torch.equal(codes, enc.codes.reshape(codes.shape).to(torch.int64))
    assert torch.equal(scales, enc.scales.reshape(scales.shape).to(torch.int64))


@pytest.mark.parametrize("fmt", FORMATS)
def test_vectorized_model_equals_scalar_model(fmt, seed):
    rng = random.Random(seed)
    el = elem(fmt)
    blocks = [random_block(rng, 8, 40, 10) for _ in range(300)]
    mt = torch.tensor([b[0] for b in blocks], dtype=torch.int64)
    et = torch.tensor([b[1] for b in blocks], dtype=torch.int64)
    codes, scales = quantize_blocks(mt, et, el)
    for i, (m, e) in enumerate(blocks):
        c, s = quantize_block(m, e, el)
        assert codes[i].tolist() == c and int(scales[i]) == s, (m, e)


# ----------------------------------------------------------------------------- RTL tests
def make_vectors(rng, fmt, block, p, mw, ew, nblocks, seed):
    el = elem(fmt)
    beats_in, beats_out = [], []
    from masec.sim.vectors import pack_lanes
    for _ in range(nblocks):
        m, e = random_block(rng, block, mw, ew)
        codes, scale = quantize_block(m, e, el)
        for b in range(0, block, p):
            beats_in.append([pack_lanes_me(m[b:b + p], e[b:b + p], mw, ew)])
            beats_out.append([pack_lanes(codes[b:b + p], el.bits), scale])
    return VectorFile({"s_x": StreamVectors(("data",), beats_in)},
                      {"m_y": StreamVectors(("data", "scale"), beats_out, {"data": (p, el.bits)})},
                      seed=seed, gap_prob=0.3, stall_prob=0.3)


RTL_CONFIGS = [  # (format, B, P, MW, EW): simulated together in one build (write_multi_top)
    ("mxint8", 32, 4, 16, 10),
    ("mxfp8_e4m3", 32, 8, 20, 10),
    ("mxfp4", 16, 16, 12, 9),
]
SLOW_CONFIGS = [
    ("mxint8", 32, 1, 24, 10), ("mxfp8_e5m2", 32, 32, 16, 10), ("mxfp6_e2m3", 8, 2, 16, 10),
    ("mxint4", 16, 4, 8, 8), ("mxfp8_e4m3", 64, 16, 30, 12), ("mxfp4", 32, 8, 16, 10),
]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    """One Verilator build per configuration set, shared by the tests of this module."""
    return tmp_path_factory.mktemp("mx_quantize_builds")


def simulate(build_root, seed, cfgs, nblocks, mutate=False, yosys=False, pipe=0):
    """Simulate ``cfgs`` together (instance i = streams s_x<i> / m_y<i>) with ``PIPE = pipe``;
    returns (result, slack)."""
    rng = random.Random(seed)
    inputs, outputs, insts, slack = {}, {}, [], 0
    for i, (f, block, p, mw, ew) in enumerate(cfgs):
        vf = make_vectors(rng, f, block, p, mw, ew, nblocks, seed)
        inputs[f"s_x{i}"], outputs[f"m_y{i}"] = vf.inputs["s_x"], vf.outputs["m_y"]
        insts.append((sv_params(p, block, mw, ew, elem(f), pipe=pipe),
                      {"s_x": (p * (mw + ew), False), "m_y": (p * elem(f).bits, True)}))
        # one beat per cycle after a latency of one block (B/P beats) plus 2 cycles plus the pipeline
        slack = max(slack, nblocks * block // p + block // p + 2 + latency(pipe))
    if mutate:
        outputs["m_y0"].beats[9][0] ^= 1 << 3
    vf = VectorFile(inputs, outputs, seed=seed, gap_prob=0.3, stall_prob=0.3)
    folder = build_root / (f"multi_pipe{pipe}_" + "_".join("-".join(map(str, c)) for c in cfgs))
    files = render_with_deps("mx_quantize", folder / "rtl")
    files.append(write_multi_top(folder / "rtl" / "tb_mx_quantize.sv", "tb_mx_quantize", "mx_quantize", insts))
    if yosys:
        files = [yosys_netlist(files, "tb_mx_quantize", folder / "yosys_netlist.v")]
        folder = folder / "yosys"
    return run_stream_test(files, "tb_mx_quantize", vf, folder / "build"), slack


def run_rtl(build_root, seed, cfgs, nblocks=48, pipe=0):
    res, slack = simulate(build_root, seed, cfgs, nblocks, pipe=pipe)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_quantize PIPE {pipe} {cfgs}: full_rate {full['cycles']} cycles (slowest instance), "
          f"ideal {full['ideal_cycles']}, ideal + one block + 2 + latency({pipe}) = {slack}")
    assert full["cycles"] <= slack   # 1 beat/cycle at every PIPE
    return res


@pytest.mark.parametrize("pipe", [0, 3])
def test_rtl_matches_model(build_root, seed, pipe):
    """int8 (P4), fp8 e4m3 (P8), fp4 (P = B = 16) quantizers in one build, gaps and backpressure,
    unpipelined and with every register stage."""
    run_rtl(build_root, seed, RTL_CONFIGS, pipe=pipe)


@pytest.mark.slow
@pytest.mark.parametrize("pipe", [1, 2])
@pytest.mark.parametrize("fmt,block,p,mw,ew", SLOW_CONFIGS)
def test_rtl_matches_model_sweep(build_root, seed, fmt, block, p, mw, ew, pipe):
    run_rtl(build_root, seed, [(fmt, block, p, mw, ew)], nblocks=200, pipe=pipe)


def test_pipe_for_clock_and_latency():
    assert [pipe_for_clock(ns) for ns in (20.0, 10.0, 8.0, 6.0, 4.0, 3.0)] == [0, 0, 1, 2, 2, 3]
    assert [latency(p) for p in range(MAX_PIPE + 1)] == [0, 2, 4, 7]
    with pytest.raises(ValueError):
        latency(MAX_PIPE + 1)


@pytest.mark.slow
def test_yosys_netlist_matches_model(build_root, seed):
    """The same configurations synthesized by native Yosys (generic cells) and simulated: Yosys
    reads the template as Verilator does (it once did not: Yosys parses -N'(x) as (-N)'(x))."""
    for pipe in (0, 2):
        res, _ = simulate(build_root, seed, RTL_CONFIGS, 24, yosys=True, pipe=pipe)
        assert res.ok, res.message


def test_rtl_check_can_fail(build_root, seed):
    """A wrong expectation (one element code of beat 9 flipped) must fail, naming the beat."""
    res, _ = simulate(build_root, seed, RTL_CONFIGS, 48, mutate=True, pipe=3)  # same build as above
    assert not res.ok
    assert "beat 9" in res.message


LINT_CONFIGS = RTL_CONFIGS + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW_CONFIGS]


@pytest.mark.parametrize("fmt,block,p,mw,ew", LINT_CONFIGS)
@pytest.mark.parametrize("pipe", [0, 3])
def test_lint_clean(tmp_path, fmt, block, p, mw, ew, pipe):
    files = render_with_deps("mx_quantize", tmp_path)
    lint(files, "mx_quantize", parameters=sv_params(p, block, mw, ew, elem(fmt), pipe=pipe))
