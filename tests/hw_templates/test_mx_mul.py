"""mx_mul: model vs unbounded-integer reference and masec.formats, RTL vs model, lint."""
import pytest
import torch

from masec.hw_templates.kernels.mx_eltwise import instance_config, mul_me, mul_model, mul_widths, reference_model
from masec.hw_templates.kernels.mx_relu import resolve_format
from masec.hw_templates.render import render_with_deps
from masec.sim.runner import lint
from test_mx_add import FORMATS, lint_params, make_build_cache, operands, run_eltwise_rtl


@pytest.mark.parametrize("nx", FORMATS)
def test_mul_model_equals_exact_product_quantized(nx):
    gen = torch.Generator().manual_seed(12)
    for ny in FORMATS:
        for no in FORMATS:
            fx, fy, fo = (resolve_format(n, 32) for n in (nx, ny, no))
            cx, sx, cy, sy = operands(fx, fy, 24, gen)
            got = mul_model(cx, sx, fx.element, cy, sy, fy.element, fo.element)
            ref = reference_model("mul", cx, sx, fx.element, cy, sy, fy.element, fo.element)
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]), (nx, ny, no)
            m, _ = mul_me(cx, sx, fx.element, cy, sy, fy.element)
            assert int(m.abs().max()) < 2 ** (mul_widths(fx.element, fy.element)["MW"] - 1)


@pytest.mark.parametrize("names", [("mxint8", "mxfp8_e4m3", "mxint8"), ("mxfp4", "mxfp4", "mxfp8_e4m3"),
                                   ("mxfp8_e4m3", "mxfp8_e4m3", "mxfp4")])
def test_mul_model_matches_masec_formats(names):
    """Where the product is a float32 number (always, for scales near 127), model == MXFormat.encode(x*y)."""
    fx, fy, fo = (resolve_format(n, 32) for n in names)
    gen = torch.Generator().manual_seed(4)
    cx, sx, cy, sy = operands(fx, fy, 64, gen)
    sx, sy = sx.clamp(100, 150), sy.clamp(100, 150)
    v = fx.decode_codes(cx, sx).double() * fy.decode_codes(cy, sy).double()
    assert torch.equal(v.float().double(), v)
    enc = fo.encode(v.float().reshape(-1))
    got = mul_model(cx, sx, fx.element, cy, sy, fy.element, fo.element)
    assert torch.equal(got[0], enc.codes.to(torch.int64).reshape(got[0].shape))
    assert torch.equal(got[1], enc.scales.to(torch.int64).reshape(got[1].shape))


@pytest.fixture(scope="module")
def build_cache(tmp_path_factory):
    return make_build_cache(tmp_path_factory, "mx_mul")


RTL_CASES = [(("mxfp4", "mxfp8_e4m3", "mxint8"), 16, 4)]
SLOW_CASES = [(("mxint8", "mxint8", "mxint8"), 32, 8), (("mxfp8_e4m3", "mxfp8_e4m3", "mxfp4"), 32, 32),
              (("mxint4", "mxfp8_e5m2", "mxfp8_e4m3"), 32, 2)]


@pytest.mark.parametrize("names,block,lanes", RTL_CASES)
def test_mul_rtl_matches_model(build_cache, seed, names, block, lanes):
    run_eltwise_rtl(build_cache, "mul", names, block, lanes, seed)


@pytest.mark.slow
@pytest.mark.parametrize("names,block,lanes", SLOW_CASES)
def test_mul_rtl_matches_model_sweep(build_cache, seed, names, block, lanes):
    run_eltwise_rtl(build_cache, "mul", names, block, lanes, seed)


def test_mul_rtl_check_can_fail(build_cache, seed):
    names, block, lanes = RTL_CASES[0]
    res = run_eltwise_rtl(build_cache, "mul", names, block, lanes, seed, mutate=True)
    assert not res.ok and "beat 3" in res.message


@pytest.mark.parametrize("names,block,lanes", RTL_CASES + SLOW_CASES)
def test_mul_lints_clean(tmp_path, names, block, lanes):
    fx, fy, fo = (resolve_format(n, block) for n in names)
    _, params, top = instance_config((1, block), fx, fy, fo, lanes, op="mul")
    files = render_with_deps("mx_mul", tmp_path)
    lint(files, top)
    lint_params(files, top, params)
