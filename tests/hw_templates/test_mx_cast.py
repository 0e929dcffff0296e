"""mx_cast: exact decode + shared quantizer; RTL == model == exact-rational reference, at PIPE 0 and
the pipelined depths (1 beat/cycle kept, latency grows by exactly mx_cast.latency)."""
import random
import time
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels.mx_cast import (MAX_PIPE, cast_model, cast_reference, decode_exact, instance_config,
                                             latency)
from masec.hw_templates.render import render_with_deps
from masec.passes.hw.pipeline import pipe_depth
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import VectorFile
from mx_helpers import ref_quantize_values
from mx_stream_data import exact_values, random_mx

# (in format, out format, lanes, in block, out block, row_len)
CONFIGS = [
    ("mxint8", "mxfp8_e4m3", 8, 32, 32, 0),
    ("mxfp8_e4m3", "mxfp4", 4, 32, 16, 40),
]
SLOW_CONFIGS = [
    ("mxfp4", "mxint8", 16, 32, 32, 0),
    ("mxfp8_e5m2", "mxfp8_e4m3", 2, 16, 32, 40),
    ("mxint8", "mxint4", 1, 8, 8, 0),
    ("mxfp6_e2m3", "mxfp8_e5m2", 32, 32, 32, 0),
]
ALL = CONFIGS + SLOW_CONFIGS


