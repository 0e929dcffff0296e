"""End to end: run_search writes every file, chooses the known-best point, resumes its study;
the CLI entry point on a model file."""
import json
import sys
from pathlib import Path

import optuna
import pytest

from masec.passes.search import load_precision
from masec.passes.search.cli import main as cli_main
from masec.passes.search.runner import run_search

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import toy_model  # noqa: E402

TYPES = ("mxint8", "mxint4", "mxfp6_e2m3", "mxfp4")
BLOCKS = (32, 64)


def search(out, trials, **kw):
    kw.setdefault("types", TYPES)
    kw.setdefault("blocks", BLOCKS)
    return run_search(toy_model.model, toy_model.example_inputs, toy_model.evaluate, toy_model.calibration_data,
                      out, metric_name="mse", max_loss="2%", trials=trials, storage=None, device="cpu",
                      by="node", seed=3, progress=False, threads=1, **kw)


def test_end_to_end_and_resume(tmp_path):
    out = tmp_path / "s"
    res = search(out, trials=3)
    for f in ("precision.toml", "search.json", "nodes.md", "pareto.png", "search.log", "study.db",
              "sensitivity.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    doc = json.loads((out / "search.json").read_text())
    assert doc["float32_metric"] == pytest.approx(toy_model.evaluate(toy_model.model))
    assert doc["max_loss"] == "2%"
    ch = doc["chosen"]
    assert ch["within_max_loss"] and ch["loss"] <= 0.02
    assert ch["metric"] <= doc["float32_metric"] * 1.02
    # the known best: the scaled-down layers at 4 bits, the main layer and the input wider
    assert ch["sites"]["weight:small1"].split(":")[0] in ("mxint4", "mxfp4_e2m1")
    assert ch["sites"]["weight:small2"].split(":")[0] in ("mxint4", "mxfp4_e2m1")
    assert ch["sites"]["weight:big"].split(":")[0] not in ("mxint4", "mxfp4_e2m1")
    assert ch["avg_bits"] < doc["uniform"]["mxint8:32"]["avg_bits"]
    assert all({"avg_bits", "metric", "assignment"} <= set(p) for p in doc["points"])
    assert {p["source"] for p in doc["points"]} == {"ilp", "optuna"}
    # precision.toml is the chosen point, in the compiler's schema
    spec = load_precision(out / "precision.toml")
    for site, key in ch["sites"].items():
        kind, path = site.split(":", 1)
        fmt, block = key.split(":")
        assert spec.resolve("linear" if kind == "weight" else "input", path, "weight" if kind == "weight" else "out") \
            == (fmt, int(block))
    assert "| weight | `big` |" in (out / "nodes.md").read_text()
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    n1 = len(optuna.load_study(study_name="masec-node-max2pct", storage=f"sqlite:///{out}/study.db").trials)

    # resume: the same folder continues the study (sensitivity reused, ILP points not added twice)
    res2 = search(out, trials=2)
    st = optuna.load_study(study_name="masec-node-max2pct", storage=f"sqlite:///{out}/study.db")
    assert len(st.trials) == n1 + 2
    assert "sensitivity: reusing" in (out / "search.log").read_text()
    assert len(res2.points) >= len(res.points)
    assert res2.chosen["avg_bits"] <= res.chosen["avg_bits"]


def test_deterministic_and_cli(tmp_path, capsys):
    a = search(tmp_path / "a", trials=0, ilp_points=4)
    b = search(tmp_path / "b", trials=0, ilp_points=4)
    assert a.chosen["assignment"] == b.chosen["assignment"] and a.chosen["metric"] == b.chosen["metric"]
    assert (tmp_path / "a" / "precision.toml").read_text() == (tmp_path / "b" / "precision.toml").read_text()
    assert not (tmp_path / "a" / "study.db").exists()   # trials=0 and no --storage: no study

    rc = cli_main([str(HERE / "toy_model.py"), "--out", str(tmp_path / "c"), "--trials", "0", "--by", "type",
                   "--types", "mxint8,mxfp4", "--block-sizes", "32", "--max-loss", "5%", "--no-progress", "--threads", "1"])
    assert rc == 0
    doc = json.loads((tmp_path / "c" / "search.json").read_text())
    assert doc["by"] == "type" and doc["metric_name"] == "mse" and doc["max_loss"] == "5%"
    assert set(doc["space"]["groups"]) == {"weight:linear", "act:input"}

    assert cli_main([str(HERE / "nope.py"), "--out", str(tmp_path / "d")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert cli_main([str(HERE / "toy_model.py"), "--out", str(tmp_path / "d"), "--types", "mxint99x"]) == 2
    assert "--types" in capsys.readouterr().err
    assert cli_main([str(HERE / "toy_model.py"), "--out", str(tmp_path / "d"), "--device", "cuda:7",
                     "--no-progress"]) in (0, 2)


def test_bits_mode(tmp_path):
    res = search(tmp_path / "bits", trials=2, max_bits=5.0)
    c = res.chosen
    assert c["within_max_bits"] and c["avg_bits"] <= 5.0
    doc = json.loads((tmp_path / "bits" / "search.json").read_text())
    assert doc["max_bits"] == 5.0
    # at 5 bits the constructed model's best use of bits: the scaled-down weights at 4 bits
    assert doc["chosen"]["sites"]["weight:small1"].split(":")[0] in ("mxint4", "mxfp4_e2m1")
    assert doc["chosen"]["sites"]["weight:big"].split(":")[0] not in ("mxint4", "mxfp4_e2m1")
    # better than uniform mxfp4 at fewer bits
    assert c["metric"] < doc["uniform"]["mxfp4_e2m1:32"]["metric"]
    with pytest.raises(Exception, match="max-bits"):
        search(tmp_path / "bits2", trials=0, max_bits=3.0)


def test_interrupt_keeps_results_and_resumes(tmp_path):
    out = tmp_path / "int"
    calls = {"n": 0}

    def flaky_evaluate(m):
        calls["n"] += 1
        if calls["n"] == 12:         # during the Optuna trials
            raise KeyboardInterrupt
        return toy_model.evaluate(m)

    res = run_search(toy_model.model, toy_model.example_inputs, flaky_evaluate, toy_model.calibration_data, out,
                     metric_name="mse", max_loss="2%", trials=6, progress=False, threads=1, types=TYPES,
                     blocks=BLOCKS, seed=3)
    assert (out / "precision.toml").is_file() and res.chosen["within_max_loss"]
    assert "interrupted" in (out / "search.log").read_text()
    st = optuna.load_study(study_name="masec-node-max2pct", storage=f"sqlite:///{out}/study.db")
    done = len([t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE])
    search(out, trials=2)
    st = optuna.load_study(study_name="masec-node-max2pct", storage=f"sqlite:///{out}/study.db")
    assert len([t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]) == done + 2


def test_pareto_mode(tmp_path):
    out = tmp_path / "pareto"
    res = run_search(toy_model.model, toy_model.example_inputs, toy_model.evaluate, toy_model.calibration_data, out,
                     metric_name="mse", max_loss=None, trials=3, progress=False, threads=1, types=TYPES,
                     blocks=BLOCKS, seed=3, ilp_points=4)
    st = optuna.load_study(study_name="masec-node-pareto", storage=f"sqlite:///{out}/study.db")
    assert len(st.directions) == 2   # (metric, bits)
    doc = json.loads((out / "search.json").read_text())
    assert doc["max_loss"] is None and doc["chosen"]["within_max_loss"] is None
    front = [(p["avg_bits"], p["metric"]) for p in doc["pareto"]]
    assert front == sorted(front) and all(a[1] > b[1] for a, b in zip(front, front[1:]))
    assert (res.chosen["avg_bits"], res.chosen["metric"]) in front
    assert len([p for p in doc["points"] if p["source"] == "ilp"]) >= 2
