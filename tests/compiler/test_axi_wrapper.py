"""The AXI wrapper <top>_axi (docs/board.md): lint-clean for MX, two-output and token-id designs;
bit-exact through AxiStreamSource/Sink under random gaps and backpressure, registers read with
AxiLiteMaster (the cocotb side is masec.sim.axi_test)."""
import json
import subprocess
from pathlib import Path

import pytest

from masec.axi_wrapper import STREAM_BASE, STREAM_STRIDE, axi_wrapper, render_axi
from masec.backend import compile_model, lower
from masec.config import CompileConfig
from masec.sim.axi_test import run_axi_test
from masec.sim.vectors import VectorFile
from masec.toolchain import verilator_binary, verilator_env

ROOT = Path(__file__).parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"
FANOUT = Path(__file__).parent / "models" / "relu_fanout.py"
STORIES = ROOT / "examples" / "stories260k" / "model.py"

pytest.importorskip("cocotbext.axi")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    out = tmp_path_factory.mktemp("axi") / "mlp"
    compile_model(CompileConfig(model_file=str(MLP), out=str(out), format="mxint8"))
    return out


def _lint_axi(out: Path, tb: bool = False) -> None:
    """``verilator --lint-only -Wall`` of <top>_axi (``tb``: of its SystemVerilog testbench)."""
    build = json.loads((out / "masec_build.json").read_text())
    top = build["axi"]["top"]
    extra = ["--timing", f"tb/{top}_tb.sv"] if tb else []
    cmd = [verilator_binary(), "--lint-only", "-Wall", "--top-module", top + ("_tb" if tb else ""),
           *build["sources"], build["axi"]["source"], *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=verilator_env(), cwd=out)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "%Warning" not in text and "%Error" not in text, text


def test_mlp_wrapper_layout_and_lint(mlp):
    build = json.loads((mlp / "masec_build.json").read_text())
    axi = build["axi"]
    assert axi["top"] == "top_axi" and (mlp / axi["source"]).exists()
    (s_in,) = [s for s in axi["streams"] if s["direction"] == "in"]
    (s_out,) = [s for s in axi["streams"] if s["direction"] == "out"]
    # x: [4, 64] mxint8/B32, 4 lanes: 4 rows x 2 blocks x 8 beats; TDATA = 8 scale bits + 4 x 8 data bits
    assert (s_in["name"], s_in["core"], s_in["beats"], s_in["tdata_bits"]) == ("s_axis_x", "s_x", 64, 40)
    # y: [4, 40] in blocks of 32: 2 blocks per row (the second 8/32 full)
    assert (s_out["name"], s_out["beats"], s_out["rows"], s_out["row_len"]) == ("m_axis_y", 64, 4, 40)
    regs = {r["name"]: r for r in axi["registers"]}
    assert regs["S_AXIS_X_BEATS"]["addr"] == f"0x{STREAM_BASE:02x}" and regs["S_AXIS_X_BEATS"]["value"] == 64
    assert regs["M_AXIS_Y_BEATS"]["addr"] == f"0x{STREAM_BASE + STREAM_STRIDE:02x}"
    assert regs["ID"]["value"] == 0x4D534543 and regs["PORTS"]["value"] == 0x0101
    sv = (mlp / axi["source"]).read_text()
    assert "module top_axi" in sv and "top u_core" in sv and "s_axis_x_tlast" in sv
    _lint_axi(mlp)
    _lint_axi(mlp, tb=True)


def test_mlp_axi_simulates_bit_exactly(mlp, seed):
    res = run_axi_test(mlp, mlp / "axi_build", seed=seed)
    assert res.ok, res.message


def test_axi_test_fails_on_a_wrong_expected_beat(mlp, seed, tmp_path):
    """The comparison can fail: one flipped bit of one expected output element."""
    vf = VectorFile.read(mlp / "tb" / "vectors.json")
    vf.outputs["m_y"].beats[17][0] ^= 1 << 12
    bad = tmp_path / "vectors.json"
    vf.write(bad)
    res = run_axi_test(mlp, mlp / "axi_build", seed=seed, testcase=["stream_flow"], vectors=bad)
    assert not res.ok and "m_axis_y" in res.message and "beat 17 of 64" in res.message, res.message


