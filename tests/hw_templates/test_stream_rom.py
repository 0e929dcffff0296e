"""stream_rom: a free-running constant source. The RTL is checked inside a small join (the way an
element-wise kernel consumes it: one ROM beat per beat of another stream) under random input gaps
and output backpressure, over several tensors (the ROM wraps); lint clean; the model is the
encoded constant's beats, repeated."""
import random

import pytest
import torch

from masec.hw_templates.kernels import stream_rom as R
from masec.hw_templates.render import render_with_deps
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile

# The consumer of the test: beat i of s_x is joined with the ROM's next beat; m_y carries the pair.
JOIN_SV = """
module rom_join #(
  parameter int unsigned WIDTH = 8,
  parameter int unsigned DEPTH = 1,
  parameter              MEM_FILE = ""
) (
  input  logic               clk_i,
  input  logic               rst_ni,
  input  logic               s_x_valid_i,
  output logic               s_x_ready_o,
  input  logic [7:0]         s_x_data_i,
  output logic               m_y_valid_o,
  input  logic               m_y_ready_i,
  output logic [WIDTH+7:0]   m_y_data_o
);
  logic             r_valid, r_ready;
  logic [WIDTH-1:0] r_data;
  stream_rom #(.WIDTH(WIDTH), .DEPTH(DEPTH), .MEM_FILE(MEM_FILE)) u_rom (
    .clk_i(clk_i), .rst_ni(rst_ni), .m_y_valid_o(r_valid), .m_y_ready_i(r_ready), .m_y_data_o(r_data));
  assign m_y_valid_o = s_x_valid_i && r_valid;
  assign m_y_data_o  = {r_data, s_x_data_i};
  assign s_x_ready_o = m_y_ready_i && r_valid;
  assign r_ready     = m_y_ready_i && s_x_valid_i;
endmodule
"""


def _run(tmp_path, seed, width, depth, tensors, gap=0.3, stall=0.3):
    rng = random.Random(seed)
    words = [rng.randrange(1 << width) for _ in range(depth)]
    build = tmp_path / "build"
    build.mkdir(parents=True, exist_ok=True)
    (build / "rom.mem").write_text(R.rom_mem_text(words, width))   # $readmemh resolves against the run folder
    files = render_with_deps("stream_rom", tmp_path / "rtl")
    join = tmp_path / "rtl" / "rom_join.sv"
    join.write_text(JOIN_SV)
    n = depth * tensors
    tags = [[i & 0xFF] for i in range(n)]
    expect = [[(w << 8) | t[0]] for w, t in zip(R.model(words, n), tags)]
    vf = VectorFile({"s_x": StreamVectors(("data",), tags)}, {"m_y": StreamVectors(("data",), expect)},
                    seed=seed, gap_prob=gap, stall_prob=stall)
    res = run_stream_test([*files, join], "rom_join", vf, build,
                          parameters={"WIDTH": width, "DEPTH": depth, "MEM_FILE": "rom.mem"})
    return res


@pytest.mark.parametrize("width,depth,tensors", [(40, 1, 20), (40, 2, 9), (72, 7, 5), (264, 16, 4), (12, 64, 3)])
def test_rom_streams_the_constant_every_inference_under_backpressure(tmp_path, seed, width, depth, tensors):
    res = _run(tmp_path, seed, width, depth, tensors)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"stream_rom W{width} D{depth} x{tensors}: {full['cycles']} cycles for {full['output_beats']} beats")
    assert full["cycles"] <= full["output_beats"] + 3     # 1 beat/cycle, also across the wrap


def test_rom_check_can_fail(tmp_path, seed):
    """A wrong ROM image must make the join's output differ (the test is not vacuous)."""
    width, depth = 16, 4
    words = [0x1111, 0x2222, 0x3333, 0x4444]
    build = tmp_path / "build"
    build.mkdir(parents=True)
    (build / "rom.mem").write_text(R.rom_mem_text([0x1111, 0x2222, 0x3334, 0x4444], width))
    files = render_with_deps("stream_rom", tmp_path / "rtl")
    join = tmp_path / "rtl" / "rom_join.sv"
    join.write_text(JOIN_SV)
    tags = [[i] for i in range(8)]
    expect = [[(w << 8) | t[0]] for w, t in zip(R.model(words, 8), tags)]
    vf = VectorFile({"s_x": StreamVectors(("data",), tags)}, {"m_y": StreamVectors(("data",), expect)}, seed=seed)
    res = run_stream_test([*files, join], "rom_join", vf, build,
                          parameters={"WIDTH": width, "DEPTH": depth, "MEM_FILE": "rom.mem"})
    assert not res.ok and "beat 2" in res.message


def test_model_and_packing():
    assert R.model([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
    assert R.model([5]) == [5]
    codes = torch.arange(16).reshape(1, 2, 8) % 16       # 1 row, 2 blocks of 8, 4-bit codes
    scales = torch.tensor([[120, 130]])
    words = R.beat_words(codes, scales, 4, 4)
    assert len(words) == 4                                  # 2 blocks x 8 / 4 lanes
    assert words[0] == (120 << 16) | 0x3210 and words[3] == (130 << 16) | 0xFEDC
    assert R.rom_mem_text(words, 24).splitlines()[0] == "783210"
    assert R.instance_config(24, 4, "c.mem") == ({}, {"WIDTH": 24, "DEPTH": 4, "MEM_FILE": "c.mem"}, "stream_rom")
    with pytest.raises(ValueError):
        R.instance_config(24, 0)


@pytest.mark.parametrize("width,depth", [(8, 1), (40, 2), (264, 64), (72, 1000)])
def test_rom_lints_clean(tmp_path, width, depth):
    files = render_with_deps("stream_rom", tmp_path)
    lint(files, "stream_rom", parameters={"WIDTH": width, "DEPTH": depth, "MEM_FILE": "rom.mem"})
