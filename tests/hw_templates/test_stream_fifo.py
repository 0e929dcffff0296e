import random

import pytest

from masec.hw_templates.render import render_with_deps
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_fifo_passes_beats_in_order_under_backpressure(tmp_path, seed, depth):
    rng = random.Random(seed)
    width = 12
    beats = [[rng.randrange(1 << width)] for _ in range(200)]
    files = render_with_deps("stream_fifo", tmp_path / "rtl")
    vf = VectorFile({"s_x": StreamVectors(("data",), beats)}, {"m_y": StreamVectors(("data",), beats)}, seed=seed)
    res = run_stream_test(files, "stream_fifo", vf, tmp_path / "build", parameters={"WIDTH": width, "DEPTH": depth})
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"fifo depth {depth}: {full['cycles']} cycles for {full['output_beats']} beats (ideal {full['ideal_cycles']})")
    if depth >= 2:
        assert full["cycles"] <= full["ideal_cycles"] + 2


def test_fifo_check_can_fail(tmp_path, seed):
    """A wrong expected value must make the testbench fail, naming the beat."""
    beats = [[i] for i in range(20)]
    wrong = [list(b) for b in beats]
    wrong[7] = [99]
    files = render_with_deps("stream_fifo", tmp_path / "rtl")
    vf = VectorFile({"s_x": StreamVectors(("data",), beats)}, {"m_y": StreamVectors(("data",), wrong)}, seed=seed)
    res = run_stream_test(files, "stream_fifo", vf, tmp_path / "build", parameters={"WIDTH": 8, "DEPTH": 2})
    assert not res.ok
    assert "beat 7" in res.message


def test_fifo_lints_clean(tmp_path):
    files = render_with_deps("stream_fifo", tmp_path)
    lint(files, "stream_fifo")
