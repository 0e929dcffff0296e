"""Op lowerings on real and small models: the hardware-exact run tracks float fake-quantization
(kernels add no error beyond the format), and the compiled designs simulate bit-exactly."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from masec.backend import compile_model, lower
from masec.config import CompileConfig
from masec.formats import parse_format
from masec.lowering import supported_ops
from masec.reference import accuracy
from masec.simulate import simulate

ROOT = Path(__file__).parents[2]
FFN = ROOT / "examples" / "stories260k_ffn" / "model.py"
GPT = Path(__file__).parent / "models" / "gpt_mlp.py"


def _ffn_module():
    sys.path.insert(0, str(FFN.parent))
    try:
        import model as ffn  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    return ffn


def fake_quant_ffn(m, x, fmt):
    q = parse_format(fmt).quantize
    with torch.no_grad():
        xq = q(x)
        h = q(m.ffn_norm(xq))
        g = q(q(F.silu(q(F.linear(h, q(m.w1.weight))))) * q(F.linear(h, q(m.w3.weight))))
        return q(xq + q(F.linear(g, q(m.w2.weight))))


def test_supported_ops_cover_a_transformer_block():
    assert {"linear", "relu", "gelu", "silu", "add", "mul", "rms_norm", "layer_norm", "matmul", "softmax", "rope",
            "embedding"} <= supported_ops()


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4"])
def test_stories260k_ffn_hardware_exact_tracks_fake_quant(tmp_path, fmt):
    gm, ir, values, inputs = lower(CompileConfig(model_file=str(FFN), out=str(tmp_path / "o"), format=fmt).validated())
    assert not (tmp_path / "o").exists()
    ffn = _ffn_module()
    m, (x,) = ffn.model(), ffn.example_inputs()
    with torch.no_grad():
        ref = m(x)
    fq = fake_quant_ffn(m, x, fmt)
    fq_rel = ((fq - ref).norm() / ref.norm()).item()
    (acc,) = accuracy(gm, ir, inputs, values)
    print(f"{fmt}: hardware-exact rel RMS {acc['rel_rms']:.4f}, float fake-quant {fq_rel:.4f}")
    # the bit-exact kernels (bounded accumulators, table-based SiLU, rsqrt) stay within 10% of the
    # error that quantization alone causes
    assert acc["rel_rms"] <= 1.10 * fq_rel
    assert acc["rel_rms"] < {"mxint8": 0.03, "mxfp8_e4m3": 0.16, "mxfp4": 0.45}[fmt]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mxint8", "mxfp4"])
def test_stories260k_ffn_simulates_bit_exactly(tmp_path, seed, fmt):
    out = tmp_path / "ffn"
    compile_model(CompileConfig(model_file=str(FFN), out=str(out), format=fmt, seed=seed, parallelism=8))
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message
    full = s.result.run("full_rate")
    print(f"stories260K FFN {fmt}: {full['cycles']} cycles, ideal {full['ideal_cycles']}")


@pytest.mark.parametrize("fmt", ["mxint8"])
def test_gpt_mlp_block_simulates_bit_exactly(tmp_path, seed, fmt):
    out = tmp_path / "gpt"
    res = compile_model(CompileConfig(model_file=str(GPT), out=str(out), format=fmt, seed=seed, parallelism=8))
    assert [r["op"] for r in res.rows] == ["fork", "layer_norm", "linear", "gelu", "linear", "add"]
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message


def test_softmax_head_simulates_bit_exactly(tmp_path, seed):
    out = tmp_path / "sm"
    res = compile_model(CompileConfig(model_file=str(Path(__file__).parent / "models" / "softmax_head.py"),
                                      out=str(out), seed=seed))
    assert [r["kernel"] for r in res.rows] == ["mx_linear", "mx_softmax"]
    (acc,) = res.accuracy
    assert acc["rel_rms"] < 0.05, acc
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message


def test_softmax_over_another_axis_is_refused(tmp_path, capsys):
    from masec.cli import main

    model = tmp_path / "m.py"
    model.write_text("import torch\nmodel = torch.nn.Softmax(dim=0)\nexample_inputs = torch.randn(4, 32)\n")
    assert main(["compile", str(model), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "`softmax" in err and "m.py" in err and "last axis" in err
    assert not (tmp_path / "o").exists()
