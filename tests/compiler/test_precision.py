"""`masec compile --precision FILE.toml`: a mixed-precision LLaMA block, and bad precision files."""
import json
from pathlib import Path

import pytest

from masec.cli import main

MODELS = Path(__file__).parent / "models"
LLAMA = MODELS / "llama_block.py"

MIXED = """
[default]
act = "mxint8"
weight = "mxint8"
[op.softmax]
act = "mxfp8_e4m3"
[node."wq"]
weight = "mxfp4"
"""


def one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("masec: error:")
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_mixed_precision_llama_block_compiles_and_reports_per_node_formats(tmp_path, capsys):
    prec = tmp_path / "precision.toml"
    prec.write_text(MIXED)
    out = tmp_path / "o"
    assert main(["compile", str(LLAMA), "--precision", str(prec), "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    report = json.loads((out / "report" / "report.json").read_text())
    rows = report["nodes"]
    sm = [r for r in rows if r["op"] == "softmax"]
    assert sm and all(r["format"].startswith("mxfp8_e4m3/") for r in sm)
    lins = [r for r in rows if r["op"] == "linear"]
    assert len(lins) == 4
    fp4 = [r for r in lins if r["param_formats"]["weight"].startswith("mxfp4")]
    assert len(fp4) == 1                                     # wq only
    assert all(r["param_formats"]["weight"].startswith("mxint8/") for r in lins if r not in fp4)
    assert all(r["format"].startswith("mxint8/") for r in rows if r["op"] != "softmax")
    # the report shows every node's formats, the precision file is recorded for reproduction
    md = (out / "report" / "report.md").read_text()
    assert "precision.toml" in md and "weight mxfp4" in md and "mxfp8_e4m3/B" in md
    cfg = json.loads((out / "masec_config.json").read_text())
    assert cfg["precision_file"] == "precision.toml" and cfg["precision"]["node"] == {"wq": {"weight": "mxfp4"}}
    # the console table lists the nodes (it wraps long format names inside its cells: checked in the report)
    assert "softmax" in shown and "wq" in shown


@pytest.mark.parametrize("case,text,needles", [
    ("unknown key", '[default]\nacts = "mxint8"\n', ["[default]", "unknown key", "acts"]),
    ("unknown table", '[defaults]\nact = "mxint8"\n', ["unknown top-level key", "defaults"]),
    ("bad toml", '[default\nact = "mxint8"\n', ["not valid TOML"]),
    ("bad block size", "[default]\nblock_size = 24\n", ["block_size", "power of two"]),
    ("format not a string", "[op.softmax]\nact = 8\n", ["[op.softmax] act = 8", "format name"]),
    ("unknown format", '[op.softmax]\nact = "mxbogus"\n', ["mxbogus", "[op.softmax]"]),
    ("format without kernels", '[node."wq"]\nweight = "m2xfp4_a"\n', ["m2xfp4_a", "built only for activations"]),
])
def test_bad_precision_file_gives_one_line_and_writes_nothing(tmp_path, capsys, case, text, needles):
    prec = tmp_path / "p.toml"
    prec.write_text(text)
    outs = tmp_path / "outs"
    outs.mkdir()
    code = main(["compile", str(LLAMA), "--precision", str(prec), "--out", str(outs / "o")])
    one_line_error(capsys, code, "--precision" if case not in ("unknown format", "format without kernels")
                   else "", *needles)
    assert list(outs.iterdir()) == []


def test_missing_precision_file(tmp_path, capsys):
    code = main(["compile", str(LLAMA), "--precision", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")])
    one_line_error(capsys, code, "--precision", "nope.toml", "no such file")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_mixed_precision_llama_block_simulates_bit_exactly(tmp_path, seed):
    from masec.simulate import simulate

    prec = tmp_path / "precision.toml"
    prec.write_text(MIXED)
    out = tmp_path / "o"
    assert main(["compile", str(LLAMA), "--precision", str(prec), "--out", str(out), "--seed", str(seed)]) == 0
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message
