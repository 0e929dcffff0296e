"""End to end: compile, simulate bit-exactly under backpressure, determinism, lint, failure detection."""
import filecmp
import json
from pathlib import Path

import pytest

from masec.backend import compile_model, frontend
from masec.cli import main
from masec.config import CompileConfig
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.transform.assign_formats import assign_formats
from masec.passes.transform.select_kernels import select_kernels
from masec.sim.runner import lint
from masec.sim.vectors import VectorFile
from masec.simulate import simulate

ROOT = Path(__file__).parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"
FANOUT = Path(__file__).parent / "models" / "relu_fanout.py"


def compile_to(model, out, **kw):
    return compile_model(CompileConfig(model_file=str(model), out=str(out), **kw))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_sim_passes(out, seed):
    s = simulate(out, seed=seed)
    res = s.result
    assert res.ok, res.message
    full = res.run("full_rate")
    rnd = res.run("random_flow")
    print(f"{out.name}: seed {seed}; random_flow {rnd['cycles']} cycles; full_rate {full['cycles']} cycles, "
          f"ideal {full['ideal_cycles']}")
    return full


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3"])
def test_example_mlp_compiles_and_simulates_bit_exactly(tmp_path, seed, fmt):
    out = tmp_path / f"mlp_{fmt}"
    res = compile_to(MLP, out, format=fmt, seed=seed)
    ops = [r["op"] for r in res.rows]
    assert ops.count("linear") == 2 and "relu" in ops
    full = assert_sim_passes(out, seed)
    # the pipeline is bound by the first linear layer; allow fill/drain latency on top of it
    assert full["cycles"] <= 1.25 * full["ideal_cycles"]
    lint([out / s for s in json.loads((out / "masec_build.json").read_text())["sources"]], "top")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mxint8", "mxint4", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp4"])
def test_example_mlp_more_formats(tmp_path, seed, fmt):
    out = tmp_path / f"mlp_{fmt}"
    compile_to(MLP, out, format=fmt, seed=seed, parallelism=8)
    assert_sim_passes(out, seed)


def test_fanout_and_two_outputs_simulate(tmp_path, seed):
    out = tmp_path / "fanout"
    compile_to(FANOUT, out, seed=seed)
    build = json.loads((out / "masec_build.json").read_text())
    assert [o["name"] for o in build["outputs"]] == ["m_y0", "m_y1"]
    top = (out / "rtl" / "top.sv").read_text()
    assert "stream_fork" in top and "stream_fifo" in top
    assert_sim_passes(out, seed)


def test_wrong_expected_value_fails_the_testbench(tmp_path, seed):
    out = tmp_path / "mut"
    compile_to(FANOUT, out, seed=seed)
    vf = VectorFile.read(out / "tb" / "vectors.json")
    beats = vf.outputs["m_y1"].beats
    beats[5][0] ^= 1 << 9  # flip one bit of one element of one beat
    vf.write(out / "tb" / "vectors.json")
    s = simulate(out, seed=seed)
    assert not s.result.ok
    assert "beat 5" in s.result.message and "lane 1" in s.result.message


@pytest.mark.parametrize("model", [FANOUT, MLP, Path(__file__).parent / "models" / "llama_block.py"],
                         ids=["fanout", "mlp", "llama_block"])
def test_two_compiles_are_byte_identical(tmp_path, model):
    compile_to(model, tmp_path / "a")
    compile_to(model, tmp_path / "b")
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_force_replaces_and_leaves_no_temporaries(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(["compile", str(FANOUT), "--out", str(out), "--force"]) == 0
    assert not (out / "old.txt").exists() and (out / "rtl" / "top.sv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    assert "masec sim" in capsys.readouterr().out


def test_transforms_are_idempotent():
    cfg = CompileConfig(model_file=str(MLP), out="unused").validated()
    gm, inputs = frontend(cfg)
    shape_prop(gm, inputs)
    for transform in (assign_formats, select_kernels):
        gm, changed = transform(gm, cfg)
        assert changed
        gm, changed = transform(gm, cfg)
        assert not changed, transform.__name__


def test_scripts_carry_part_and_clock(tmp_path):
    out = tmp_path / "o"
    compile_to(FANOUT, out, part="xc7z020clg400-1", clock_ns=5.0)
    tcl = (out / "vivado" / "build.tcl").read_text()
    assert "xc7z020clg400-1" in tcl and "read_verilog -sv rtl/top.sv" in tcl
    assert "create_clock -name clk -period 5.0 [get_ports clk_i]" in (out / "vivado" / "constraints.xdc").read_text()
    ys = (out / "yosys" / "synth.ys").read_text()
    assert "synth_xilinx -top top" in ys
    report = json.loads((out / "report" / "report.json").read_text())
    assert {r["op"] for r in report["nodes"]} >= {"relu", "fork"}


def test_ecp5_part_gets_an_ecp5_yosys_script_and_no_vivado_files(tmp_path):
    out = tmp_path / "o"
    compile_to(FANOUT, out, part="LFE5U-25F-6BG381C")
    ys = (out / "yosys" / "synth.ys").read_text()
    assert "synth_ecp5 -top top -flatten" in ys and "synth_xilinx" not in ys
    assert not list((out / "vivado").glob("*"))


@pytest.mark.skipif(not __import__("masec.toolchain").toolchain.fst_headers_present(),
                    reason="lz4 headers missing (make install-system)")
def test_sim_waves_writes_an_fst_trace(tmp_path, capsys):
    out = tmp_path / "w"
    compile_to(FANOUT, out)
    assert main(["sim", str(out), "--waves"]) == 0
    fst = out / "sim_build" / "dump.fst"
    assert fst.exists() and fst.stat().st_size > 0
    assert "dump.fst" in capsys.readouterr().out


def test_functional_linear_on_parameters_simulates(tmp_path, seed):
    out = tmp_path / "fl"
    res = compile_to(Path(__file__).parent / "models" / "functional_linear.py", out, seed=seed)
    assert [r["op"] for r in res.rows] == ["linear", "relu"]
    (lin,) = [r for r in res.rows if r["op"] == "linear"]
    assert (out / "rtl" / lin["parameters"]["W_MEM"]).exists() and (out / "rtl" / lin["parameters"]["B_MEM"]).exists()
    assert_sim_passes(out, seed)
