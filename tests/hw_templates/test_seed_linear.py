"""mx_linear with seed-format weights (M2XFP, NVFP4, BitMoD fp4/fp3): model vs exact / format
library, RTL vs model under random gaps and backpressure with scale and metadata extremes."""
import random
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.formats.element import FP4_E2M1, int_element
from masec.hw_templates.kernels.mx_linear import (
    MAX_PIPE, WeightImage, anda_as_mx, decode_x_stream, fp32_sig_exp, ideal_cycles, instance_config, latency,
    linear_accumulators, linear_model, pack_bias_mem, quantize_rows_format, pack_seed_weight_mem, pack_weight_mem, seed_exact_weights,
    seed_linear_accumulators, seed_linear_model, stream_widths, weight_image, x_stream_format,
)
from masec.hw_templates.kernels.mx_quantize import nvfp4_tensor_scale_exp, output_format_params
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile, pack_lanes
from mx_helpers import write_multi_top
from test_mx_linear import fmt, random_mx

W_NAMES = {"m2xfp": "m2xfp4_w", "nvfp4": "nvfp4", "bitmod4": "bitmod_fp4", "bitmod3": "bitmod_fp3"}


def wfmt_of(kind: str, block: int):
    """The weight format of a test kind; BitMoD keeps its group of 128 (x's block divides it)."""
    if kind.startswith("bitmod"):
        return parse_format(W_NAMES[kind], block_size=128 if block <= 128 else block)
    return parse_format(W_NAMES[kind], block_size=block)


