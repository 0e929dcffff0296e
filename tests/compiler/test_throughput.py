"""Rows per second from cycles and a clock (masec.throughput) and where the reports carry it."""
import json

from masec.throughput import describe, rows_per_inference, throughput


def test_throughput_arithmetic():
    t = throughput(bottleneck_cycles=512, latency_cycles=2100, clock_mhz=250.0, rows=32)
    assert t["inferences_per_s"] == 488281.2 and t["rows_per_s"] == 15625000.0
    assert t["latency_us"] == 8.4 and t["rows_per_inference"] == 32
    assert "15,625,000 rows/s" in describe(t, "x") and "latency 8.40 us" in describe(t, "x")
    assert throughput(0, 0, 100.0, 1)["rows_per_s"] == 0.0


def test_rows_of_activations_and_of_token_ids():
    assert rows_per_inference((1, 32, 64)) == 32
    assert rows_per_inference((4, 16)) == 4
    assert rows_per_inference((1, 32), token_ids=True) == 32
    assert rows_per_inference((7,)) == 7


def test_compile_report_has_the_predicted_rate(tmp_path):
    from masec.cli import main

    out = tmp_path / "mlp"
    assert main(["compile", "examples/mlp/model.py", "--format", "mxint8", "--clock", "5", "--out", str(out)]) == 0
    rep = json.loads((out / "report" / "report.json").read_text())
    t = rep["throughput"]
    assert t["clock_mhz"] == 200.0 and t["bottleneck_cycles"] == rep["bottleneck_cycles"]
    assert t["latency_cycles"] == rep["predicted_cycles"]
    assert t["rows_per_s"] == round(200e6 / rep["bottleneck_cycles"] * t["rows_per_inference"], 1)
    assert "rows/s" in (out / "report" / "report.md").read_text()
    assert "Predicted (cycle model) at 200 MHz" in (out / "report" / "index.html").read_text()
    # a post-route Fmax from masec synth (ECP5) gives a second line
    from masec.report_html import build

    (out / "report" / "synth.json").write_text(json.dumps({"fmax_mhz": 80.0, "instances": [], "total": {},
                                                           "fits": {"utilization": {}, "fits": True, "limiting": ""}}))
    rates = build(out).rates
    assert len(rates) == 2 and "at 80 MHz" in rates[1]
