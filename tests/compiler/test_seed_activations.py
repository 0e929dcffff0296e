"""Seed ACTIVATION formats (nvfp4, m2xfp4_a, anda<M>) through the compiler: model inputs, a linear's
output stage (Y_QFMT), a linear's input decode (XFMT), relu (mx_relu, M2XFP: M2X), the NVFP4 tensor
scale calibrated on the example inputs; bit-exact simulation; refusals; determinism."""
import json
from pathlib import Path

import pytest
import torch

from masec.errors import MasecError
from masec.formats import parse_format
from masec.hw_templates.kernels.mx_quantize import nvfp4_tensor_scale_exp
from masec.lowering.base import MXValue
from masec.meta import TensorFormat, meta
from masec.sim.mxstream import mx_beats

ROOT = Path(__file__).parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"
from seed_helpers import compile_with, sim_ok  # noqa: E402  (tests/compiler is on the path)


def formats_of(res) -> dict:
    return {n.name: dict(meta(n).formats) for n in res.gm.graph.nodes if "masec" in n.meta}


# ---------------------------------------------------------------------------------- values and packing
@pytest.mark.parametrize("name,block", [("anda4", 32), ("anda6", 64), ("m2xfp4_a", 32), ("m2xfp4_a", 16)])
def test_input_quantization_equals_the_format_library(name, block):
    """A model input in a seed activation format is quantized as the format library encodes it."""
    x = torch.randn(3, 80, generator=torch.Generator().manual_seed(5)) * 7
    v = MXValue.from_float(x, TensorFormat(name, block))
    f = parse_format(name, block_size=block)
    enc = f.encode(x)
    assert torch.equal(v.codes, enc.codes.to(torch.int64).reshape(v.codes.shape))
    assert torch.equal(v.scales, enc.scales.to(torch.int64).reshape(v.scales.shape))
    if name == "m2xfp4_a":
        assert torch.equal(v.meta, enc.meta["subgroup_meta"].to(torch.int64).reshape(v.meta.shape))
    assert torch.equal(v.to_float(), f.quantize(x))


def test_nvfp4_input_equals_the_format_library_at_a_power_of_two_tensor_scale():
    """With amax = 2688 * 2^t the format library's s_t is 2^t: the same codes, scales and values."""
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(2))
    x = x / x.abs().max() * (2688 * 2.0 ** -7)
    t = nvfp4_tensor_scale_exp(float(x.abs().max()))
    assert t == -7
    v = MXValue.from_float(x, TensorFormat("nvfp4", 16, ts_exp=t))
    enc = parse_format("nvfp4").encode(x)
    assert float(enc.meta["tensor_scale"]) == 2.0 ** -7
    assert torch.equal(v.codes, enc.codes.to(torch.int64).reshape(v.codes.shape))
    assert torch.equal(v.scales, enc.scales.to(torch.int64).reshape(v.scales.shape))
    assert torch.equal(v.to_float(), parse_format("nvfp4").quantize(x))


def test_m2xfp_beats_carry_the_metadata_above_the_codes():
    """Beat layout of an M2XFP stream (mx_quantize QFMT 1): P 4-bit codes, then 2 bits per subgroup of 8."""
    codes = torch.arange(32).reshape(1, 1, 32) % 16
    meta_ = torch.tensor([[[0, 1, 2, 3]]])
    beats = mx_beats(codes, torch.tensor([[130]]), 4, 16, meta_)
    assert len(beats) == 2 and all(b[1] == 130 for b in beats)
    for k, (data, _) in enumerate(beats):
        assert [(data >> (4 * i)) & 15 for i in range(16)] == codes[0, 0, 16 * k:16 * k + 16].tolist()
        assert [(data >> (64 + 2 * g)) & 3 for g in range(2)] == meta_[0, 0, 2 * k:2 * k + 2].tolist()
        assert data >> 68 == 0
    with pytest.raises(ValueError, match="multiple of 8 lanes"):
        mx_beats(codes, torch.tensor([[130]]), 4, 4, meta_)


# ---------------------------------------------------------------------------------- compile + simulate
NVFP4_ALL = '[default]\nact = "nvfp4"\nweight = "nvfp4"\nblock_size = 16\n'
ANDA_ALL = '[default]\nact = "anda4"\nweight = "mxint8"\n'
M2XFP_ALL = '[default]\nact = "m2xfp4_a"\nweight = "mxint8"\n[node."fc1"]\nweight = "m2xfp4_w"\n'


