"""stream_fork: every input beat reaches every output exactly once, under independent backpressure."""
import random
import time

import pytest

from masec.hw_templates.kernels import stream_fork
from masec.hw_templates.render import render_template, render_with_deps
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile

CONFIGS = [  # (n_outputs, mx, data_w)
    (3, True, 32),
    (2, False, 12),
]
SLOW_CONFIGS = [(1, True, 8), (2, True, 256), (4, False, 5)]


def _build_files(folder, n, mx, data_w):
    ctx, params, name = stream_fork.instance_config(n, data_w, mx)
    spec = stream_fork.SPEC
    path = render_template(spec.template, name, **ctx).write(_mkdir(folder))
    return [path], params, name


def _mkdir(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


def _vectors(rng, n, mx, data_w, count, seed):
    if mx:
        beats = [[rng.randrange(1 << data_w), rng.randrange(256)] for _ in range(count)]
        fields = ("data", "scale")
    else:
        beats = [[rng.randrange(1 << data_w)] for _ in range(count)]
        fields = ("data",)
    outs = stream_fork.model(beats, n)
    return VectorFile({"s_x": StreamVectors(fields, beats)},
                      {f"m_y{i}": StreamVectors(fields, outs[i]) for i in range(n)}, seed=seed)


def _run(tmp_path, seed, n, mx, data_w, count=200):
    rng = random.Random(seed)
    files, params, name = _build_files(tmp_path / "rtl", n, mx, data_w)
    vf = _vectors(rng, n, mx, data_w, count, seed)
    t0 = time.time()
    res = run_stream_test(files, name, vf, tmp_path / "build", parameters=params)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"stream_fork n={n} mx={mx} W={data_w}: full_rate {full['cycles']} cycles for "
          f"{full['output_beats']} beats (ideal {full['ideal_cycles']}); {time.time() - t0:.1f}s")
    # one beat per cycle; the first beat leaves in the cycle it enters (combinational forward path)
    assert full["cycles"] <= full["ideal_cycles"] + 1
    return files, params, name, vf


@pytest.mark.slow
@pytest.mark.parametrize("n,mx,data_w", CONFIGS[1:])
def test_fork_delivers_every_beat_to_every_output(tmp_path, seed, n, mx, data_w):
    _run(tmp_path, seed, n, mx, data_w)


@pytest.mark.slow
@pytest.mark.parametrize("n,mx,data_w", SLOW_CONFIGS)
def test_fork_sweep(tmp_path, seed, n, mx, data_w):
    _run(tmp_path, seed, n, mx, data_w, count=1000)


@pytest.mark.parametrize("n,mx,data_w", CONFIGS[:1])
def test_fork_check_can_fail(tmp_path, seed, n, mx, data_w):
    """After a passing run, a wrong expectation on one output (same build) must fail and name the beat."""
    files, params, name, vf = _run(tmp_path, seed, n, mx, data_w, count=60)
    wrong = [list(b) for b in vf.outputs["m_y1"].beats]
    wrong[13][0] ^= 1
    vf.outputs["m_y1"] = StreamVectors(vf.outputs["m_y1"].fields, wrong)
    t0 = time.time()
    res = run_stream_test(files, name, vf, tmp_path / "build", parameters=params)
    print(f"rerun in the same build dir: {time.time() - t0:.1f}s")
    assert not res.ok
    assert "m_y1" in res.message and "beat 13" in res.message


@pytest.mark.parametrize("n,mx,data_w", CONFIGS + SLOW_CONFIGS)
def test_fork_lints_clean(tmp_path, n, mx, data_w):
    files, params, name = _build_files(tmp_path, n, mx, data_w)
    lint(files, name)


def test_fork_default_render_lints(tmp_path):
    files = render_with_deps("stream_fork", tmp_path)
    lint(files, "stream_fork")


def test_fork_model_and_config():
    beats = [[1, 2], [3, 4]]
    outs = stream_fork.model(beats, 3)
    assert outs == [beats, beats, beats]
    ctx, params, name = stream_fork.instance_config(3, 64, mx=True)
    assert ctx == {"n_outputs": 3, "mx": True} and params == {"DATA_W": 64, "SCALE_W": 8}
    assert name == "stream_fork_n3_mx"
    with pytest.raises(ValueError):
        stream_fork.instance_config(0, 8)