def test_two_outputs_wrapper_lints(tmp_path):
    out = tmp_path / "fanout"
    compile_model(CompileConfig(model_file=str(FANOUT), out=str(out)))
    axi = json.loads((out / "masec_build.json").read_text())["axi"]
    assert [s["name"] for s in axi["streams"] if s["direction"] == "out"] == ["m_axis_y0", "m_axis_y1"]
    assert {"M_AXIS_Y0_BEATS", "M_AXIS_Y1_COUNT"} <= {r["name"] for r in axi["registers"]}
    _lint_axi(out)
    _lint_axi(out, tb=True)


def test_token_id_stream_layout(monkeypatch, tmp_path):
    """An LLM's token ids: a plain stream, 9-bit ids byte-padded to 16-bit TDATA, no scale byte."""
    monkeypatch.setenv("MASEC_LAYERS", "1")
    monkeypatch.setenv("MASEC_SEQ_LEN", "8")
    _, ir, _, _ = lower(CompileConfig(model_file=str(STORIES), out=str(tmp_path / "o")).validated())
    w = axi_wrapper(ir, "top", "")
    (tok,) = w.inputs
    assert (tok.name, tok.mx, tok.element_bits, tok.tdata_bits, tok.beats, tok.block) == \
        ("s_axis_tokens", False, 9, 16, 8, 0)
    (logits,) = w.outputs
    assert logits.mx and logits.tdata_bits == 8 + logits.data_bits and logits.row_len == 512


def test_m2xfp_stream_info_registers(tmp_path):
    """An m2xfp4_a stream: DATA_BITS reports the codes plus 2 metadata bits per 8 lanes (what TDATA
    carries above the scale byte), FORMAT[19:17] = 1; printed as constants into the register read mux."""
    prec = tmp_path / "m2x.toml"
    prec.write_text('[default]\nact = "m2xfp4_a"\nweight = "mxint8"\n')
    _, ir, _, _ = lower(CompileConfig(model_file=str(MLP), out=str(tmp_path / "o"), precision_file=str(prec),
                                      parallelism=8).validated())
    w = axi_wrapper(ir, "top", "")
    regs = {r.name: r for r in w.registers}
    for s in w.streams:
        assert s.fmt.startswith("m2xfp4_a/") and s.lanes % 8 == 0, s
        data_bits = s.lanes * 4 + s.lanes // 8 * 2
        assert s.element_bits == 4 and s.data_bits == data_bits and s.tdata_bits == 8 * -(-(8 + data_bits) // 8)
        n = s.name.upper()
        assert regs[f"{n}_DATA_BITS"].addr == s.base + 0x1C and regs[f"{n}_DATA_BITS"].value == data_bits
        fmt = regs[f"{n}_FORMAT"].value
        assert (fmt & 0xFF, fmt >> 8 & 0xFF, fmt >> 16 & 1, fmt >> 17 & 7, fmt >> 24) == \
            (s.lanes, 4, 1, 1, s.tdata_bits // 8)
    sv = render_axi(w).text
    for r in w.registers:
        if r.kind == "const":
            assert f"'d{r.addr // 4}: rdata_d = 32'h{r.value:08x};  // {r.name}" in sv, r.name
    # an MX stream: DATA_BITS = lanes x element bits, format code 0
    _, ir8, _, _ = lower(CompileConfig(model_file=str(MLP), out=str(tmp_path / "o8"), format="mxint8").validated())
    (x8,) = axi_wrapper(ir8, "top", "").inputs
    assert x8.data_bits == x8.lanes * 8 and x8.kind == 0


@pytest.mark.slow
def test_token_id_design_wrapper_lints(monkeypatch, tmp_path):
    monkeypatch.setenv("MASEC_LAYERS", "1")
    monkeypatch.setenv("MASEC_SEQ_LEN", "8")
    out = tmp_path / "st"
    compile_model(CompileConfig(model_file=str(STORIES), out=str(out)))
    _lint_axi(out)
    _lint_axi(out, tb=True)


@pytest.mark.slow
def test_two_outputs_axi_simulates_bit_exactly(tmp_path, seed):
    """Two output streams: DONE_COUNT counts an inference once both output tensors are out."""
    out = tmp_path / "fanout"
    compile_model(CompileConfig(model_file=str(FANOUT), out=str(out), seed=seed))
    res = run_axi_test(out, out / "axi_build", seed=seed)
    assert res.ok, res.message
