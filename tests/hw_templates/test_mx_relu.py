"""mx_relu: bit-exact model vs float ReLU, RTL vs model under gaps/backpressure, lint, Yosys."""

import pytest
import torch

from masec.hw_templates.kernels.mx_relu import (instance_config, relu_model, relu_model_m2xfp, relu_reference,
                                                 resolve_format, stress_mx)
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import VectorFile

FORMATS = ["mxint8", "mxfp8_e4m3", "mxfp4", "mxint4", "mxfp8_e5m2", "mxfp6_e2m3"]


@pytest.fixture(scope="module")
def build_cache(tmp_path_factory):
    """One rendered source set + build folder per SV parameter set, shared by the tests of this module."""
    cache = {}

    def get(params):
        key = tuple(sorted(params.items()))
        if key not in cache:
            d = tmp_path_factory.mktemp("mx_relu_" + "_".join(f"{k}{v}" for k, v in key))
            cache[key] = (render_with_deps("mx_relu", d / "rtl"), d / "build")
        return cache[key]
    return get


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_relu_model_equals_float_relu_on_every_code(fmt_name):
    """decode(relu_model(c, s)) == max(decode(c, s), 0) bit for bit, every finite code, scale extremes."""
    fmt = resolve_format(fmt_name, 32)
    el = fmt.element
    codes = el.all_codes()
    codes = codes[torch.isfinite(el.decode_codes(codes))]
    n = len(codes)
    pad = (-n) % 32
    codes = torch.cat([codes, torch.zeros(pad, dtype=torch.int64)]).reshape(-1, 32)
    for s in (0, 1, 100, 127, 200, 253, 254):
        scales = torch.full((codes.shape[0],), s, dtype=torch.int64)
        rc, rs = relu_model(codes, scales, el)
        got = fmt.decode_codes(rc, rs)
        want = relu_reference(fmt.decode_codes(codes, scales))
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (fmt_name, s)
        assert torch.equal(rs, scales)
        assert int(((rc >> (el.bits - 1)) & 1).sum()) == 0  # no sign bit left (-0 -> +0)


def test_relu_model_keeps_nan_blocks():
    fmt = resolve_format("mxfp8_e4m3", 32)
    codes = torch.randint(0, 256, (2, 32))
    scales = torch.tensor([255, 3])
    rc, rs = relu_model(codes, scales, fmt.element)
    assert torch.isnan(fmt.decode_codes(rc, rs)[0]).all()


# RTL configurations: (format, block size, lanes, REG). One build per (P, W, REG).
# The default cases share one build (W = 8); the sweep adds fp4/int4 (W = 4), REG = 0 and more lanes.
RTL_CASES = [
    ("mxint8", 32, 4, 1),
    ("mxfp8_e4m3", 32, 4, 1),
]
SLOW_CASES = [
    ("mxfp4", 16, 8, 0), ("mxint4", 16, 8, 0),
    ("mxfp8_e5m2", 32, 1, 1), ("mxint8", 32, 32, 0), ("mxfp6_e2m3", 32, 8, 1),
    ("mxfp4", 32, 32, 1), ("mxint8", 8, 2, 0),
]


def _relu_vectors(fmt, lanes, seed, nblocks=24):
    gen = torch.Generator().manual_seed(seed)
    codes, scales = stress_mx(fmt.element, nblocks, fmt.block_size, gen)
    out_c, out_s = relu_model(codes, scales, fmt.element)
    w = fmt.element.bits
    return VectorFile({"s_x": mx_stream(codes, scales, w, lanes)}, {"m_y": mx_stream(out_c, out_s, w, lanes)},
                      seed=seed)


def _run_rtl(build_cache, fmt_name, block, lanes, reg, seed):
    fmt = resolve_format(fmt_name, block)
    _, params, top = instance_config((4, 2 * block), fmt, lanes, registered=bool(reg))
    files, build_dir = build_cache(params)
    vf = _relu_vectors(fmt, lanes, seed)
    res = run_stream_test(files, top, vf, build_dir, parameters=params)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_relu {fmt_name} B{block} P{lanes} REG{reg}: full_rate {full['cycles']} cycles, "
          f"ideal {full['ideal_cycles']} ({full['output_beats']} beats)")
    # steady state 1 beat/cycle: only the REG-cycle latency on top of the ideal
    assert full["cycles"] <= full["ideal_cycles"] + reg
    return res