def test_mlp_nvfp4_activations_and_weights(tmp_path, seed):
    """Every activation (input, fc1 -> relu -> fc2, output) and every weight in NVFP4: X_TS_EXP / Y_TS_EXP
    from the calibration, the bias in mxint8 (both activations are seed formats); bit-exact."""
    out, res = compile_with(tmp_path, NVFP4_ALL, "nv", seed=seed, parallelism=8)
    f = formats_of(res)
    assert f["fc1"]["out"].name == "nvfp4" and f["act"]["out"].ts_exp == f["fc1"]["out"].ts_exp
    assert f["fc1"]["bias"].name == "mxint8" and f["fc2"]["weight"].name == "nvfp4"
    build = json.loads((out / "masec_build.json").read_text())
    (inp,) = build["inputs"]
    assert inp["format"] == "nvfp4" and inp["tensor_scale_exp"] == f["x"]["out"].ts_exp
    fc1 = next(i for i in build["instances"] if i["name"] == "u_fc1")["params"]
    assert fc1["XFMT"] == 2 and fc1["X_TS_EXP"] == f["x"]["out"].ts_exp
    assert fc1["Y_QFMT"] == 2 and fc1["Y_TS_EXP"] == f["fc1"]["out"].ts_exp
    assert "s_t = 2^" in (out / "report" / "report.md").read_text()
    sim_ok(out, seed)


def test_mlp_anda_activations(tmp_path, seed):
    """anda4 on the input, fc1's output (through relu) and fc2's output; MX weights; bit-exact."""
    out, res = compile_with(tmp_path, ANDA_ALL, "anda", seed=seed, parallelism=8)
    assert {f["out"].name for f in formats_of(res).values() if "out" in f} == {"anda4"}
    sim_ok(out, seed)


def test_mlp_m2xfp_activations(tmp_path, seed):
    """m2xfp4_a on the input, fc1's output, through relu (mx_relu M2X) and on fc2's output; fc1's weight
    in m2xfp4_w (M2XFP x times M2XFP W); bit-exact."""
    out, res = compile_with(tmp_path, M2XFP_ALL, "m2x", seed=seed, parallelism=8)
    f = formats_of(res)
    assert {v["out"].name for v in f.values() if "out" in v} == {"m2xfp4_a"}
    assert f["fc1"]["weight"].name == "m2xfp4_w" and f["fc1"]["bias"].name == "mxint8"
    build = json.loads((out / "masec_build.json").read_text())
    assert build["outputs"][0]["data_bits"] == 8 * 4 + 2
    assert next(i for i in build["instances"] if i["name"] == "u_act")["params"]["M2X"] == 1
    sim_ok(out, seed)


def test_nvfp4_tensor_scale_is_calibrated_on_the_example_inputs(tmp_path):
    """ts_exp = nvfp4_tensor_scale_exp(amax of the float32 tensor on the example inputs); relu keeps it."""
    from masec.frontend import load_model_file

    _, res = compile_with(tmp_path, NVFP4_ALL, "nv_cal", parallelism=8)
    model, inputs = load_model_file(str(MLP), "model", "example_inputs")
    with torch.no_grad():
        h = model.fc1(inputs[0])
        y = model.fc2(torch.relu(h))
    f = formats_of(res)
    assert f["x"]["out"].ts_exp == nvfp4_tensor_scale_exp(float(inputs[0].abs().max()))
    assert f["fc1"]["out"].ts_exp == f["act"]["out"].ts_exp == nvfp4_tensor_scale_exp(float(h.abs().max()))
    assert f["fc2"]["out"].ts_exp == nvfp4_tensor_scale_exp(float(y.abs().max()))
    from masec.passes.transform.calibrate_tensor_scales import calibrate_tensor_scales
    assert calibrate_tensor_scales(res.gm, inputs) is False   # a second run changes nothing


def test_same_inputs_same_files(tmp_path):
    """Deterministic: two compiles of the same design write byte-identical trees."""
    a, _ = compile_with(tmp_path, NVFP4_ALL, "det_a", parallelism=8)
    b, _ = compile_with(tmp_path, NVFP4_ALL, "det_b", parallelism=8)
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert fa == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    differ = [str(p) for p in fa if (a / p).read_bytes() != (b / p).read_bytes()
              and (a / p).read_bytes().replace(b"det_a", b"det_b") != (b / p).read_bytes()]
    assert not differ, differ


# ---------------------------------------------------------------------------------- refusals
HEAD = """import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 32)
        self.fc2 = nn.Linear(32, 32)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc(x)) + x)


def model():
    torch.manual_seed(0)
    return Net()


def example_inputs():
    return (torch.randn(2, 32, generator=torch.Generator().manual_seed(1)),)
"""


def refused(tmp_path, toml, *needles, model=MLP, **kw):
    if model is None:
        model = tmp_path / "net.py"
        model.write_text(HEAD)
    with pytest.raises(MasecError) as exc:
        compile_with(tmp_path, toml, "bad", model=model, **kw)
    msg = str(exc.value)
    assert "\n" not in msg.strip(), msg
    for n in needles:
        assert n in msg, (n, msg)
    assert not (tmp_path / "bad").exists()


