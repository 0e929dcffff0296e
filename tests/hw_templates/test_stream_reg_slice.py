"""stream_reg_slice: identity on the beat sequence, full throughput, under gaps and backpressure."""
import random
import time

import pytest

from masec.hw_templates.kernels import stream_reg_slice
from masec.hw_templates.render import render_template, render_with_deps
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile

CONFIGS = [(True, 24)]                   # (mx, data_w)
SLOW_CONFIGS = [(False, 1), (True, 256)]


def _files(folder, mx, data_w):
    ctx, params, name = stream_reg_slice.instance_config(data_w, mx)
    folder.mkdir(parents=True, exist_ok=True)
    return [render_template(stream_reg_slice.SPEC.template, name, **ctx).write(folder)], params, name


def _run(tmp_path, seed, mx, data_w, count):
    rng = random.Random(seed)
    files, params, name = _files(tmp_path / "rtl", mx, data_w)
    if mx:
        beats, fields = [[rng.randrange(1 << data_w), rng.randrange(256)] for _ in range(count)], ("data", "scale")
    else:
        beats, fields = [[rng.randrange(1 << data_w)] for _ in range(count)], ("data",)
    vf = VectorFile({"s_x": StreamVectors(fields, beats)},
                    {"m_y": StreamVectors(fields, stream_reg_slice.model(beats))}, seed=seed)
    t0 = time.time()
    res = run_stream_test(files, name, vf, tmp_path / "build", parameters=params)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"stream_reg_slice mx={mx} W={data_w}: full_rate {full['cycles']} cycles for {full['output_beats']} "
          f"beats (ideal {full['ideal_cycles']}); {time.time() - t0:.1f}s")
    assert full["cycles"] <= full["ideal_cycles"] + 1  # 1 cycle of latency, then 1 beat/cycle
    return files, params, name, vf


@pytest.mark.parametrize("mx,data_w", CONFIGS)
def test_reg_slice_passes_beats_and_check_can_fail(tmp_path, seed, mx, data_w):
    files, params, name, vf = _run(tmp_path, seed, mx, data_w, 300)
    # same build, one wrong expected beat: the run must fail and name it
    wrong = [list(b) for b in vf.outputs["m_y"].beats]
    wrong[101][-1] ^= 0x10
    vf.outputs["m_y"] = StreamVectors(vf.outputs["m_y"].fields, wrong)
    res = run_stream_test(files, name, vf, tmp_path / "build", parameters=params)
    assert not res.ok
    assert "beat 101" in res.message


@pytest.mark.slow
@pytest.mark.parametrize("mx,data_w", SLOW_CONFIGS)
def test_reg_slice_sweep(tmp_path, seed, mx, data_w):
    _run(tmp_path, seed, mx, data_w, 1000)


@pytest.mark.parametrize("mx,data_w", CONFIGS + SLOW_CONFIGS)
def test_reg_slice_lints_clean(tmp_path, mx, data_w):
    files, _, name = _files(tmp_path, mx, data_w)
    lint(files, name)


def test_reg_slice_default_render_lints(tmp_path):
    lint(render_with_deps("stream_reg_slice", tmp_path), "stream_reg_slice")


def test_reg_slice_config():
    assert stream_reg_slice.instance_config(64) == ({"mx": True}, {"DATA_W": 64, "SCALE_W": 8}, "stream_reg_slice_mx")
    assert stream_reg_slice.instance_config(9, mx=False) == ({"mx": False}, {"DATA_W": 9}, "stream_reg_slice_plain")
    with pytest.raises(ValueError):
        stream_reg_slice.instance_config(0)
