"""mx_layernorm: model vs float reference (measured error), RTL vs bit-exact model under gaps/backpressure."""
import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels import mx_norm as M
from norm_helpers import compare_to_ideal, rtl_tests, simulate, stress_rows


def elem(name):
    return parse_format(name).element


def _params_row(el, n, b, gen, near_one):
    c, s = stress_rows(el, 1, n, b, gen)
    if near_one:  # trained gamma ~ 1, beta ~ 0.1
        s[0] = near_one + torch.randint(-2, 3, s[0].shape, generator=gen)
    return c[0], s[0]


# ----------------------------------------------------------------------------- model-level tests
@pytest.mark.parametrize("fmt,pfmt", [("mxint8", "mxint8"), ("mxfp8_e4m3", "mxfp8_e4m3"),
                                      ("mxfp4", "mxfp8_e4m3"), ("mxfp8_e5m2", "mxfp4")])
def test_lanes_match_float_layernorm(fmt, pfmt, seed):
    """Before the quantizer: |y - ref| <= 2^-12 * (|ref| + max|(x - mean) / std| * max|gamma| + max|beta|),
    maxima over the row: the alignment windows truncate (floor) 2^-19 .. 2^-23 below the largest
    operand of a beat, plus the rsqrt error (~2^-14.4 relative)."""
    gen = torch.Generator().manual_seed(seed)
    el, pel = elem(fmt), elem(pfmt)
    n, b, p = 72, 32, 8
    codes, scales = stress_rows(el, 12, n, b, gen)
    gc, gs = _params_row(pel, n, b, gen, 127)
    bc, bs = _params_row(pel, n, b, gen, 124)
    m, e = M.layernorm_lanes(codes, scales, el, gc, gs, pel, bc, bs, pel, n, lanes=p)
    got = M.lanes_to_float(m, e)[:, :n]
    x = M.mx_values(codes, scales, el)[:, :n]
    g = M.mx_values(gc, gs, pel)[:n]
    bt = M.mx_values(bc, bs, pel)[:n]
    ref = M.layernorm_reference(x, g, bt)
    xn = M.layernorm_reference(x, torch.ones_like(g), torch.zeros_like(bt))
    scale = ref.abs() + xn.abs().amax(-1, keepdim=True) * g.abs().max() + bt.abs().max()
    err = ((got - ref).abs() / scale.clamp_min(1e-300)).max().item()
    print(f"layernorm {fmt} params {pfmt}: max error {err:.3g} of (|ref| + max|xhat| max|gamma| + max|beta|)")
    assert err < 2 ** -12
    assert all(mi == 0 for row in m for mi in row[n:])