def random_image(rng: random.Random, kind: str, out: int, IN: int, B: int) -> WeightImage:
    """Random weight ROM content with the extremes: scale min/max (incl. NVFP4 scale 0 and subnormal
    FP16 scales), every M2XFP metadata value and all-3 subgroups, every BitMoD type, all-zero and
    all-max-magnitude blocks; inputs beyond IN are zero codes."""
    nb = -(-IN // B)
    bits = 3 if kind == "bitmod3" else 4
    codes = torch.zeros(out, nb, B, dtype=torch.int64)
    scales = torch.zeros(out, nb, dtype=torch.int64)
    for o in range(out):
        for b in range(nb):
            k = rng.random()
            if k < 0.06:
                blk = [0] * B
            elif k < 0.14:
                top = (1 << (bits - 1)) - 1
                blk = [rng.choice([top, top | (1 << (bits - 1))]) for _ in range(B)]
            else:
                blk = [rng.randrange(1 << bits) if rng.random() < 0.85 else 0 for _ in range(B)]
            codes[o, b] = torch.tensor(blk)
            sk = rng.random()
            if kind == "nvfp4":
                scales[o, b] = 0 if sk < 0.04 else rng.randint(1, 3) if sk < 0.1 else 126 if sk < 0.16 \
                    else rng.randint(40, 90)
            elif kind.startswith("bitmod"):
                scales[o, b] = rng.randint(1, 40) if sk < 0.08 else 0x7BFF if sk < 0.14 else rng.randint(0x1000, 0x5000)
            else:
                scales[o, b] = rng.randint(0, 4) if sk < 0.08 else rng.randint(250, 254) if sk < 0.16 \
                    else rng.randint(112, 140)
    codes.reshape(out, -1)[:, IN:] = 0
    if kind == "m2xfp":
        meta = torch.tensor([[[rng.choice([0, 1, 2, 3, 3]) for _ in range(B // 8)] for _ in range(nb)]
                             for _ in range(out)], dtype=torch.int64)
        return WeightImage("m2xfp", FP4_E2M1, codes, scales, meta)
    if kind == "nvfp4":
        ts = rng.choice([2.0 ** -20 * (1 + rng.random()), 1.0, float(torch.tensor(0.8125e-3)),
                         float(torch.tensor(1.0 - 2 ** -24))])
        sig, ex = fp32_sig_exp(ts)
        return WeightImage("nvfp4", FP4_E2M1, codes, scales, None, sig, ex)
    G = 128 if B <= 128 else B
    r = G // B
    # one scale and type id per group, repeated on its blocks
    scales = scales[:, ::r].repeat_interleave(r, dim=1)[:, :nb]
    tid = torch.tensor([[rng.randrange(4) for _ in range(-(-nb // r))] for _ in range(out)],
                       dtype=torch.int64).repeat_interleave(r, dim=1)[:, :nb]
    return WeightImage("bitmod", int_element(bits), codes, scales, tid, group=G)


def x_values(xc, xs, el):
    vals = el.value_table()
    return [[Fraction(float(vals[int(c)])) * Fraction(2) ** (int(s) - 127) for blk, s in zip(rc, rs)
             for c in blk] for rc, rs in zip(xc.tolist(), xs.tolist())]


# ----------------------------------------------------------------------------- model tests
@pytest.mark.parametrize("kind", list(W_NAMES))
def test_seed_accumulators_vs_exact(kind, seed):
    """The model's accumulators equal the exact rational x W^T + b (W decoded from the format
    definitions, not the RTL decode) up to one accumulator ulp per block step (+2 for NVFP4's
    tensor-scale and bias steps)."""
    rng = random.Random(seed)
    B, IN, OUT, T = 32, 72, 10, 4
    x_el = fmt("mxint8").element
    xc, xs = random_mx(rng, x_el, T, -(-IN // B), B, IN)
    xs.clamp_(100, 150)
    img = random_image(rng, kind, OUT, IN, B)
    bc, bs = random_mx(rng, x_el, 1, 1, 32, OUT)
    A, X = seed_linear_accumulators(xc, xs, x_el, img, bc[0], bs[0], x_el)
    wv = seed_exact_weights(img)
    xv = x_values(xc, xs, x_el)
    bvals = x_values(bc, bs, x_el)[0]
    nb = xc.shape[1]
    for t in range(T):
        for o in range(OUT):
            ex = sum(a * b for a, b in zip(xv[t], wv[o])) + bvals[o]
            got = Fraction(A[t][o]) * Fraction(2) ** X[t][o]
            assert abs(got - ex) <= (nb + 3) * Fraction(2) ** X[t][o], (t, o)


@pytest.mark.parametrize("kind", list(W_NAMES))
def test_weight_image_decodes_as_the_format_library(kind):
    """The integer decode of the ROM (what the RTL multiplies) times the block / tensor scales is the
    format library's dequantized weight: exactly for M2XFP and BitMoD, within float32 rounding for
    NVFP4 (the library rounds q*s_b and then *s_t to float32)."""
    g = torch.Generator().manual_seed(7)
    W = torch.randn(12, 256, generator=g) * 0.05
    W[3, :40] = 0.0
    W[5, 7] = 3.0
    f = wfmt_of(kind, 16 if kind == "nvfp4" else 32)
    img = weight_image(f, f.encode(W), 16 if kind == "nvfp4" else 32, 256)
    ref = f.quantize(W).to(torch.float64)
    got = torch.tensor([[float(v) for v in r] for r in seed_exact_weights(img)], dtype=torch.float64)
    if kind == "nvfp4":
        assert torch.allclose(got, ref, rtol=2 ** -22, atol=0)
    else:
        assert torch.equal(got, ref)


@pytest.mark.parametrize("kind", list(W_NAMES))
def test_model_vs_fake_quantized_float_linear(kind, seed):
    """End to end on floats: the model's outputs (before output quantization) vs the float linear
    x_q @ W_q^T + b_q with the format library's fake-quantized operands: relative error of the
    accumulators <= 2^-10 (bounded floating accumulator), and the output codes equal MX-quantizing
    that float result except where it lies within an accumulator ulp of a rounding boundary (<= 5%)."""
    torch.manual_seed(seed % 100000)
    T, IN, OUT, B = 5, 256, 24, 32 if kind != "nvfp4" else 16
    x = torch.randn(T, IN)
    W = torch.randn(OUT, IN) / 16
    b = torch.randn(OUT) / 8
    xf = parse_format("mxint8", block_size=B)
    wf = wfmt_of(kind, B)
    xe, we, be = xf.encode(x), wf.encode(W), xf.encode(b)
    img = weight_image(wf, we, B, IN)
    A, X = seed_linear_accumulators(xe.codes.to(torch.int64).reshape(T, -1, B), xe.scales.to(torch.int64),
                                    xf.element, img, be.codes.to(torch.int64), be.scales.to(torch.int64),
                                    xf.element)
    acc = torch.tensor(A, dtype=torch.float64) * torch.pow(2.0, torch.tensor(X, dtype=torch.float64))
    ref = xf.quantize(x).double() @ wf.quantize(W).double().t() + xf.quantize(b).double()
    rel = float((acc - ref).abs().max() / ref.abs().max())
    print(f"{kind}: max |acc - float linear| / max|y| = {rel:.3g}")
    assert rel <= 2 ** -10


def random_anda(rng: random.Random, mbits: int, rows: int, nb: int, G: int, valid: int):
    """Random Anda x: codes sign<<M | k with all-zero and all-max groups, S in 0..30 incl. the extremes."""
    c = torch.zeros(rows, nb, G, dtype=torch.int64)
    s = torch.zeros(rows, nb, dtype=torch.int64)
    top = (1 << mbits) - 1
    for r in range(rows):
        for b in range(nb):
            k = rng.random()
            blk = [0] * G if k < 0.06 else [top | (rng.randrange(2) << mbits) for _ in range(G)] if k < 0.14 else \
                [rng.randrange(1 << (mbits + 1)) for _ in range(G)]
            c[r, b] = torch.tensor(blk)
            sk = rng.random()
            s[r, b] = rng.choice([0, 1]) if sk < 0.1 else rng.choice([29, 30]) if sk < 0.2 else rng.randint(10, 20)
    c.reshape(rows, -1)[:, valid:] = 0
    return c, s


@pytest.mark.parametrize("mbits", [1, 4, 7, 15])
def test_anda_decode_is_the_format_library(mbits):
    """Anda codes read as (two's complement int of M+1 bits, scale S + 112) decode to exactly the
    values of masec.formats' AndaFormat.decode."""
    f = parse_format(f"anda{mbits}")
    g = torch.Generator().manual_seed(mbits)
    x = torch.randn(6, 128, generator=g) * torch.logspace(-6, 4, 6).unsqueeze(-1)
    x[2, :64] = 0.0
    enc = f.encode(x)
    tc, sc, el = anda_as_mx(enc.codes, enc.scales, mbits)
    vals = el.value_table().to(torch.float64)[tc] * torch.pow(2.0, (sc - 127).to(torch.float64)).unsqueeze(-1)
    assert torch.equal(vals.reshape(6, 128).to(torch.float32), f.decode(enc))


def xterm_values(xt) -> torch.Tensor:
    """float64 values of :class:`XTerms` (elem value * sig * 2^(exps - 127)), exact for these ranges."""
    v = xt.elem.value_table().to(torch.float64)[xt.codes]
    sig = torch.ones_like(xt.exps) if xt.sig is None else xt.sig
    return v * (sig.to(torch.float64) * torch.pow(2.0, (xt.exps - 127).to(torch.float64))).unsqueeze(-1)


def test_m2xfp_act_decode_is_the_format_library():
    """The M2XFP activation stream read as mx_linear decodes it (top-1 lane refined through its
    metadata, int7 lanes in units of 2^-3, scale S + 2) is exactly M2XFPActivationFormat.decode,
    including ties for the top-1, refined zeros and E8M0 extremes."""
    f = parse_format("m2xfp4_a")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 256, generator=g) * torch.logspace(-30, 30, 8).unsqueeze(-1)
    x[1, :40] = 0.0
    x[2, 8:16] = 1.0                                   # ties: all eight lanes equal
    x[3, 16:24] = torch.tensor([0.1, 0.2, 0.15, 0.05, 0.0, 4.0, 0.0, 0.0])
    x[4] = x[4] * 2.0 ** -100
    enc = f.encode(x)
    xt = decode_x_stream(f, enc.codes.reshape(8, -1, 32), enc.scales.reshape(8, -1),
                         enc.meta["subgroup_meta"].reshape(8, -1, 4))
    assert torch.equal(xterm_values(xt).reshape(8, 256).to(torch.float32), f.decode(enc))


@pytest.mark.parametrize("t", [-20, -3, 0, 7])
def test_nvfp4_act_decode_is_the_format_library(t):
    """NVFP4 x with the power-of-two tensor scale 2^t read as mx_linear decodes it (E2M1 lanes, UE4M3
    significand multiplied into the block sum, offset + t + 118 as x's exponent) is exactly
    NVFP4Format.decode of the same codes with tensor scale 2^t, every UE4M3 code 0..126 included."""
    import dataclasses

    f = parse_format("nvfp4")
    codes = (torch.arange(127 * 16, dtype=torch.int64) * 7).remainder(16).reshape(127, 16)
    scales = torch.arange(127, dtype=torch.int64)
    like = f.encode(torch.ones(127, 16))
    enc = dataclasses.replace(like, codes=codes.to(like.codes.dtype).reshape(like.codes.shape),
                              scales=scales.to(like.scales.dtype).reshape(like.scales.shape),
                              meta={"tensor_scale": torch.tensor(2.0 ** t)})
    xt = decode_x_stream(f, codes.unsqueeze(0), scales.unsqueeze(0), None, t)
    assert torch.equal(xterm_values(xt).reshape(127, 16).to(torch.float32), f.decode(enc))


@pytest.mark.parametrize("xf", ["m2xfp4_a", "nvfp4:-6", "anda5"])
@pytest.mark.parametrize("kind", ["mxint8", "nvfp4", "m2xfp"])
def test_seed_x_accumulators_vs_exact(xf, kind, seed):
    """With a seed-format x, the model's accumulators equal the exact rational x W^T + b (x from the
    format definitions: :func:`xterm_values`, checked against the library above) within one
    accumulator ulp per block step (+2 for NVFP4 W's tensor-scale and bias steps)."""
    rng = random.Random(seed)
    B = 16 if "nvfp4" in (kind, xf[:5]) else 32
    IN, OUT, T = 5 * B // 2, 8, 3
    nb = -(-IN // B)
    x_fmt, x_ts = stream_fmt(xf, B)
    xc, xs, meta = random_x_stream(rng, xf, x_fmt, T, nb, B, IN)
    xt = decode_x_stream(x_fmt, xc, xs, meta, x_ts)
    xv = [[Fraction(float(v)) for v in r] for r in xterm_values(xt).reshape(T, -1).tolist()]
    b_el = fmt("mxint8").element
    bc, bs = random_mx(rng, b_el, 1, 1, 32, OUT)
    bs.clamp_(100, 150)
    bvals = x_values(bc, bs, b_el)[0]
    if kind.startswith("mx"):
        w_el = fmt(kind).element
        wc, ws = random_mx(rng, w_el, OUT, nb, B, IN)
        ws.clamp_(100, 150)
        A, X = linear_accumulators_(xt, wc, ws, w_el, bc[0], bs[0], b_el)
        wv = x_values(wc, ws, w_el)
    else:
        img = random_image(rng, kind, OUT, IN, B)
        A, X = seed_linear_accumulators(xt.codes, xt.exps, xt.elem, img, bc[0], bs[0], b_el, x_sig=xt.sig)
        wv = seed_exact_weights(img)
    for t in range(T):
        for o in range(OUT):
            ex = sum(a * b for a, b in zip(xv[t], wv[o])) + bvals[o]
            got = Fraction(A[t][o]) * Fraction(2) ** X[t][o]
            assert abs(got - ex) <= (nb + 3) * Fraction(2) ** X[t][o], (t, o)


def linear_accumulators_(xt, wc, ws, w_el, bc, bs, b_el):
    from masec.hw_templates.kernels.mx_linear import linear_accumulators
    return linear_accumulators(xt.codes, xt.exps, xt.elem, wc, ws, w_el, bc, bs, b_el, x_sig=xt.sig)


def test_model_wrappers_forward_the_output_format(seed):
    """linear_model / seed_linear_model with a seed y_qfmt are the accumulators through
    quantize_rows_format (what the RTL tests compare against), metadata included."""
    rng = random.Random(seed)
    x_el = fmt("mxint8").element
    xc, xs = random_mx(rng, x_el, 3, 2, 32, 64)
    wc, ws = random_mx(rng, x_el, 16, 2, 32, 64)
    A, X = seed_linear_accumulators(xc, xs, x_el, random_image(random.Random(seed), "m2xfp", 16, 64, 32))
    got = seed_linear_model(xc, xs, x_el, random_image(random.Random(seed), "m2xfp", 16, 64, 32), None, None,
                            None, FP4_E2M1, 16, y_qfmt=1)
    want = quantize_rows_format(A, X, 1, FP4_E2M1, 16)
    assert all(torch.equal(g, w) for g, w in zip(got, want)) and got[2].shape == (3, 1, 2)
    from masec.hw_templates.kernels.mx_linear import linear_accumulators as la
    A, X = la(xc, xs, x_el, wc, ws, x_el)
    got = linear_model(xc, xs, x_el, wc, ws, x_el, None, None, int_element(7), 16, y_qfmt=3)
    want = quantize_rows_format(A, X, 3, int_element(7), 16)
    assert all(torch.equal(g, w) for g, w in zip(got[:2], want[:2])) and got[2] is None


def test_stream_widths():
    """One place sizes every stream masec carries: data bits per beat and the 8-bit scale bus."""
    assert stream_widths(parse_format("mxint8"), 8) == (64, 8)
    assert stream_widths(parse_format("mxfp4"), 16) == (64, 8)
    assert stream_widths(parse_format("nvfp4"), 8) == (32, 8)
    assert stream_widths(parse_format("m2xfp4_a"), 16) == (16 * 4 + 4, 8)
    assert stream_widths(parse_format("anda7"), 4) == (32, 8)
    for bad, lanes in (("m2xfp4_a", 4), ("anda16", 8), ("m2xfp4_w", 8), ("bitmod_fp4", 8)):
        with pytest.raises(ValueError):
            stream_widths(parse_format(bad), lanes)


def test_seed_stream_options_are_checked():
    """NVFP4's tensor-scale exponent is given exactly for an NVFP4 x / y; L-Mul and a missing MX bias
    format are refused for seed x; an M2XFP x needs P_IN a multiple of 8."""
    w = fmt("mxint8", 16)
    with pytest.raises(ValueError, match="x_ts_exp"):
        instance_config(32, 8, parse_format("nvfp4"), w, fmt("mxint8"), False, 8, 8)
    with pytest.raises(ValueError, match="y_ts_exp"):
        instance_config(32, 8, fmt("mxint8", 16), w, parse_format("nvfp4"), False, 8, 8)
    with pytest.raises(ValueError, match="x_ts_exp"):
        instance_config(32, 8, fmt("mxint8", 16), w, fmt("mxint8"), False, 8, 8, x_ts_exp=0)
    with pytest.raises(ValueError, match="L-Mul"):
        instance_config(32, 8, parse_format("m2xfp4_a", block_size=16), fmt("mxfp8_e4m3", 16), fmt("mxint8"), False,
                        8, 8, lmul=True)
    with pytest.raises(ValueError, match="bias"):
        instance_config(32, 8, parse_format("m2xfp4_a", block_size=16), w, fmt("mxint8"), True, 8, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        instance_config(32, 8, parse_format("m2xfp4_a", block_size=16), w, fmt("mxint8"), False, 4, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        instance_config(32, 8, w, w, parse_format("m2xfp4_a"), False, 8, 8, p_y=4)


def test_anda16_x_is_refused():
    with pytest.raises(ValueError, match="anda16"):
        instance_config(64, 8, parse_format("anda16"), fmt("mxint8", 64), fmt("mxint8"), False, 8, 8)


# ----------------------------------------------------------------------------- RTL tests
def random_x_stream(rng: random.Random, xf: str, x_fmt, T: int, nb: int, B: int, IN: int):
    """(codes, scales, M2XFP metadata or None) of a random x stream named ``xf`` (an MX name,
    ``m2xfp4_a``, ``nvfp4:<t>`` or ``anda<M>``), T rows of nb blocks of B, IN valid columns."""
    if xf.startswith("anda"):
        return (*random_anda(rng, x_fmt.mbits, T, nb, B, IN), None)
    if xf == "m2xfp4_a":
        return random_m2xfp_act(rng, T, nb, B, IN)
    if xf.startswith("nvfp4"):
        return (*random_nvfp4_act(rng, T, nb, B, IN), None)
    return (*random_mx(rng, x_fmt.element, T, nb, B, IN), None)


def stream_fmt(name: str, block: int):
    """``(format, ts_exp)`` of a test stream name: an MX name, ``m2xfp4_a``, ``anda<M>`` (group =
    ``block``) or ``nvfp4:<t>`` (NVFP4 with the power-of-two tensor scale 2^t; ``nvfp4:auto`` for an
    output: calibrated by :func:`build_case`, None here)."""
    if name.startswith("nvfp4:"):
        t = name.split(":")[1]
        return parse_format("nvfp4", block_size=block), None if t == "auto" else int(t)
    return parse_format(name, block_size=block), None


#: "tame" scale ranges (values near 1): rows >= 1 of x and all of W in the seed-activation builds, so
#: that NVFP4 / Anda outputs (a bounded range) are not all saturated and every output lane carries
#: information about the decode (row 0 keeps the scale extremes)
TAME = {"e8m0": (122, 129), "ue4m3": (40, 70), "anda": (12, 17), "fp16": (0x3000, 0x4400)}


def tame_x(xf: str, scales: torch.Tensor) -> None:
    lo, hi = TAME["ue4m3" if xf.startswith("nvfp4") else "anda" if xf.startswith("anda") else "e8m0"]
    scales[1:] = scales[1:].clamp(lo, hi)


def tame_image(img: WeightImage) -> WeightImage:
    lo, hi = TAME[{"nvfp4": "ue4m3", "bitmod": "fp16"}.get(img.kind, "e8m0")]
    ts = (1 << 23, -23) if img.kind == "nvfp4" else (img.ts_sig, img.ts_exp)
    return WeightImage(img.kind, img.elem, img.codes, img.scales.clamp(lo, hi), img.meta, *ts, img.group)


def random_m2xfp_act(rng: random.Random, rows: int, nb: int, B: int, valid: int):
    """Random M2XFP activation streams: FP4 codes with ties for the top-1 (several lanes at the
    subgroup's max), all-zero subgroups (metadata 0..3: a refined top-1 zero), max codes +-6, every
    metadata value, E8M0 scales at both ends; padding lanes are zero with metadata 1 (a zero value),
    as mx_quantize emits for zero inputs."""
    c = torch.zeros(rows, nb, B, dtype=torch.int64)
    s = torch.zeros(rows, nb, dtype=torch.int64)
    m = torch.zeros(rows, nb, B // 8, dtype=torch.int64)
    for r in range(rows):
        for b in range(nb):
            for g in range(B // 8):
                k = rng.random()
                if k < 0.1:
                    sg = [8 * rng.randrange(2) if rng.random() < 0.3 else 0 for _ in range(8)]
                elif k < 0.25:
                    top = rng.randrange(1, 8)
                    sg = [(rng.choice([top, rng.randrange(top + 1)]) | (rng.randrange(2) << 3)) for _ in range(8)]
                elif k < 0.32:
                    sg = [7 | (rng.randrange(2) << 3) for _ in range(8)]
                else:
                    sg = [rng.randrange(16) for _ in range(8)]
                c[r, b, g * 8:(g + 1) * 8] = torch.tensor(sg)
                m[r, b, g] = rng.randrange(4)
            sk = rng.random()
            s[r, b] = rng.randint(0, 4) if sk < 0.08 else rng.randint(250, 254) if sk < 0.16 else rng.randint(112, 140)
    c.reshape(rows, -1)[:, valid:] = 0
    mf = m.reshape(rows, -1)
    mf[:, -(-valid // 8):] = 1
    return c, s, m


def random_nvfp4_act(rng: random.Random, rows: int, nb: int, B: int, valid: int):
    """Random NVFP4 activation streams: E2M1 codes (all-zero and all +-6 blocks), UE4M3 block scales
    0, subnormal (1..7), 8 (2^-6), 126 (448) and mid-range; padding lanes zero."""
    c = torch.zeros(rows, nb, B, dtype=torch.int64)
    s = torch.zeros(rows, nb, dtype=torch.int64)
    for r in range(rows):
        for b in range(nb):
            k = rng.random()
            blk = [0] * B if k < 0.06 else [7 | (rng.randrange(2) << 3) for _ in range(B)] if k < 0.14 else \
                [rng.randrange(16) for _ in range(B)]
            c[r, b] = torch.tensor(blk)
            sk = rng.random()
            s[r, b] = rng.choice([0, 8, 126]) if sk < 0.12 else rng.randint(1, 7) if sk < 0.2 else rng.randint(30, 100)
    c.reshape(rows, -1)[:, valid:] = 0
    return c, s


def seed_stream(codes, scales, meta, bits: int, lanes: int):
    """The stream of a tensor in any stream format: MX layout, plus (M2XFP) the beat's subgroup
    metadata above its codes (then compared as whole data words)."""
    if meta is None:
        return mx_stream(codes, scales, bits, lanes)
    B = codes.shape[-1]
    cf = codes.reshape(-1, B).tolist()
    sf = scales.reshape(-1).tolist()
    mf = meta.reshape(-1, B // 8).tolist()
    beats = []
    for blk, sc, mt in zip(cf, sf, mf):
        for b in range(0, B, lanes):
            word = pack_lanes(blk[b:b + lanes], bits) | (pack_lanes(mt[b // 8:(b + lanes) // 8], 2) << (lanes * bits))
            beats.append([word, int(sc)])
    return StreamVectors(("data", "scale"), beats)


def build_case(tmp, rng, kind, xf, of, IN, OUT, T, B, BO, p_in, p_out, has_bias, p_y=None, pipe=0):
    """``xf`` / ``of``: stream names (:func:`stream_fmt`): x streams its codes (and metadata), the model
    reads them as the kernel does (:func:`decode_x_stream`); ``kind`` a seed weight kind or an MX weight
    name; ``pipe`` the instance's PIPE. Returns (x stream, y stream, params, ideal cycles, slack)."""
    o_fmt, y_ts = stream_fmt(of, BO)
    yq, o_el = output_format_params(o_fmt)
    x_fmt, x_ts = stream_fmt(xf, B)
    tame = not of.startswith("mx") or xf == "m2xfp4_a" or xf.startswith("nvfp4")
    nb = -(-IN // B)
    sxc, sxs, xmeta = random_x_stream(rng, xf, x_fmt, T, nb, B, IN)
    if tame:
        tame_x(xf, sxs)
    xt = decode_x_stream(x_fmt, sxc, sxs, xmeta, x_ts)
    x_bits = x_stream_format(x_fmt)[1].bits
    b_fmt = fmt(xf, B) if xf.startswith("mx") else fmt("mxint8", B)
    b_el = b_fmt.element
    bc = bs = None
    if kind.startswith("mx"):
        w_fmt = fmt(kind, B)
        wc, ws = random_mx(rng, w_fmt.element, OUT, nb, B, IN)
        if tame:
            ws.clamp_(*TAME["e8m0"])
    else:
        w_fmt = wfmt_of(kind, B)
        img = random_image(rng, kind, OUT, IN, B)
        if tame:
            img = tame_image(img)
    if has_bias:
        bc, bs = random_mx(rng, b_el, 1, -(-OUT // B), B, OUT)
        bc, bs = bc[0], bs[0]
        bs.clamp_(*TAME["e8m0"]) if tame else bs.clamp_(100, 150)
    if kind.startswith("mx"):
        A, X = linear_accumulators(xt.codes, xt.exps, xt.elem, wc, ws, w_fmt.element, bc, bs, b_el, x_sig=xt.sig)
        wl, sl = pack_weight_mem(wc, ws, w_fmt.element, IN, OUT, B, p_in, p_out)
        ts = None
    else:
        A, X = seed_linear_accumulators(xt.codes, xt.exps, xt.elem, img, bc, bs, b_el, x_sig=xt.sig)
        wl, sl = pack_seed_weight_mem(img, IN, OUT, p_in, p_out)
        ts = (img.ts_sig, img.ts_exp) if kind == "nvfp4" else None
    if of == "nvfp4:auto":   # calibrated on the tame rows (mx_quantize's rule)
        amax = max(abs(float(a) * 2.0 ** x) for ra, rx in zip(A[1:], X[1:]) for a, x in zip(ra, rx))
        y_ts = nvfp4_tensor_scale_exp(amax) if amax > 0 else 0
    yc, ys, ym = quantize_rows_format(A, X, yq, o_el, BO, y_ts or 0)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "w.mem").write_text("\n".join(wl) + "\n")
    (tmp / "ws.mem").write_text("\n".join(sl) + "\n")
    if has_bias:
        (tmp / "b.mem").write_text("\n".join(pack_bias_mem(bc, bs, b_el, OUT, p_out)) + "\n")
    _, params, _ = instance_config(IN, OUT, x_fmt, w_fmt, o_fmt, has_bias, p_in, p_out,
                                   b_fmt=b_fmt, w_mem=str(tmp / "w.mem"), ws_mem=str(tmp / "ws.mem"),
                                   b_mem=str(tmp / "b.mem"), p_y=p_y, ts=ts, x_ts_exp=x_ts, y_ts_exp=y_ts)
    if pipe:
        params["PIPE"] = pipe
    ideal = max(ideal_cycles(T, IN, OUT, p_in, p_out), T * (-(-OUT // BO)) * BO // params["P_Y"])
    pad = T * (nb * B // p_in - (-(-IN // p_in)))
    nz = ((-(-OUT // BO)) * BO - (-(-OUT // p_out)) * p_out) // params["P_Y"]
    slack = pad + 4 + BO // params["P_Y"] + params["P_OUT"] // params["P_Y"] + nz + 4 + latency(params)
    return (seed_stream(sxc, sxs, xmeta, x_bits, p_in), seed_stream(yc, ys, ym, o_el.bits, params["P_Y"]), params,
            ideal, slack)


# kind, xf, of, IN, OUT, T, B, B_OUT, P_IN, P_OUT, bias, P_Y
DEFAULT_CONFIGS = [   # one build, every kind, small (the default suite)
    ("m2xfp", "mxint8", "mxfp8_e4m3", 72, 12, 4, 32, 16, 8, 4, True, 4),
    ("nvfp4", "mxint8", "mxint8", 40, 8, 4, 16, 8, 8, 8, True, 8),
    ("bitmod4", "mxint8", "mxfp8_e4m3", 300, 8, 3, 32, 8, 8, 4, True, 4),
    ("bitmod3", "mxint8", "mxint8", 64, 8, 3, 16, 8, 4, 8, False, 8),
    ("mxint8", "anda6", "mxint8", 100, 8, 3, 64, 8, 8, 8, True, 8),     # Anda x (consumer decode)
]
# seed activation formats as x (XFMT) and y (Y_QFMT): every x and every y format in one default build
ACT_CONFIGS = [
    ("nvfp4", "nvfp4:-3", "nvfp4:auto", 40, 16, 3, 16, 16, 8, 8, True, 8),         # NVFP4 x * NVFP4 W -> NVFP4
    ("m2xfp", "m2xfp4_a", "anda5", 64, 24, 3, 32, 64, 16, 8, True, 8),             # M2XFP x * M2XFP W -> Anda
    ("mxint8", "anda6", "m2xfp4_a", 100, 16, 3, 64, 32, 8, 8, True, 8),            # Anda x -> M2XFP y
]
ACT_SLOW_CONFIGS = [
    ("mxint8", "m2xfp4_a", "mxint8", 72, 8, 4, 32, 8, 8, 8, True, 8),              # M2XFP x, partial block
    ("mxfp4", "nvfp4:5", "m2xfp4_a", 48, 16, 3, 16, 16, 4, 8, False, 8),           # NVFP4 x * MX W -> M2XFP
    ("bitmod4", "m2xfp4_a", "nvfp4:auto", 96, 16, 3, 32, 16, 8, 8, False, 8),      # M2XFP x * BitMoD W -> NVFP4
]
SLOW_CONFIGS = [
    ("m2xfp", "anda4", "mxfp8_e4m3", 64, 8, 4, 64, 8, 16, 8, True, 8),
    ("mxfp4", "anda12", "mxint8", 128, 8, 3, 64, 8, 8, 4, False, 4),
    ("m2xfp", "mxfp8_e4m3", "mxint8", 64, 8, 5, 32, 8, 16, 8, False, 8),
    ("m2xfp", "mxint8", "mxint8", 40, 8, 5, 16, 8, 4, 8, True, 8),
    ("nvfp4", "mxint8", "mxfp8_e4m3", 56, 20, 6, 16, 16, 8, 4, True, 4),
    ("nvfp4", "mxfp8_e4m3", "mxint8", 32, 8, 5, 16, 8, 16, 8, False, 8),
    ("bitmod3", "mxfp8_e4m3", "mxint8", 200, 8, 4, 32, 8, 16, 8, True, 8),
    ("bitmod4", "mxint8", "mxint8", 64, 8, 4, 16, 8, 4, 8, False, 8),
]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("seed_linear_builds")


def run_configs(build_root, seed, cfgs, pipe=0):
    """One Verilator build of every configuration (instance i = streams s_x<i> / m_y<i>) at ``PIPE = pipe``."""
    rng = random.Random(seed)
    folder = build_root / (f"multi_pipe{pipe}_" + "_".join(str(abs(hash(c)) % 10**8) for c in cfgs))
    inputs, outputs, insts, ideal, slack = {}, {}, [], 0, 0
    for i, c in enumerate(cfgs):
        kind, xf, of, IN, OUT, T, B, BO, p_in, p_out, bias, p_y = c
        sx, sy, params, ideal_i, slack_i = build_case(folder / f"mem{i}", rng, kind, xf, of, IN, OUT, T, B, BO,
                                                      p_in, p_out, bias, p_y, pipe=pipe)
        inputs[f"s_x{i}"], outputs[f"m_y{i}"] = sx, sy
        insts.append((params, {"s_x": (stream_widths(stream_fmt(xf, B)[0], p_in)[0], True),
                               "m_y": (stream_widths(stream_fmt(of, BO)[0], params["P_Y"])[0], True)}))
        ideal, slack = max(ideal, ideal_i), max(slack, ideal_i + slack_i)
    vf = VectorFile(inputs, outputs, seed=seed, gap_prob=0.3, stall_prob=0.3, ideal_cycles=ideal)
    files = render_with_deps("mx_linear", folder / "rtl")
    files.append(write_multi_top(folder / "rtl" / "tb_seed_linear.sv", "tb_seed_linear", "mx_linear", insts))
    res = run_stream_test(files, "tb_seed_linear", vf, folder / "build")
    return res, ideal, slack


def check_configs(build_root, seed, cfgs, pipe=0):
    res, ideal, slack = run_configs(build_root, seed, cfgs, pipe)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"seed mx_linear PIPE {pipe}: full_rate {full['cycles']} cycles (slowest instance), ideal {ideal}, "
          f"bound {slack}")
    assert full["cycles"] <= slack
    return full["cycles"]


@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_rtl_matches_model(build_root, seed, pipe):
    """Every seed weight format (M2XFP, NVFP4, BitMoD fp4 with groups spanning several x blocks and a
    partial last group, fp3), with and without bias, in one build; exact comparison under random gaps
    and backpressure, then full rate within the ideal + padding + latency bound; unpipelined and with
    every register stage."""
    check_configs(build_root, seed, DEFAULT_CONFIGS, pipe)


@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_rtl_seed_activations(build_root, seed, pipe):
    """Seed activation formats in one build: x in M2XFP (top-1 ties, refined zeros, every metadata
    value), NVFP4 (UE4M3 scales 0 / subnormal / 448, tensor scales 2^-3 and 2^5; times MX, NVFP4 and
    BitMoD W, the last two multiplying both block-scale significands) and Anda; y in NVFP4, M2XFP and
    Anda through the nested mx_quantize. Exact under random gaps and backpressure, then full rate."""
    check_configs(build_root, seed, ACT_CONFIGS, pipe)


@pytest.mark.slow
@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_rtl_seed_activations_more(build_root, seed, pipe):
    """M2XFP x with MX and BitMoD W (a partial last block), NVFP4 x with MX W at P_IN 4 (the x scale's
    significand alone multiplied in), NVFP4 y with tensor scale 1."""
    check_configs(build_root, seed, ACT_SLOW_CONFIGS, pipe)


@pytest.mark.slow
@pytest.mark.parametrize("pipe", [0, 2])
@pytest.mark.parametrize("cfg", SLOW_CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-P{c[8]}x{c[9]}")
def test_rtl_matches_model_sweep(build_root, seed, cfg, pipe):
    """M2XFP at P_IN 4 / 16 (subgroup chunks), fp8 activations, NVFP4 at P_IN = B, BitMoD fp3 with fp8 x."""
    check_configs(build_root, seed, [cfg], pipe)


def test_rtl_pipeline_latency_nvfp4_x(build_root, seed):
    """NVFP4 x with MX W gets the block-scale cut (PSC) for x's scale significand: at PIPE 3 the last
    output beat comes exactly latency(params) cycles after PIPE 0's, values unchanged."""
    cfg = ("mxint8", "nvfp4:-2", "mxint8", 48, 8, 4, 16, 8, 8, 8, True, 8)
    base = check_configs(build_root, seed, [cfg], 0)
    cycles = check_configs(build_root, seed, [cfg], MAX_PIPE)
    lat = latency({"IN": 48, "B": 16, "P_IN": 8, "XFMT": 2, "PIPE": MAX_PIPE})
    print(f"NVFP4 x PIPE {MAX_PIPE}: full rate {cycles} cycles, PIPE 0 {base}, latency {lat}")
    assert cycles - base == lat


def test_rtl_pipeline_latency(build_root, seed):
    """NVFP4 (the deepest pipeline: block-scale cut, two-cycle accumulator step, tensor-scale tail) at
    PIPE 0 and MAX_PIPE: exact under gaps and backpressure, and at full rate the last output beat
    comes exactly latency(params) cycles later."""
    cfg = ("nvfp4", "mxint8", "mxint8", 48, 8, 4, 16, 8, 8, 8, True, 8)
    base = check_configs(build_root, seed, [cfg], 0)
    cycles = check_configs(build_root, seed, [cfg], MAX_PIPE)
    lat = latency({"IN": 48, "B": 16, "P_IN": 8, "WFMT": 2, "PIPE": MAX_PIPE})
    print(f"NVFP4 PIPE {MAX_PIPE}: full rate {cycles} cycles, PIPE 0 {base}, latency {lat}")
    assert cycles - base == lat


def _zero_meta(img):
    return WeightImage(img.kind, img.elem, img.codes, img.scales, torch.zeros_like(img.meta), img.ts_sig,
                       img.ts_exp, img.group) if img.kind in ("m2xfp", "bitmod") else img


MUTANTS = {   # name: (model function replaced, wrong version built from the original)
    "m2xfp metadata and bitmod type id ignored": ("seed_weight_terms", lambda f: lambda img: f(_zero_meta(img))),
    "nvfp4 tensor scale doubled": ("tensor_scale_step", lambda f: lambda A, X, s, e: f(A, X, s, e + 1)),
}


def _exposing_seed(build_root, seed, cfgs, name, wrong, tries: int = 64) -> int:
    """The first of ``seed``, ``seed + 1``, ... whose vectors for ``cfgs`` differ between the right model
    and the one with ``mx_linear.<name>`` replaced by ``wrong(orig)``. Random data can miss a mutant
    (every output block of the mutated configuration saturated or zero, so a doubled tensor scale
    changes nothing): the check then runs on data that exposes it, the same for the same seed."""
    import masec.hw_templates.kernels.mx_linear as ml

    def expected(s, tag):
        rng = random.Random(s)
        return [build_case(build_root / f"mutant_{name}_{tag}" / str(i), rng, *c)[1].beats for i, c in enumerate(cfgs)]

    orig = getattr(ml, name)
    for s in range(seed, seed + tries):
        right = expected(s, "right")
        setattr(ml, name, wrong(orig))
        try:
            wrong_beats = expected(s, "wrong")
        finally:
            setattr(ml, name, orig)
        if wrong_beats != right:
            return s
    raise AssertionError(f"no seed in {seed}..{seed + tries - 1} exposes the mutant of {name}")


def _check_mutant_fails(build_root, seed, cfgs, name, wrong, pipe=0):
    import masec.hw_templates.kernels.mx_linear as ml

    s = _exposing_seed(build_root, seed, cfgs, name, wrong)
    orig = getattr(ml, name)
    setattr(ml, name, wrong(orig))
    try:
        res, _, _ = run_configs(build_root, s, cfgs, pipe=pipe)
    finally:
        setattr(ml, name, orig)
    assert not res.ok and "differs" in res.message, f"seed {s}: the RTL matched a wrong model"


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_rtl_check_can_fail(build_root, seed, mutant):
    """A deliberately wrong model (a seed-format detail dropped) fails against the same RTL build, on
    vectors that expose the mistake (:func:`_exposing_seed`)."""
    _check_mutant_fails(build_root, seed, DEFAULT_CONFIGS, *MUTANTS[mutant])


def _m2x_meta_one(f):
    return lambda codes, scales, meta: f(codes, scales, torch.ones_like(torch.as_tensor(meta)))


ACT_MUTANTS = {   # name: (model function replaced, wrong version built from the original)
    "m2xfp x metadata ignored": ("m2xfp_act_as_int", _m2x_meta_one),
    "nvfp4 x scale significand ignored": ("nvfp4_scale_terms", lambda f: lambda s: (torch.full_like(f(s)[0], 8),
                                                                                    f(s)[1])),
}


@pytest.mark.parametrize("mutant", list(ACT_MUTANTS))
def test_rtl_seed_activations_check_can_fail(build_root, seed, mutant):
    """A deliberately wrong x decode in the model (M2XFP's refinement dropped, NVFP4's block-scale
    significand taken as 1.0) fails against the same RTL build as test_rtl_seed_activations, on
    vectors that expose the mistake (:func:`_exposing_seed`)."""
    _check_mutant_fails(build_root, seed, ACT_CONFIGS, *ACT_MUTANTS[mutant])


@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
@pytest.mark.parametrize("cfg", DEFAULT_CONFIGS + SLOW_CONFIGS + ACT_CONFIGS + ACT_SLOW_CONFIGS,
                         ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-P{c[8]}x{c[9]}")
def test_lint_clean(tmp_path, cfg, pipe):
    kind, xf, of, IN, OUT, T, B, BO, p_in, p_out, bias, p_y = cfg
    (x_fmt, x_ts), (o_fmt, y_ts) = stream_fmt(xf, B), stream_fmt(of, BO)
    if of == "nvfp4:auto":   # calibrated only for a simulation; any tensor scale lints the same RTL
        y_ts = 0
    w_fmt = fmt(kind, B) if kind.startswith("mx") else wfmt_of(kind, B)
    _, params, top = instance_config(IN, OUT, x_fmt, w_fmt, o_fmt, bias, p_in, p_out,
                                     b_fmt=fmt("mxint8", B), p_y=p_y, ts=(3 << 22, -30) if kind == "nvfp4" else None,
                                     x_ts_exp=x_ts, y_ts_exp=y_ts)
    params["PIPE"] = pipe
    files = render_with_deps("mx_linear", tmp_path)
    lint(files, top, parameters=params)
