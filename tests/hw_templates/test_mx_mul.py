"""mx_mul: model vs unbounded-integer reference and masec.formats, RTL vs model, lint."""
import pytest
import torch

from eltwise_helpers import FORMATS, eltwise_rtl_tests, model_equals_reference, operands
from masec.hw_templates.kernels.mx_eltwise import mul_me, mul_model, mul_widths
from masec.hw_templates.kernels.mx_relu import resolve_format


@pytest.mark.parametrize("nx", FORMATS)
def test_mul_model_equals_exact_product_quantized(nx):
    """Every output format, every y format: the model == the unbounded exact product, quantized; the
    product mantissa fits the documented width."""
    for fx, fy, (cx, sx, cy, sy) in model_equals_reference("mul", nx, seed=12):
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


RTL_CASES = [(("mxfp4", "mxfp8_e4m3", "mxint8"), 16, 4)]
SLOW_CASES = [(("mxint8", "mxint8", "mxint8"), 32, 8), (("mxfp8_e4m3", "mxfp8_e4m3", "mxfp4"), 32, 32),
              (("mxint4", "mxfp8_e5m2", "mxfp8_e4m3"), 32, 2)]

(build_cache, test_mul_rtl_matches_model, test_mul_rtl_matches_model_sweep, test_mul_rtl_check_can_fail,
 test_mul_lints_clean, test_mul_pipe_latency) = eltwise_rtl_tests("mul", RTL_CASES, SLOW_CASES)


def test_eltwise_latency_and_pipe_depth():
    from masec.hw_templates.kernels.mx_eltwise import MAX_PIPE, add_latency, mul_latency
    from masec.passes.hw.pipeline import pipe_depth
    assert [add_latency({"PIPE": p}) for p in range(MAX_PIPE + 1)] == [0, 3, 6, 10]
    assert [mul_latency({"PIPE": p}) for p in range(MAX_PIPE + 1)] == [0, 3, 6, 9]
    for k in ("mx_add", "mx_mul"):
        assert [pipe_depth(k, ns) for ns in (20.0, 10.0, 8.0, 4.0, 3.0, 2.0)] == [0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError):
        add_latency({"PIPE": MAX_PIPE + 1})
