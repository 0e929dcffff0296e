"""mx_add: model vs unbounded-integer reference and masec.formats, RTL vs model, lint."""
import pytest
import torch

from eltwise_helpers import FORMATS, eltwise_rtl_tests, model_equals_reference, operands
from masec.hw_templates.kernels.mx_eltwise import add_me, add_model, add_widths, reference_model
from masec.hw_templates.kernels.mx_relu import resolve_format


# ------------------------------------------------------------------------------ model tests
@pytest.mark.parametrize("nx", FORMATS)
def test_add_model_equals_exact_sum_quantized(nx):
    """Every output format, every y format: the bounded-width model == the unbounded exact sum, quantized."""
    model_equals_reference("add", nx, seed=11)


@pytest.mark.parametrize("names", [("mxint8", "mxint8", "mxint8"), ("mxfp8_e4m3", "mxint8", "mxfp4"),
                                   ("mxfp4", "mxfp4", "mxfp8_e4m3"), ("mxint4", "mxfp8_e5m2", "mxint8")])
def test_add_sticky_boundary(names):
    """Exponent distances around the exact-alignment limit SH (d = SH-2 .. SH+W+3) and exact cancellation."""
    fx, fy, fo = (resolve_format(n, 32) for n in names)
    wd = add_widths(fx.element, fy.element, fo.element)
    gen = torch.Generator().manual_seed(5)
    cx, sx, cy, sy = operands(fx, fy, 64, gen, close_scales=0.0)
    base = torch.randint(40, 200, (64,), generator=gen)
    offs = torch.arange(64) % (wd["SH"] + wd["W"] + 6) - 2
    sx, sy = base, (base - offs).clamp(0, 254)
    got = add_model(cx, sx, fx.element, cy, sy, fy.element, fo.element)
    ref = reference_model("add", cx, sx, fx.element, cy, sy, fy.element, fo.element)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    m, _ = add_me(cx, sx, fx.element, cy, sy, fy.element, fo.element)
    assert int(m.abs().max()) < 2 ** (wd["MW"] - 1)  # the documented width holds
    if names[0] == names[1]:  # x + (-x) == 0 exactly (int: without the -2.0 code, which has no negation)
        if fx.element.kind == "int":
            cx = torch.where(cx == 1 << (fx.element.bits - 1), 0, cx)
        neg = torch.where(cx == 0, cx, cx ^ (1 << (fx.element.bits - 1))) if fx.element.kind == "fp" \
            else (-cx) & ((1 << fx.element.bits) - 1)
        z, _ = add_model(cx, sx, fx.element, neg, sx, fx.element, fo.element)
        assert int(z.count_nonzero()) == 0


@pytest.mark.parametrize("names", [("mxint8", "mxfp8_e4m3", "mxint8"), ("mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3"),
                                   ("mxfp4", "mxint8", "mxfp4")])
def test_add_model_matches_masec_formats(names):
    """Where the float64 sum is exactly a float32 number, the model == MXFormat.encode of the float sum."""
    fx, fy, fo = (resolve_format(n, 32) for n in names)
    gen = torch.Generator().manual_seed(3)
    cx, sx, cy, sy = operands(fx, fy, 64, gen, close_scales=1.0)
    sx, sy = sx.clamp(60, 190), sy.clamp(60, 190)   # float32 normal range after the sum
    v = fx.decode_codes(cx, sx).double() + fy.decode_codes(cy, sy).double()
    exact = (v.float().double() == v).all(dim=-1)
    assert int(exact.sum()) > 32
    enc = fo.encode(v[exact].float().reshape(-1))
    got = add_model(cx[exact], sx[exact], fx.element, cy[exact], sy[exact], fy.element, fo.element)
    assert torch.equal(got[0], enc.codes.to(torch.int64).reshape(got[0].shape))
    assert torch.equal(got[1], enc.scales.to(torch.int64).reshape(got[1].shape))


# ------------------------------------------------------------------------------ RTL tests
# one default build covers an fp8 and an int operand and an fp4 result
RTL_CASES = [(("mxfp8_e4m3", "mxint8", "mxfp4"), 32, 8)]
SLOW_CASES = [(("mxint8", "mxint8", "mxint8"), 32, 4), (("mxfp4", "mxfp4", "mxfp8_e4m3"), 32, 32),
              (("mxfp8_e5m2", "mxint4", "mxint8"), 16, 1), (("mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3"), 16, 16)]

(build_cache, test_add_rtl_matches_model, test_add_rtl_matches_model_sweep, test_add_rtl_check_can_fail,
 test_add_lints_clean, test_add_pipe_latency) = eltwise_rtl_tests("add", RTL_CASES, SLOW_CASES)