@pytest.mark.parametrize("fmt_name,block,lanes,reg", RTL_CASES)
def test_relu_rtl_matches_model(build_cache, seed, fmt_name, block, lanes, reg):
    _run_rtl(build_cache, fmt_name, block, lanes, reg, seed)


@pytest.mark.slow
@pytest.mark.parametrize("fmt_name,block,lanes,reg", SLOW_CASES)
def test_relu_rtl_matches_model_sweep(build_cache, seed, fmt_name, block, lanes, reg):
    _run_rtl(build_cache, fmt_name, block, lanes, reg, seed)


def test_relu_rtl_check_can_fail(build_cache, seed):
    """A wrong expected beat must fail the testbench."""
    fmt = resolve_format("mxint8", 32)
    _, params, top = instance_config((1, 32), fmt, 4)
    files, build_dir = build_cache(params)
    vf = _relu_vectors(fmt, 4, seed, nblocks=4)
    beats = vf.outputs["m_y"].beats
    beats[5] = [beats[5][0] ^ 0x3, beats[5][1]]
    res = run_stream_test(files, top, vf, build_dir, parameters=params)
    assert not res.ok
    assert "beat 5" in res.message


@pytest.mark.parametrize("params", [{"P": 4, "W": 8, "REG": 1}, {"P": 8, "W": 4, "REG": 0},
                                    {"P": 1, "W": 6, "REG": 1}])
def test_relu_lints_clean(tmp_path, params):
    files = render_with_deps("mx_relu", tmp_path)
    lint(files, "mx_relu")
    lint(files, "mx_relu", parameters=params)


@pytest.mark.slow
def test_relu_yosys_synth(tmp_path):
    from pyosys import libyosys as ys

    files = render_with_deps("mx_relu", tmp_path)
    d = ys.Design()
    ys.run_pass(f"read_verilog -sv {files[-1]}", d)
    ys.run_pass("chparam -set P 8 mx_relu", d)
    ys.run_pass("synth_xilinx -top mx_relu -flatten", d)
    ys.run_pass(f"tee -q -o {tmp_path / 'stat.txt'} stat", d)
    stat = (tmp_path / "stat.txt").read_text()
    print(stat)
    assert "FDRE" in stat or "FDCE" in stat


# ----------------------------------------------------------------------------- seed activation streams
def _seed_inputs():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(6, 128, generator=g) * torch.logspace(-8, 8, 6).unsqueeze(-1)
    x[1, :64] = -x[1, :64].abs()                     # all-negative groups
    x[2, 8:16] = torch.tensor([-4.5, 4.0, 0.0, 1.0, -4.0, 2.0, 0.0, 0.0])   # negative top-1 tied with a positive
    x[3, 16:24] = torch.tensor([-0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.0]) * 2.0 ** -3   # refined zero top-1
    x[3, 24:32] = -0.03                               # refined negative zeros only
    return x


@pytest.mark.parametrize("name", ["nvfp4", "anda4", "anda11"])
def test_relu_is_exact_on_nvfp4_and_anda(name):
    """NVFP4 and Anda: clearing the sign-set codes under the same block scale gives exactly relu of
    the format library's decoded values (the library's own tensor scale for NVFP4)."""
    from masec.formats import parse_format
    from masec.hw_templates.kernels.mx_quantize import output_format_params

    f = parse_format(name)
    enc = f.encode(_seed_inputs())
    el = output_format_params(f)[1]
    rc, rs = relu_model(enc.codes, enc.scales, el)
    import dataclasses
    out = dataclasses.replace(enc, codes=rc.to(enc.codes.dtype), scales=rs.to(enc.scales.dtype))
    assert torch.equal(f.decode(out), relu_reference(f.decode(enc)))


def test_relu_m2xfp_is_exact_and_needs_the_metadata_fix():
    """M2XFP activations: relu_model_m2xfp (negative codes cleared, metadata 1 where the top-1 lane was
    negative) decodes to exactly relu of the library's values; clearing the codes alone does not (the
    metadata would then refine another lane)."""
    import dataclasses

    from masec.formats import parse_format

    f = parse_format("m2xfp4_a")
    enc = f.encode(_seed_inputs())
    want = relu_reference(f.decode(enc))
    rc, rs, rm = relu_model_m2xfp(enc.codes, enc.scales, enc.meta["subgroup_meta"])
    out = dataclasses.replace(enc, codes=rc.to(enc.codes.dtype), scales=rs.to(enc.scales.dtype),
                              meta={"subgroup_meta": rm.to(enc.meta["subgroup_meta"].dtype)})
    assert torch.equal(f.decode(out), want)
    naive = dataclasses.replace(enc, codes=rc.to(enc.codes.dtype))
    try:
        assert not torch.equal(f.decode(naive), want)
    except Exception as exc:   # the library refuses metadata 0 on a zero top-1: also not relu
        assert "metadata" in str(exc)