def test_seed_activation_read_by_a_non_linear_is_refused(tmp_path):
    """fc's output in anda4 feeds gelu: only a linear decodes it."""
    refused(tmp_path, '[default]\nact = "mxint8"\n[node."fc"]\nact = "anda4"\n',
            "(gelu", "`fc`", "anda4", "only a", "linear", model=None)


def test_seed_activation_made_by_a_non_linear_is_refused(tmp_path):
    refused(tmp_path, '[default]\nact = "mxint8"\n[op.gelu]\nact = "nvfp4"\n',
            "(gelu", "port out", "nvfp4", "made only by a linear", model=None)


def test_model_input_read_by_an_add_is_refused(tmp_path):
    """The model input in nvfp4 feeds fc and the residual add: the add cannot read it."""
    refused(tmp_path, '[default]\nact = "mxint8"\n[node."x"]\nact = "nvfp4"\n', "(add", "`x`", "nvfp4",
            model=None)


def test_seed_activation_as_a_weight_is_refused(tmp_path):
    refused(tmp_path, '[default]\nact = "mxint8"\n[op.linear]\nweight = "m2xfp4_a"\n',
            "node `fc1`", "m2xfp4_a", "built only for activations")


def test_m2xfp_needs_eight_lanes(tmp_path):
    refused(tmp_path, '[default]\nact = "mxint8"\n[node."x"]\nact = "m2xfp4_a"\n',
            "node `fc1` (linear", "multiple of 8", "--parallelism 8")


def test_anda_beyond_fifteen_bits_is_refused(tmp_path):
    refused(tmp_path, '[default]\nact = "mxint8"\n[node."x"]\nact = "anda16"\n', "`fc1`", "anda16",
            "does not decode")


def test_m2xfp_retile_is_refused(tmp_path):
    """fc makes m2xfp4_a with 8 lanes and fc2 is built for 16: masec has no M2XFP retile."""
    model = tmp_path / "chain.py"
    model.write_text(HEAD.replace("torch.nn.functional.gelu(self.fc(x)) + x", "self.fc(x)"))
    refused(tmp_path, '[default]\nact = "mxint8"\n[node."fc"]\nact = "m2xfp4_a"\nlanes = 8\n'
            '[node."fc2"]\nlanes = 16\n', "m2xfp4_a", "no retile", model=model, parallelism=8)


FORK = HEAD.replace("torch.nn.functional.gelu(self.fc(x)) + x", "self.fc(x) + self.fc2(x)")


@pytest.mark.slow
@pytest.mark.parametrize("act", ["m2xfp4_a", "anda4", "nvfp4"])
def test_seed_input_forked_into_two_linears(tmp_path, seed, act):
    """One model input in a seed activation format read by two linears: a stream_fork and FIFOs of its
    width (M2XFP: codes and metadata) carry it; bit-exact."""
    model = tmp_path / "fork.py"
    model.write_text(FORK)
    out, _ = compile_with(tmp_path, f'[default]\nact = "mxint8"\n[node."x"]\nact = "{act}"\n', f"fork_{act}",
                          model=model, seed=seed, parallelism=8)
    assert "stream_fork" in (out / "rtl" / "top.sv").read_text()
    sim_ok(out, seed)


@pytest.mark.slow
def test_m2xfp_design_through_the_axi_wrapper(tmp_path, seed):
    """AXI4-Stream TDATA carries an M2XFP stream's codes, metadata and scale (<top>_axi, cocotbext-axi)."""
    pytest.importorskip("cocotbext.axi")
    from masec.sim.axi_test import run_axi_test

    out, _ = compile_with(tmp_path, M2XFP_ALL, "m2x_axi", seed=seed, parallelism=8)
    res = run_axi_test(out, out / "axi_build", seed=seed)
    assert res.ok, res.message


VIEW = HEAD.replace("self.fc2 = nn.Linear(32, 32)", "self.fc2 = nn.Linear(16, 32)").replace(
    "self.fc2(torch.nn.functional.gelu(self.fc(x)) + x)", "self.fc2(torch.relu(self.fc(x)).view(2, 2, 16))")


@pytest.mark.slow
def test_m2xfp_through_a_view_that_splits_the_last_axis(tmp_path, seed):
    """fc -> relu -> view [2, 32] -> [2, 2, 16] -> fc2 in m2xfp4_a: the view shrinks the block to 16 and
    carries codes, scales and metadata over the same beats; bit-exact."""
    model = tmp_path / "view.py"
    model.write_text(VIEW)
    out, res = compile_with(tmp_path, '[default]\nact = "m2xfp4_a"\nweight = "mxint8"\n', "view", model=model,
                            seed=seed, parallelism=8)
    assert formats_of(res)["fc"]["out"] == TensorFormat("m2xfp4_a", 16)
    sim_ok(out, seed)