def _case(seed, fi_name, fo_name, lanes, bi, bo, row_len, rows=6):
    rng = random.Random(seed)
    fi, fo = parse_format(fi_name, block_size=bi), parse_format(fo_name, block_size=bo)
    nblocks = -(-row_len // bi) if row_len else 2
    codes, scales = random_mx(rng, fi.element, rows, nblocks, bi, row_len or None)
    oc, os_ = cast_model(codes, scales, fi.element, fo.element, bo, row_len or None)
    return fi, fo, codes, scales, oc, os_


def _run(tmp_path, seed, cfg, rows=6, pipe=0):
    fi_name, fo_name, lanes, bi, bo, row_len = cfg
    fi, fo, codes, scales, oc, os_ = _case(seed, *cfg, rows=rows)
    ctx, params, top = instance_config(fi, fo, lanes, row_len)
    params["PIPE"] = pipe
    files = render_with_deps("mx_cast", tmp_path / "rtl", **ctx)
    vf = VectorFile({"s_x": mx_stream(codes, scales, fi.element.bits, lanes)},
                    {"m_y": mx_stream(oc, os_, fo.element.bits, lanes)}, seed=seed)
    n_in, n_out = len(vf.inputs["s_x"].beats), len(vf.outputs["m_y"].beats)
    t0 = time.time()
    res = run_stream_test(files, top, vf, tmp_path / f"build{pipe}", parameters=params)
    assert res.ok, res.message
    full = res.run("full_rate")
    allowance = bo // lanes + 2 + latency(params)
    print(f"mx_cast {fi_name}/B{bi} -> {fo_name}/B{bo} P{lanes} row {row_len} PIPE {pipe}: full_rate {full['cycles']} "
          f"cycles for {n_in} in / {n_out} out beats (ideal {full['ideal_cycles']}, latency allowance {allowance}); "
          f"{time.time() - t0:.1f}s")
    assert full["cycles"] <= full["ideal_cycles"] + allowance
    return files, top, params, vf, full


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-P{c[2]}-B{c[3]}to{c[4]}")
def test_cast_rtl_matches_model(tmp_path, seed, cfg):
    files, top, params, vf, _ = _run(tmp_path, seed, cfg)
    if cfg is CONFIGS[0]:  # the check can fail: one wrong expected lane, same build
        from masec.sim.vectors import StreamVectors
        beats = [list(b) for b in vf.outputs["m_y"].beats]
        beats[5][0] ^= 1 << 3
        vf.outputs["m_y"] = StreamVectors(("data", "scale"), beats, vf.outputs["m_y"].lanes)
        res = run_stream_test(files, top, vf, tmp_path / "build0", parameters=params)
        assert not res.ok and "beat 5" in res.message


@pytest.mark.parametrize("pipes", [(0, 1), (0, MAX_PIPE)], ids=lambda p: f"PIPE{p[1]}")
def test_cast_pipelined_rtl_matches_model_with_exact_added_latency(tmp_path, seed, pipes):
    """Bit-exact under gaps and backpressure at PIPE 1 and MAX_PIPE (with the block-size change and
    row re-padding); at full rate the run takes exactly latency(PIPE) cycles more than at PIPE 0."""
    cfg = CONFIGS[1]
    cycles = {p: _run(tmp_path, seed, cfg, pipe=p)[4]["cycles"] for p in pipes}
    print(f"mx_cast full-rate cycles by PIPE: {cycles}")
    assert cycles[pipes[1]] - cycles[0] == latency({"PIPE": pipes[1]})


def test_cast_latency_and_pipe_rule():
    assert [latency({"PIPE": p}) for p in range(MAX_PIPE + 1)] == [0, 3, 4, 7]
    assert [pipe_depth("mx_cast", ns) for ns in (10.0, 7.0, 4.0, 3.0, 2.0)] == [0, 1, 2, 3, 3]


@pytest.mark.slow
@pytest.mark.parametrize("cfg", SLOW_CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-P{c[2]}-B{c[3]}to{c[4]}")
@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_cast_rtl_sweep(tmp_path, seed, cfg, pipe):
    _run(tmp_path, seed, cfg, rows=16, pipe=pipe)


@pytest.mark.parametrize("cfg", ALL, ids=lambda c: f"{c[0]}-{c[1]}-P{c[2]}-B{c[3]}to{c[4]}")
@pytest.mark.parametrize("pipe", [0, 1, MAX_PIPE])
def test_cast_lints_clean(tmp_path, cfg, pipe):
    fi_name, fo_name, lanes, bi, bo, row_len = cfg
    ctx, params, top = instance_config(parse_format(fi_name, block_size=bi), parse_format(fo_name, block_size=bo),
                                       lanes, row_len)
    lint(render_with_deps("mx_cast", tmp_path, **ctx), top, parameters={**params, "PIPE": pipe})


@pytest.mark.parametrize("cfg", ALL, ids=lambda c: f"{c[0]}-{c[1]}-P{c[2]}-B{c[3]}to{c[4]}")
def test_cast_model_equals_exact_rational_reference(seed, cfg):
    """Model vs an independent reference: Fraction decode, exact nearest-grid MX quantization."""
    fi, fo, codes, scales, oc, os_ = _case(seed, *cfg, rows=8)
    row_len = cfg[5] or codes.shape[-2] * codes.shape[-1]
    bo = cfg[4]
    vals = exact_values(codes, scales, fi.element)
    rows = [sum(vals[r * codes.shape[-2]:(r + 1) * codes.shape[-2]], []) for r in range(codes.shape[0])]
    lout = -(-row_len // bo) * bo
    for r, row in enumerate(rows):
        row = (row[:row_len] + [Fraction(0)] * lout)[:lout]
        for b in range(lout // bo):
            ref_codes, ref_scale = ref_quantize_values(row[b * bo:(b + 1) * bo], fo.element)
            assert oc[r, b].tolist() == ref_codes, f"row {r} block {b}"
            assert int(os_[r, b]) == ref_scale, f"row {r} block {b} scale"


def test_cast_model_equals_formats_encode_in_float_range(seed):
    """Where float64 holds every value exactly, the model equals masec.formats decode -> encode."""
    rng = random.Random(seed)
    for fi_name, fo_name in [("mxint8", "mxfp8_e4m3"), ("mxfp8_e4m3", "mxfp4"), ("mxfp4", "mxint8"),
                             ("mxfp8_e5m2", "mxfp8_e4m3")]:
        fi, fo = parse_format(fi_name), parse_format(fo_name)
        codes, scales = random_mx(rng, fi.element, 8, 3, 32, scale_range=(100, 154))
        oc, os_ = cast_model(codes, scales, fi.element, fo.element, 32)
        rc, rs = cast_reference(codes, scales, fi.element, fo.element, 32)
        assert torch.equal(os_, rs), (fi_name, fo_name)
        assert torch.equal(oc, rc), (fi_name, fo_name)


def test_decode_exact_is_exact(seed):
    rng = random.Random(seed)
    for name in ("mxint8", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp4", "mxint4"):
        el = parse_format(name).element
        codes, scales = random_mx(rng, el, 4, 2, 32)
        m, e = decode_exact(codes, scales, el)
        vals = exact_values(codes, scales, el)
        flat_m, flat_e = m.reshape(-1, 32).tolist(), e.reshape(-1, 32).tolist()
        for blk_v, blk_m, blk_e in zip(vals, flat_m, flat_e):
            for v, mi, ei in zip(blk_v, blk_m, blk_e):
                assert v == mi * Fraction(2) ** ei


def test_cast_config_rejects_bad_lanes():
    with pytest.raises(ValueError):
        instance_config("mxint8", "mxfp4", 3)
    with pytest.raises(ValueError):
        instance_config(parse_format("mxint8", block_size=32), parse_format("mxfp4", block_size=16), 4)
