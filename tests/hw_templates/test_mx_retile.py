"""mx_retile: lanes per beat change, stream order and scales preserved, under gaps and backpressure."""
import random
import time

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels.mx_retile import instance_config, retile_beats, retile_model
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_from_beats, mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile
from mx_stream_data import random_mx

# (format, block, lanes_in, lanes_out)
CONFIGS = [("mxfp4", 32, 2, 8)]
SLOW_CONFIGS = [("mxint8", 32, 16, 4), ("mxfp8_e4m3", 32, 8, 8), ("mxfp8_e4m3", 32, 1, 32), ("mxint8", 16, 16, 1), ("mxfp4", 32, 4, 8)]


def _run(tmp_path, seed, cfg, rows=8, check_fail=False):
    fmt_name, block, pin, pout = cfg
    rng = random.Random(seed)
    el = parse_format(fmt_name, block_size=block).element
    codes, scales = random_mx(rng, el, rows, 2, block)
    ctx, params, top = instance_config(el.bits, block, pin, pout)
    files = render_with_deps("mx_retile", tmp_path / "rtl", **ctx)
    s_in = mx_stream(codes, scales, el.bits, pin)
    oc, os_ = retile_model(codes, scales)
    s_out = mx_stream(oc, os_, el.bits, pout)
    assert s_out.beats == retile_beats(s_in.beats, el.bits, pin, pout)  # beat model == tensor model
    vf = VectorFile({"s_x": s_in}, {"m_y": s_out}, seed=seed)
    t0 = time.time()
    res = run_stream_test(files, top, vf, tmp_path / "build", parameters=params)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_retile {fmt_name} B{block} P{pin}->P{pout}: full_rate {full['cycles']} cycles for "
          f"{len(s_in.beats)} in / {len(s_out.beats)} out beats (ideal {full['ideal_cycles']}); {time.time() - t0:.1f}s")
    assert full["cycles"] <= full["ideal_cycles"] + 2  # 1 beat/cycle on the wider-count side, latency <= 1
    if check_fail:
        beats = [list(b) for b in s_out.beats]
        beats[-1][1] ^= 1  # wrong scale on the last beat
        vf.outputs["m_y"] = StreamVectors(("data", "scale"), beats, s_out.lanes)
        res = run_stream_test(files, top, vf, tmp_path / "build", parameters=params)
        assert not res.ok and f"beat {len(beats) - 1}" in res.message


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}-B{c[1]}-P{c[2]}to{c[3]}")
def test_retile_rtl(tmp_path, seed, cfg):
    _run(tmp_path, seed, cfg, check_fail=cfg is CONFIGS[0])


@pytest.mark.slow
@pytest.mark.parametrize("cfg", SLOW_CONFIGS, ids=lambda c: f"{c[0]}-B{c[1]}-P{c[2]}to{c[3]}")
def test_retile_rtl_sweep(tmp_path, seed, cfg):
    _run(tmp_path, seed, cfg, rows=24)


@pytest.mark.parametrize("cfg", CONFIGS + SLOW_CONFIGS, ids=lambda c: f"{c[0]}-B{c[1]}-P{c[2]}to{c[3]}")
def test_retile_lints_clean(tmp_path, cfg):
    fmt_name, block, pin, pout = cfg
    ctx, params, top = instance_config(parse_format(fmt_name).element.bits, block, pin, pout)
    lint(render_with_deps("mx_retile", tmp_path, **ctx), top, parameters=params)


def test_retile_beats_roundtrip(seed):
    rng = random.Random(seed)
    el = parse_format("mxfp8_e4m3").element
    codes, scales = random_mx(rng, el, 3, 2, 32)
    for pin, pout in [(1, 32), (32, 1), (4, 16), (16, 4), (8, 8)]:
        beats = retile_beats(mx_stream(codes, scales, 8, pin).beats, 8, pin, pout)
        c, s = mx_from_beats(beats, 8, pout, 32, lead_shape=(3,))
        assert torch.equal(c, codes) and torch.equal(s, scales)


def test_retile_config_rejects_bad_lanes():
    with pytest.raises(ValueError):
        instance_config(8, 32, 3, 6)
    with pytest.raises(ValueError):
        instance_config(8, 32, 2, 64)
