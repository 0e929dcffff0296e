"""Bad input: one clear line on stderr, exit code 2, nothing written."""
from pathlib import Path

import pytest

from masec.cli import main

MODELS = Path(__file__).parent / "models"
MLP = Path(__file__).parents[2] / "examples" / "mlp" / "model.py"


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    cap = capsys.readouterr()
    return code, cap.err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("masec: error:")
    for n in needles:
        assert n in lines[0], (n, lines[0])


def assert_nothing_written(parent: Path):
    assert [p.name for p in parent.iterdir()] == [], list(parent.iterdir())


@pytest.mark.parametrize("case,args,needles", [
    ("missing file", ["nope.py"], ["nope.py", "no such model file"]),
    ("not python", ["model.txt"], ["model.txt", "Python file"]),
    ("no model name", [MODELS / "names.py"], ["defines no `model`", "--model"]),
    ("no inputs name", [MODELS / "names.py", "--model", "my_net"], ["defines no `example_inputs`", "--inputs"]),
    ("import fails", [MODELS / "broken_import.py"], ["broken_import.py:4", "NameError"]),
    ("untraceable", [MODELS / "untraceable.py"], ["cannot capture", "untraceable.py:11", "x.sum() > 0"]),
    ("unsupported op", [MODELS / "unsupported.py"], ["`sin`", "unsupported.py:11", "torch.sin(self.fc(x))",
                                                     "supported ops:", "linear", "softmax"]),
    ("unknown format", [MLP, "--format", "mxfloat9"], ["--format 'mxfloat9'"]),
    # formats without hardware kernels are refused, not compiled to E8M0 hardware that computes another format
    # a seed format is checked port by port: the first port without its kernel is named
    ("m2xfp4_w", [MLP, "--format", "m2xfp4_w"], ["node `x` (input)", "'m2xfp4_w'", "only as the weight of a linear"]),
    ("bitmod_fp4", [MLP, "--format", "bitmod_fp4"], ["node `x`", "'bitmod_fp4'", "only as the weight of a linear"]),
    ("anda4", [MLP, "--format", "anda4"], ["node `fc1`", "'anda4'", "built only for activations"]),
    ("fp_e4m3", [MLP, "--format", "fp_e4m3"], ["--format 'fp_e4m3'", "no hardware kernels"]),
    ("unknown part", [MLP, "--part", "xc9bogus"], ["--part", "xc9bogus"]),
    ("empty input", ["empty.py"], ["empty.py", "is empty"]),
    ("nan input", ["nan.py"], ["nan.py", "NaN or Inf"]),
    ("int64 input into a linear", ["ids.py"], ["`relu_1`", "integer stream", "embedding"]),
    ("bad parallelism", [MLP, "--parallelism", "3"], ["--parallelism 3"]),
    ("parallelism above block", [MLP, "--parallelism", "64"], ["--parallelism 64"]),
])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, case, args, needles):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.txt").write_text("model = None\n")
    head = "import torch\nmodel = torch.nn.Linear(32, 32)\nexample_inputs = "
    (tmp_path / "empty.py").write_text(head + "torch.zeros(0, 32)\n")
    (tmp_path / "nan.py").write_text(head + "torch.full((2, 32), float('inf'))\n")
    (tmp_path / "ids.py").write_text("import torch\nmodel = torch.nn.ReLU()\n"
                                     "example_inputs = torch.arange(32).reshape(2, 16)\n")
    outs = tmp_path / "outs"
    outs.mkdir()
    code, err = run(capsys, "compile", *args, "--out", outs / "rtl")
    assert_one_line_error(code, err, *needles)
    assert_nothing_written(outs)


def test_existing_folder_needs_force(tmp_path, capsys):
    out = tmp_path / "rtl"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, err = run(capsys, "compile", MLP, "--out", out)
    assert_one_line_error(code, err, str(out), "--force")
    assert (out / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rtl"]


def test_out_is_a_file(tmp_path, capsys):
    out = tmp_path / "rtl"
    out.write_text("x")
    code, err = run(capsys, "compile", MLP, "--out", out)
    assert_one_line_error(code, err, "not a folder")


def test_sim_on_a_folder_that_is_not_a_build(tmp_path, capsys):
    code, err = run(capsys, "sim", tmp_path)
    assert_one_line_error(code, err, "not a masec output folder")


def test_unknown_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compile", str(MLP), "--out", "x", "--frobnicate"])
    assert exc.value.code == 2
