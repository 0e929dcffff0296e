"""Per-node lanes: `lanes = N` in the precision file, mx_retile between nodes of different lanes,
bit-exact simulation of a mixed-lanes design, refusals of illegal lanes and budgets."""
import json
from pathlib import Path

import pytest

from masec.backend import lower
from masec.cli import main
from masec.config import CompileConfig
from masec.errors import MasecError
from masec.hwir import run_reference
from masec.passes.hw.insert_retiles import insert_retiles

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"
LLAMA = Path(__file__).parent / "models" / "llama_block.py"

MLP_LANES = '[node."fc1"]\nlanes = 8\n[op.relu]\nlanes = 4\n[node."fc2"]\nlanes = 2\n'
LLAMA_LANES = """
[op.linear]
lanes = 8
[node."wo"]
lanes = 2
[op.softmax]
lanes = 1
[op.rope]
lanes = 2
"""


def _lower(model, text, tmp_path, **kw):
    p = tmp_path / "lanes.toml"
    p.write_text(text)
    cfg = CompileConfig(model_file=str(model), out=str(tmp_path / "o"), precision_file=str(p), **kw).validated()
    return lower(cfg)


def test_lanes_overrides_are_honored_and_retiles_join_them(tmp_path):
    gm, ir, values, inputs = _lower(MLP, MLP_LANES, tmp_path)
    inst = ir.instances
    assert (inst["fc1"].params["P_IN"], inst["fc1"].params["P_OUT"]) == (8, 8)
    assert inst["act"].params["P"] == 4
    assert (inst["fc2"].params["P_IN"], inst["fc2"].params["P_OUT"]) == (2, 2)
    assert inst["in_x"].out_types[0].lanes == 8                  # the input port is as wide as its consumer
    retiles = {(i.params["P_IN"], i.params["P_OUT"]) for i in inst.values() if i.kernel == "mx_retile"}
    assert retiles == {(8, 4), (4, 2)}
    assert inst["fc2"].ideal_cycles == 4 * (40 // 2) * (96 // 2)        # rows * OUT/P_OUT * IN/P_IN
    ir.check()
    assert not insert_retiles(ir)                                # idempotent
    # the retiles are in the reference: identity on values, so the output equals the uniform design's
    gm2, ir2, values2, _ = lower(CompileConfig(model_file=str(MLP), out=str(tmp_path / "u")).validated())
    a, b = values[("out_y", 0)], values2[("out_y", 0)]
    assert a.codes.equal(b.codes) and a.scales.equal(b.scales)
    assert run_reference(ir, inputs)[("out_y", 0)].codes.equal(a.codes)


def test_mixed_lanes_mlp_simulates_bit_exactly(tmp_path, capsys):
    p = tmp_path / "lanes.toml"
    p.write_text(MLP_LANES)
    out = tmp_path / "o"
    assert main(["compile", str(MLP), "--precision", str(p), "--out", str(out)]) == 0
    top = (out / "rtl" / "top.sv").read_text()
    assert top.count("mx_retile #(") == 2
    assert main(["sim", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out
    report = json.loads((out / "report" / "report.json").read_text())
    lanes = {r["node"]: r["lanes"] for r in report["nodes"] if r["op"] in ("linear", "relu")}
    assert lanes == {"fc1": 8, "act": 4, "fc2": 2}
    f = report["folding"]                        # the report says how lanes were chosen and what it costs
    assert "no --budget" in f["mode"] and "--parallelism 4" in f["mode"]
    assert {r["instance"]: r["lanes"] for r in f["nodes"]}["retile_fc2_0"] == 2
    assert f["bottleneck"] == "fc2" and f["bottleneck_cycles"] == 4 * 20 * 48
    md = (out / "report" / "report.md").read_text()
    assert "## Folding" in md and "fc2 **(bottleneck)**" in md
    if f["total"] is not None:
        assert f"Fits {f['part']}: yes" in md and "| fits | yes | yes | yes | yes |" in md


@pytest.mark.slow
def test_mixed_lanes_llama_block_simulates_bit_exactly(tmp_path, capsys):
    p = tmp_path / "lanes.toml"
    p.write_text(LLAMA_LANES)
    out = tmp_path / "o"
    assert main(["compile", str(LLAMA), "--precision", str(p), "--out", str(out)]) == 0
    assert "mx_retile #(" in (out / "rtl" / "top.sv").read_text()
    assert main(["sim", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out


@pytest.mark.slow
def test_budgeted_llama_block_simulates_bit_exactly(tmp_path, capsys):
    """--budget 0.1 of an xczu9eg: lanes chosen per node by the fold pass, retiles between them."""
    out = tmp_path / "o"
    assert main(["compile", str(LLAMA), "--part", "xczu9eg", "--budget", "0.1", "--out", str(out)]) == 0
    f = json.loads((out / "report" / "report.json").read_text())["folding"]
    assert all(f["within_budget"].values()) and len({r["lanes"] for r in f["nodes"]}) > 1
    assert "mx_retile #(" in (out / "rtl" / "top.sv").read_text()
    assert main(["sim", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out


def _one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("text,needles", [
    ('[node."fc1"]\nlanes = 64\n', ["node `fc1` (linear", "lanes = 64 is not legal", "legal lanes: 1, 2, 4, 8, 16, 32"]),
    ('[op.relu]\nlanes = 3\n', ["[op.relu] lanes = 3", "power of two"]),
    ('[default]\nlanes = 4\n', ["[default] lanes", "--parallelism"]),
])
def test_illegal_lanes_are_refused_in_one_line(tmp_path, capsys, text, needles):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    code = main(["compile", str(MLP), "--precision", str(p), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, *needles)
    assert not (tmp_path / "o").exists()


def test_rope_lanes_must_be_even(tmp_path):
    with pytest.raises(MasecError, match=r"node `\w*rope\w*` \(rope.*lanes = 1 is not legal.*legal lanes: 2, 4, 8"):
        _lower(LLAMA, "[op.rope]\nlanes = 1\n", tmp_path)


def test_budget_on_a_part_without_estimates_is_refused(tmp_path, capsys):
    from masec.parts import PARTS

    ecp5 = [p.name for p in PARTS.values() if getattr(p, "vendor", "xilinx") != "xilinx"]
    if not ecp5:
        pytest.skip("no non-Xilinx part in the parts table")
    code = main(["compile", str(MLP), "--out", str(tmp_path / "o"), "--part", ecp5[0], "--budget", "0.5"])
    _one_line_error(capsys, code, f"--part {ecp5[0]}", "synth_xilinx", "no estimates")


@pytest.mark.parametrize("flag,needles", [
    (["--budget", "0"], ["--budget 0.0", "0 < F <= 1"]),
    (["--budget", "1.5"], ["--budget 1.5", "0 < F <= 1"]),
    (["--part", "xc9z999"], ["unknown FPGA part", "xc7z020", "xcvu9p"]),
])
def test_bad_budget_and_part_are_refused_before_any_pass(tmp_path, capsys, flag, needles):
    code = main(["compile", str(MLP), "--out", str(tmp_path / "o"), *flag])
    _one_line_error(capsys, code, *needles)