@pytest.mark.parametrize("n", [64, 40])
def test_constant_row_gives_beta(n):
    """var = 0: the output is beta. N a power of two: 1/N is exact, x - mean = 0 exactly and so is
    the output. Otherwise the mean is inexact and x - mean is its truncation to the DW-bit window
    (< 2^-(DW-2) |mean|), amplified by 1/sqrt(eps): the documented limit for |mean| / std > ~2^16."""
    el = elem("mxint8")
    b = 32
    nblk = -(-n // b)
    codes = torch.zeros(2, nblk, b, dtype=torch.int64)
    codes.view(2, -1)[:, :n] = 37
    scales = torch.tensor([[130] * nblk, [3] * nblk])
    gc = torch.full((nblk, b), 64)
    gs = torch.full((nblk,), 127)
    bc = torch.arange(nblk * b).reshape(nblk, b) % 50
    bc.view(-1)[n:] = 0
    bs = torch.full((nblk,), 120)
    m, e = M.layernorm_lanes(codes, scales, el, gc, gs, el, bc, bs, el, n, lanes=8)
    got = M.lanes_to_float(m, e)[:, :n]
    want = M.mx_values(bc, bs, el)[:n].expand_as(got)
    if n & (n - 1) == 0:
        assert torch.equal(got, want)
    else:
        x = M.mx_values(codes, scales, el)[:, :1]
        assert ((got - want).abs() <= 2.0 ** -(M.DW - 2) * x / 1e-5 ** 0.5).all()
        assert (got[1] == want[1]).all()  # tiny row: eps dominates, d / sqrt(eps) vanishes below beta's LSB


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4"])
def test_outputs_close_to_mx_quantized_float_reference(fmt, seed):
    """Output codes vs masec.formats' MX encoding of the float reference: equal for > 99% of the
    elements of typical rows; the rest one grid step apart (reference near a rounding boundary)."""
    gen = torch.Generator().manual_seed(seed)
    el, pel = elem(fmt), elem("mxfp8_e4m3")
    n, b = 64, 32
    codes, scales = stress_rows(el, 30, n, b, gen)
    scales[:] = 127 + torch.randint(-3, 4, scales.shape, generator=gen)
    gc, gs = _params_row(pel, n, b, gen, 127)
    bc, bs = _params_row(pel, n, b, gen, 124)
    oc, osc = M.layernorm_model(codes, scales, el, gc, gs, pel, bc, bs, pel, el, n, lanes=8)
    ref = M.layernorm_reference(M.mx_values(codes, scales, el), M.mx_values(gc, gs, pel), M.mx_values(bc, bs, pel))
    fo = parse_format(fmt, block_size=b)
    enc = fo.encode(ref.to(torch.float32))
    ec = enc.codes.to(torch.int64).reshape(oc.shape)
    es = enc.scales.to(torch.int64).reshape(osc.shape)
    compare_to_ideal(oc, osc, ec, es, el, f"layernorm {fmt}")


# ----------------------------------------------------------------------------- RTL tests
# (fmt_in, fmt_gamma, fmt_beta, fmt_out, N, P, B)
DEFAULT = ("mxint8", "mxfp8_e4m3", "mxint8", "mxfp4", 72, 4, 32)
SWEEP = [
    ("mxint8", "mxfp8_e4m3", "mxint8", "mxfp4", 72, 8, 32),
    ("mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3", 64, 4, 32),
    ("mxfp4", "mxint8", "mxfp4", "mxint8", 40, 32, 32),
    ("mxfp8_e5m2", "mxfp8_e5m2", "mxfp8_e5m2", "mxfp8_e4m3", 50, 2, 16),
    ("mxint8", "mxint8", "mxint8", "mxint8", 16, 16, 16),   # one beat per row
    ("mxint4", "mxfp4", "mxint8", "mxfp4", 100, 1, 32),
]


def _build_and_run(tmp, cfg, seed, pipe=0, rows=8):
    fi, fg, fb, fo, n, p, b = cfg
    el, gel, bel, oel = elem(fi), elem(fg), elem(fb), elem(fo)
    gen = torch.Generator().manual_seed(seed)
    codes, scales = stress_rows(el, rows, n, b, gen)
    gc, gs = _params_row(gel, n, b, gen, 0)
    bc, bs = _params_row(bel, n, b, gen, 0)
    oc, osc = M.layernorm_model(codes, scales, el, gc, gs, gel, bc, bs, bel, oel, n, lanes=p)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "gamma.mem").write_text(M.pack_gamma_mem(gc, gs, gel))
    (tmp / "beta.mem").write_text(M.pack_beta_mem(bc, bs, bel))
    params = M.sim_params("layernorm", n, el, gel, oel, p, b, gamma_mem=str(tmp / "gamma.mem"),
                          beta_mem=str(tmp / "beta.mem"), b_el=bel, pipe=pipe)
    return simulate(tmp, "mx_layernorm", params, seed, codes, scales, oc, osc, el, oel, p, b, rows)


def _lint_parameters(cfg, pipe):
    fi, fg, fb, fo, n, p, b = cfg
    return M.sim_params("layernorm", n, elem(fi), elem(fg), elem(fo), p, b, b_el=elem(fb), pipe=pipe)


# latency: 10 cycles statistics + 4 output stages + mx_quantize's block (B/P beats + 1), at PIPE 0;
# PIPE 0 and the deepest PIPE (M.layernorm_latency more)
(default_run, test_rtl_matches_model, test_check_can_fail, test_rtl_matches_model_sweep, test_lints_clean,
 test_pipeline_latency) = rtl_tests(
    "mx_layernorm", _build_and_run, DEFAULT, SWEEP, latency=16, lint_parameters=_lint_parameters,
    pipes=(0, M.MAX_PIPE), pipe_latency=M.layernorm_latency,
    sweep_id=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}-N{c[4]}-P{c[5]}-B{c[6]}",
    lint_id=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}-N{c[4]}-P{c[5]}")


def test_instance_config_matches_sim_params():
    ctx, params, module = M.instance_config("layernorm", 100, "mxint8", "mxint8", "mxfp8_e4m3", 4,
                                            fmt_beta="mxfp4", gamma_mem="g.mem", beta_mem="b.mem")
    assert ctx == {} and module == "mx_layernorm"
    assert params == M.sim_params("layernorm", 100, elem("mxint8"), elem("mxfp8_e4m3"), elem("mxint8"), 4, 32,
                                  gamma_mem="g.mem", beta_mem="b.mem", b_el=elem("mxfp4"))


def test_pipeline_latency_rule():
    assert [M.norm_latency("layernorm", p) for p in range(M.MAX_PIPE + 1)] == [0, 8, 14, 19]
    assert M.layernorm_latency({"PIPE": 1}) == 8 and M.layernorm_latency({}) == 0