def _m2xfp_relu_vectors(seed, lanes, nblocks=24):
    import random

    rng = random.Random(seed)
    B = 32
    codes = torch.zeros(nblocks, B, dtype=torch.int64)
    meta = torch.zeros(nblocks, B // 8, dtype=torch.int64)
    for b in range(nblocks):
        for gi in range(B // 8):
            k = rng.random()
            if k < 0.3:    # ties for the top-1 with mixed signs
                top = rng.randrange(8)
                sg = [rng.choice([top, rng.randrange(top + 1)]) | (rng.randrange(2) << 3) for _ in range(8)]
            elif k < 0.4:
                sg = [8 * rng.randrange(2) for _ in range(8)]
            else:
                sg = [rng.randrange(16) for _ in range(8)]
            codes[b, gi * 8:(gi + 1) * 8] = torch.tensor(sg)
            meta[b, gi] = rng.randrange(4)
    scales = torch.tensor([rng.choice([0, 1, 127, 254, rng.randrange(255)]) for _ in range(nblocks)])
    rc, rs, rm = relu_model_m2xfp(codes, scales, meta)

    def stream(c, s, m):
        from masec.sim.vectors import StreamVectors, pack_lanes
        beats = []
        for blk, sc, mt in zip(c.tolist(), s.tolist(), m.tolist()):
            for i in range(0, B, lanes):
                beats.append([pack_lanes(blk[i:i + lanes], 4) | (pack_lanes(mt[i // 8:(i + lanes) // 8], 2) << (4 * lanes)),
                              int(sc)])
        return StreamVectors(("data", "scale"), beats)
    return VectorFile({"s_x": stream(codes, scales, meta)}, {"m_y": stream(rc, rs, rm)}, seed=seed)


@pytest.mark.parametrize("lanes,reg", [(16, 1), (8, 0)])
def test_relu_m2xfp_rtl_matches_model(build_cache, seed, lanes, reg):
    """M2X = 1: codes and metadata (negative top-1 lanes, ties, every metadata value) vs
    relu_model_m2xfp under random gaps and backpressure, then full rate."""
    from masec.formats import parse_format

    _, params, top = instance_config((4, 64), parse_format("m2xfp4_a"), lanes, registered=bool(reg))
    files, build_dir = build_cache(params)
    res = run_stream_test(files, top, _m2xfp_relu_vectors(seed, lanes), build_dir, parameters=params)
    assert res.ok, res.message
    full = res.run("full_rate")
    assert full["cycles"] <= full["ideal_cycles"] + reg


def test_relu_m2xfp_rtl_check_can_fail(build_cache, seed):
    """The RTL against the naive relu (codes cleared, metadata left alone) fails: the first beat's
    subgroup 0 is set to [-6, 4, 4, 4, 4, 4, 4, 4] with metadata 3, whose right output has metadata 1."""
    from masec.formats import parse_format

    _, params, top = instance_config((4, 64), parse_format("m2xfp4_a"), 16)
    files, build_dir = build_cache(params)
    vf = _m2xfp_relu_vectors(seed, 16)
    sub0 = 0xF | sum(0x6 << (4 * l) for l in range(1, 8))     # lanes 0..7 of the beat, 4 bits each
    keep = ~((1 << 32) - 1) & ~(3 << 64)                     # everything but subgroup 0's codes and metadata
    x0, y0 = vf.inputs["s_x"].beats[0], vf.outputs["m_y"].beats[0]
    vf.inputs["s_x"].beats[0] = [(x0[0] & keep) | sub0 | (3 << 64), x0[1]]
    vf.outputs["m_y"].beats[0] = [(y0[0] & keep) | (sub0 & ~0xF) | (3 << 64), y0[1]]   # naive: metadata 3 kept
    res = run_stream_test(files, top, vf, build_dir, parameters=params)
    assert not res.ok and "beat 0" in res.message


@pytest.mark.parametrize("params", [{"P": 16, "W": 4, "REG": 1, "M2X": 1}, {"P": 8, "W": 4, "REG": 0, "M2X": 1}])
def test_relu_m2xfp_lints_clean(tmp_path, params):
    files = render_with_deps("mx_relu", tmp_path)
    lint(files, "mx_relu", parameters=params)
