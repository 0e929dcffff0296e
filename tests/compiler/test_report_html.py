"""The HTML report (masec.report_html): written at compile time, complete, deterministic, and it
renders with its images in headless Chromium (Debian's `chromium`; skipped with the reason when it is
not installed)."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from masec.cli import main
from masec.parts import RESOURCES
from masec.report_html import PLOTS, render_report

ROOT = Path(__file__).resolve().parents[2]
MODEL = Path(__file__).parent / "models" / "llama_block.py"   # linears, matmuls, softmax, rope, forks, reorders


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    for name in ("a", "b"):
        assert main(["compile", str(MODEL), "--out", str(base / name)]) == 0
    return base


def test_files_images_and_node_fields(compiled):
    rep_dir = compiled / "a" / "report"
    html = (rep_dir / "index.html").read_text()
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(imgs) == sorted(f for f, _ in PLOTS)
    for src in imgs:
        data = (rep_dir / src).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    rep = json.loads((rep_dir / "report.json").read_text())
    assert set(rep["estimate_total"]) == set(RESOURCES) and rep["estimate_total"]["LUT"] > 0
    nodes = rep["html"]["nodes"]
    assert len(nodes) == len(rep["nodes"]) > 5
    for n in nodes:
        for key in ("node", "op", "kernel", "out_format", "param_formats", "lanes", "estimate", "yosys",
                    "ideal_cycles", "start", "finish", "bottleneck"):
            assert key in n, key
        assert set(n["estimate"]) == set(RESOURCES)
    assert sum(n["bottleneck"] for n in nodes) == 1
    bott = next(n for n in nodes if n["bottleneck"])
    assert bott["instance"] == rep["bottleneck"] and bott["ideal_cycles"] == max(n["ideal_cycles"] for n in nodes)
    assert any(n["weight_bits"] for n in nodes)          # the linears' weights
    assert 'class="bottleneck"' in html and "does not fit" not in html
    assert rep["html"]["totals"][0]["label"].startswith("estimated")


def test_two_compiles_give_identical_reports(compiled):
    for name in ("index.html", "report.json", *(f for f, _ in PLOTS)):
        assert (compiled / "a" / "report" / name).read_bytes() == (compiled / "b" / "report" / name).read_bytes(), name


def test_yosys_counts_appear_after_synth(compiled, tmp_path):
    """masec synth's hook: with report/synth.json present the page shows the Yosys columns and totals."""
    out = tmp_path / "c"
    shutil.copytree(compiled / "a", out)
    rep = json.loads((out / "report" / "report.json").read_text())
    fake = {"instances": [{"name": f"u_{n['instance']}", **{k: 7 for k in RESOURCES}} for n in rep["nodes"]],
            "total": dict.fromkeys(RESOURCES, 7 * len(rep["nodes"])), "tool": "Yosys (test)",
            "fits": {"utilization": dict.fromkeys(RESOURCES, 0.001), "fits": True, "limiting": "LUT"}}
    (out / "report" / "synth.json").write_text(json.dumps(fake))
    render_report(out)
    html = (out / "report" / "index.html").read_text()
    assert "LUT Yosys" in html and "Yosys synth_xilinx" in html
    nodes = json.loads((out / "report" / "report.json").read_text())["html"]["nodes"]
    assert all(n["yosys"] == dict.fromkeys(RESOURCES, 7) for n in nodes)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (Debian: apt-get install chromium; "
                                                 "`make install-system` does it)")
def test_renders_in_headless_chromium_with_its_images(compiled, tmp_path):
    page = (compiled / "a" / "report" / "index.html").resolve()
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<table>" in dom.stdout and "masec report" in dom.stdout
    shot = tmp_path / "shot.png"
    proc = subprocess.run([*base, "--window-size=1400,5000", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    # the images loaded: the balance plot's bottleneck red (#c44e52) and the bits plot's blue (#4c72b0)
    # are on the screenshot, and nothing else on the page uses those colors
    from PIL import Image

    colors = {c for _, c in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24)}
    assert (196, 78, 82) in colors and (76, 114, 176) in colors


def test_a_kernel_without_cost_model_is_named_not_fatal(tmp_path):
    from masec.backend import lower
    from masec.config import CompileConfig

    model = Path(__file__).parent / "models" / "relu_fanout.py"
    out = tmp_path / "f"
    assert main(["compile", str(model), "--out", str(out)]) == 0
    _, ir, _, _ = lower(CompileConfig(model_file=str(model), out="unused").validated())
    victim = next(i for i in ir.instances.values() if not i.is_port and i.kernel != "stream_fork")
    victim.kernel = "mx_not_modeled"
    render_report(out, ir)
    rep = json.loads((out / "report" / "report.json").read_text())
    assert rep["estimate_missing"] == ["mx_not_modeled"]
    assert next(n for n in rep["nodes"] if n["instance"] == victim.name)["estimate"] is None
    assert "No cost model for mx_not_modeled" in (out / "report" / "index.html").read_text()
