"""NVFP4 and the scale-less baselines (int, minifloat, bf16, fp32) against independent references."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from masec.formats import FormatError, parse_format, quantize
from masec.formats.baseline import IntFormat
from mx_oracle import REF_ELEMENTS, custom_fp, quantize_element, round_int


def bits32(t: torch.Tensor) -> torch.Tensor:
    t = t.to(torch.float32).contiguous()
    return torch.where(torch.isnan(t), torch.full_like(t, float("nan")), t).view(torch.int32)


def nasty(seed: int, n: int = 4096) -> torch.Tensor:
    """Normal values over many binades, float32 subnormals, exact zeros and ties on small grids."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.exp2(torch.randint(-30, 30, (n,), generator=g).float())
    x[::17] = torch.randint(-64, 64, x[::17].shape, generator=g).float() / 8  # many ties
    x[::31] = torch.randint(-(2**23), 2**23, x[::31].shape, generator=g).float() * 2.0 ** -149
    x[::53] = 0.0
    x[1::53] = -0.0
    return x


# ------------------------------------------------------------------------------ NVFP4
E2M1_GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def e2m1_rne(v: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 magnitude (ties to the even code), independent of masec: exact Fractions."""
    out = []
    for a in v.abs().reshape(-1).tolist():
        fa = Fraction(a)
        best = min(range(8), key=lambda i: (abs(Fraction(E2M1_GRID[i]) - fa), i % 2))
        out.append(E2M1_GRID[best])
    return torch.tensor(out, dtype=torch.float32).view(v.shape)


def torchao_nvfp4(x: torch.Tensor) -> torch.Tensor:
    """The torchao recipe (FORMATS.md §5) with torch's own float8_e4m3fn cast."""
    blocks = x.reshape(-1, 16)
    s_t = x.abs().amax() / (448.0 * 6.0)
    amax_b = blocks.abs().amax(-1)
    s_b = ((amax_b / 6.0) / s_t).clamp(2.0 ** -6, 448.0).to(torch.float8_e4m3fn).to(torch.float32)
    d = (blocks / (s_t * s_b).unsqueeze(-1)).clamp(-6.0, 6.0)
    q = torch.copysign(e2m1_rne(d), d)
    return ((q * s_b.unsqueeze(-1)) * s_t).reshape(x.shape) + 0.0


def test_nvfp4_matches_torchao_recipe(seed):
    g = torch.Generator().manual_seed(seed)
    block_scale = torch.exp2(torch.randint(-12, 12, (8, 4, 1), generator=g).float())
    x = (torch.randn(8, 4, 16, generator=g) * block_scale).view(8, 64)
    fmt = parse_format("nvfp4")
    assert fmt.block_size == 16 and fmt.bits_per_element == 4.5
    q = fmt.quantize(x)
    assert torch.equal(bits32(q), bits32(torchao_nvfp4(x)))
    enc = fmt.encode(x)
    assert enc.codes.shape == (8, 4, 16) and enc.scales.shape == (8, 4)
    assert int(enc.scales.max()) <= 0x7E and float(enc.meta["tensor_scale"]) == float(x.abs().amax() / 2688.0)
    assert torch.equal(bits32(fmt.decode(enc)), bits32(q))
    words = enc.pack()
    assert len(words) == 32 and words[0] >> 64 == enc.scales[0, 0]


def test_nvfp4_edge_cases():
    fmt = parse_format("nvfp4")
    z = torch.zeros(2, 16)
    z[0, 3] = -0.0
    q = fmt.quantize(z)
    assert torch.equal(q.view(torch.int32), torch.zeros(2, 16, dtype=torch.int32))
    x = torch.randn(2, 32)
    x[1, 5] = float("inf")
    assert torch.isnan(fmt.quantize(x)).all()
    assert torch.isnan(fmt.decode(fmt.encode(x))).all()
    # partial block along the last axis is zero-padded
    y = torch.randn(3, 20)
    assert torch.equal(fmt.decode(fmt.encode(y)), fmt.quantize(y))


# ---------------------------------------------------------------------------- bf16 / fp32
def test_bf16_even_matches_torch_cast():
    x = nasty(1)
    x = torch.cat([x, torch.tensor([3.4e38, -3.4e38, float("inf"), float("-inf"), float("nan"), 1e-45, -0.0])])
    q = parse_format("bf16").quantize(x)
    assert torch.equal(bits32(q), bits32(x.to(torch.bfloat16).to(torch.float32)))
    enc = parse_format("bf16").encode(x)
    assert int(enc.codes.max()) < 1 << 16 and torch.equal(bits32(parse_format("bf16").decode(enc)), bits32(q))


def test_bf16_trunc_and_away():
    x = nasty(2)
    t = parse_format("bf16", rounding="trunc").quantize(x)
    assert torch.equal(t.view(torch.int32), x.view(torch.int32) & ~0xFFFF)
    a = parse_format("bf16", rounding="away").quantize(x)
    for xi, ai in zip(x.tolist()[:500], a.tolist()[:500]):
        fx = Fraction(xi)
        lo = Fraction(torch.tensor(xi).view(torch.int32).bitwise_and(~0xFFFF).view(torch.float32).item())
        if fx == lo:
            assert ai == xi
            continue
        hi_bits = (torch.tensor(xi).view(torch.int32) & ~0xFFFF) + 0x10000
        hi = Fraction(hi_bits.view(torch.float32).item())
        want = hi if abs(fx - lo) >= abs(hi - fx) else lo
        assert Fraction(ai) == want, (xi, ai)


def test_fp32_identity_and_codes():
    x = nasty(3)
    fmt = parse_format("fp32")
    assert torch.equal(bits32(fmt.quantize(x)), bits32(x)) and fmt.bits_per_element == 32
    enc = fmt.encode(x)
    assert int(enc.codes.min()) >= 0 and torch.equal(bits32(fmt.decode(enc)), bits32(x))


# ------------------------------------------------------------------------------ minifloat
@pytest.mark.parametrize("name,torch_dtype", [("fp_e4m3", torch.float8_e4m3fn), ("fp_e5m2", torch.float8_e5m2)])
def test_minifloat_matches_torch_fp8_in_range(name, torch_dtype):
    fmt = parse_format(name)
    x = nasty(4)
    x = x[x.abs() <= fmt.element.max_normal]
    ref = x.to(torch_dtype).to(torch.float32) + 0.0
    assert torch.equal(bits32(fmt.quantize(x)), bits32(ref))


@pytest.mark.parametrize("name,ref", [("fp_e4m3", REF_ELEMENTS["fp8_e4m3"]), ("fp_e2m1", REF_ELEMENTS["fp4_e2m1"]),
                                      ("fp_e3m2", REF_ELEMENTS["fp6_e3m2"]), ("fp_e3m4", custom_fp(3, 4))])
@pytest.mark.parametrize("rounding", ["even", "away", "trunc"])
def test_minifloat_matches_oracle(name, ref, rounding):
    fmt = parse_format(name, rounding=rounding)
    x = nasty(5, 1500) * (ref.max_normal.numerator / ref.max_normal.denominator / 4)
    x = torch.cat([x, torch.tensor([1e30, -1e30, float("inf"), float("-inf")])])
    q = fmt.quantize(x)
    want = [float(quantize_element(Fraction(v), ref, rounding)) if abs(v) != float("inf")
            else (1 if v > 0 else -1) * float(ref.max_normal) for v in x.tolist()]
    assert torch.equal(bits32(q), bits32(torch.tensor(want)))
    assert torch.equal(bits32(fmt.decode(fmt.encode(x))), bits32(q))


def test_minifloat_nan():
    assert torch.isnan(parse_format("fp_e4m3").quantize(torch.tensor([float("nan")]))).all()
    enc = parse_format("fp_e4m3").encode(torch.tensor([float("nan"), 1.0]))
    assert enc.codes.tolist() == [0x7F, 0x38]
    with pytest.raises(FormatError, match="no NaN"):
        parse_format("fp_e2m1").encode(torch.tensor([float("nan")]))


# ----------------------------------------------------------------------------------- int
@pytest.mark.parametrize("rounding", ["even", "away", "trunc"])
def test_int_per_tensor_and_channel_vs_fractions(rounding):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(6, 40, generator=g) * torch.exp2(torch.arange(6).float()).unsqueeze(1)
    x[0, :8] = torch.tensor([0.5, 1.5, 2.5, -2.5, -0.5, 0.0, -0.0, 3.5]) * float(x[0].abs().max()) / 127
    for name in ("int8", "int8_ch", "int4", "int4_ch"):
        fmt = parse_format(name, rounding=rounding)
        bits = fmt.bits
        qmax = 2 ** (bits - 1) - 1
        q = fmt.quantize(x)
        rows = x.tolist()
        amax = [max(abs(v) for v in r) for r in rows]
        if not fmt.per_channel:
            amax = [max(amax)] * len(rows)
        for r, am, qr in zip(rows, amax, q.tolist()):
            s = Fraction(torch.tensor(am / qmax, dtype=torch.float32).item())
            assert Fraction(float(torch.tensor(am) / qmax)) == s  # fl32(amax / qmax)
            for v, got in zip(r, qr):
                k = min(round_int(abs(Fraction(v)) / s, rounding), qmax)
                want = float(torch.tensor(float((-k if v < 0 else k) * s), dtype=torch.float32))
                assert got == want + 0.0 and str(got) != "-0.0", (name, v, got, want)
        enc = fmt.encode(x)
        assert not (enc.codes == 1 << (bits - 1)).any()
        assert torch.equal(bits32(fmt.decode(enc)), bits32(q))
    assert parse_format("int8_ch").encode(x).scales.shape == (6, 1)


def test_int_fixed_point():
    fmt = parse_format("int8_f6")
    assert fmt.name == "int8_f6" and fmt.bits_per_element == 8
    x = torch.tensor([0.0078125, 0.0234375, 1.99, 2.5, -3.0, -0.001, 1e9, float("-inf")])
    # ties to even at 1/128 -> 0 and 3/128 -> 2/64; saturation at 127/64
    assert fmt.quantize(x).tolist() == [0.0, 0.03125, 1.984375, 1.984375, -1.984375, 0.0, 1.984375, -1.984375]
    assert str(fmt.quantize(torch.tensor([-0.001])).item()) == "0.0"
    enc = fmt.encode(x)
    assert torch.equal(fmt.decode(enc), fmt.quantize(x))
    assert parse_format("int4_f0").quantize(torch.tensor([6.6, -9.0])).tolist() == [7.0, -7.0]
    with pytest.raises(FormatError):
        IntFormat(8, frac_bits=3, per_channel=True)


def test_int_nan_poisons_scale_group():
    x = torch.randn(3, 8)
    x[1, 2] = float("nan")
    q = parse_format("int8_ch").quantize(x)
    assert torch.isnan(q[1]).all() and not torch.isnan(q[0]).any()
    assert torch.isnan(parse_format("int8").quantize(x)).all()
    assert torch.equal(parse_format("int8").quantize(torch.zeros(4)), torch.zeros(4))


def test_public_quantize_names():
    x = torch.randn(4, 64)
    for name in ("nvfp4", "int8", "int8_ch", "int8_f6", "fp_e4m3", "bf16", "fp32", "m2xfp4", "m2xfp4_a",
                 "bitmod_fp4", "bitmod_fp3", "anda4"):
        fmt = parse_format(name)
        assert torch.equal(bits32(quantize(x, name)), bits32(fmt.quantize(x)))
        assert parse_format(fmt.name) == fmt  # canonical names parse back
        assert fmt.quantize(x).shape == x.shape and fmt.quantize(x).dtype == torch.float32
