"""`masec compile --format auto`: the precision search runs first, its precision.toml is compiled,
the search's files land in OUT/search/, and the design simulates bit-exactly."""
import json
from pathlib import Path

from masec.cli import main

MLP = Path(__file__).resolve().parents[2] / "examples" / "mlp" / "model.py"


def test_format_auto_searches_compiles_and_simulates(tmp_path, capsys):
    out = tmp_path / "auto"
    assert main(["compile", str(MLP), "--format", "auto", "--out", str(out)]) == 0
    for f in ("precision.toml", "search.json", "pareto.png", "nodes.md", "search.log"):
        assert (out / "search" / f).is_file(), f
    doc = json.loads((out / "search" / "search.json").read_text())
    assert doc["parallelism"] == 4 and doc["chosen"]["within_max_loss"]
    cfg = json.loads((out / "masec_config.json").read_text())
    assert cfg["precision_file"] == "precision.toml" and cfg["precision"]   # the searched file was compiled
    assert main(["sim", str(out)]) == 0
    assert "PASS: every output element matches the bit-exact reference" in capsys.readouterr().out
