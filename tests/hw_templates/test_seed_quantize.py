"""mx_quantize's seed activation outputs (QFMT 1 M2XFP, 2 NVFP4, 3 Anda): the vectorized model vs the
format library on float32-exact values and vs exact rational references on wide values; RTL vs
model under random gaps and backpressure with block-scale and metadata extremes; a mutant fails."""
import random
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.formats.anda import AndaFormat
from masec.formats.element import FP4_E2M1, FP6_E2M3, FP8_E4M3, int_element
from masec.formats.nvfp4 import NVFP4Format
from masec.hw_templates.kernels.mx_quantize import (
    QFMT_ANDA, QFMT_M2XFP, QFMT_NVFP4, latency, nvfp4_tensor_scale_exp, output_data_width,
    output_format_params, pack_lanes_me, quantize_blocks_anda, quantize_blocks_format, quantize_blocks_m2xfp,
    quantize_blocks_nvfp4, sv_params,
)
from masec.hw_templates.render import render_with_deps
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile, pack_lanes
from mx_helpers import floor_log2, ref_quantize_values, write_multi_top, yosys_netlist


# ----------------------------------------------------------------------------- inputs
def block_around(rng: random.Random, n: int, mw: int, ew: int, lo: int, hi: int):
    """A block of (m, e) lanes whose values' leading ones lie near [lo, hi], with the extremes:
    all-zero blocks, all-ones mantissas (round up across a binade), few-bit values (exact ties),
    most negative mantissas, one large value among tiny ones, zeros among the rest."""
    emin_e, emax_e = -(1 << (ew - 1)), (1 << (ew - 1)) - 1
    kind = rng.randrange(8)
    if kind == 0:
        return [0] * n, [rng.randint(emin_e, emax_e) for _ in range(n)]
    base = rng.randint(lo, hi)
    m, e = [], []
    for i in range(n):
        r = rng.random()
        lz = base - (rng.randint(0, 40) if kind == 4 and i else rng.randint(0, 3))
        if kind == 1 or r < 0.08:      # all ones below the leading one: rounds up into the next binade
            msb = rng.randint(1, mw - 2)
            mag = (1 << (msb + 1)) - 1
        elif kind == 2 or r < 0.3:      # few significant bits: exact ties
            msb = rng.randint(5, mw - 2)
            mag = ((rng.randrange(0, 16) * 2 + 1) << (msb - 5)) | (1 << msb)
        elif r < 0.36:
            msb, mag = mw - 1, 1 << (mw - 1)        # the most negative mantissa
        else:
            msb = rng.randint(0, mw - 2)
            mag = (1 << msb) | rng.getrandbits(msb) if msb else 1
        if r > 0.88:
            mag = 0
        sign = -1 if (rng.random() < 0.5 or (msb == mw - 1 and mag)) else 1
        ei = min(max(lz - msb, emin_e), emax_e)
        m.append(sign * mag)
        e.append(ei)
    return m, e


def blocks_tensor(blocks):
    return (torch.tensor([b[0] for b in blocks], dtype=torch.int64),
            torch.tensor([b[1] for b in blocks], dtype=torch.int64))


def float32_lanes(blocks):
    """Lanes that are not float32 numbers (24-bit mantissas below 2^-149 or above 2^127) set to 0."""
    return [([mi if -149 <= ei and ei + abs(mi).bit_length() <= 128 else 0 for mi, ei in zip(m, e)], e)
            for m, e in blocks]


def as_float32(mt, et):
    """The values as float32; asserts they are exact."""
    x64 = mt.to(torch.float64) * torch.pow(2.0, et.to(torch.float64))
    x = x64.to(torch.float32)
    assert torch.equal(x.to(torch.float64), x64)
    return x


# ----------------------------------------------------------------------------- exact references
def rne_grid(a: Fraction, el) -> int:
    """Magnitude code of the element value nearest a >= 0 (ties to the even code), saturating."""
    best = None
    for c in range(el.max_code + 1):
        d = abs(Fraction(el.code_value(c)) - a)
        if best is None or d < best[0] or (d == best[0] and c % 2 == 0):
            best = (d, c)
    if a >= Fraction(el.code_value(el.max_code)):
        return el.max_code
    return best[1]


def ref_nvfp4(m, e, t):
    vals = [Fraction(mi) * Fraction(2) ** ei for mi, ei in zip(m, e)]
    amax = max(abs(v) for v in vals)
    r = min(max(amax / (6 * Fraction(2) ** t), Fraction(1, 64)), Fraction(448))
    sb = rne_grid(r, FP8_E4M3)
    total = Fraction(2) ** t * Fraction(FP8_E4M3.code_value(sb))
    codes = []
    for v in vals:
        c = rne_grid(min(abs(v) / total, Fraction(6)), FP4_E2M1)
        codes.append(c | (8 if v < 0 and c else 0))
    return codes, sb


def ref_fp16(a: Fraction) -> tuple[int, int]:
    """(exponent field f, significand with hidden bit) of a >= 0 rounded to FP16 (even), saturating."""
    if a == 0:
        return 0, 0
    k = max(floor_log2(a), -14)
    y = a / Fraction(2) ** (k - 10)
    q = y.numerator // y.denominator
    rem = y - q
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and q % 2):
        q += 1
    if q == 2048:
        q, k = 1024, k + 1
    if k > 15:
        return 30, 2047
    return (k + 15, q) if q >= 1024 else (0, q)


def ref_anda(m, e, M):
    vals = [Fraction(mi) * Fraction(2) ** ei for mi, ei in zip(m, e)]
    h = [ref_fp16(abs(v)) for v in vals]
    S = max(max(f, 1) for f, _ in h)
    codes = []
    for v, (f, sig) in zip(vals, h):
        k = (Fraction(sig) * Fraction(2) ** (M - 11 - (S - max(f, 1))))
        k = k.numerator // k.denominator
        codes.append(k | ((1 << M) if v < 0 and k else 0))
    return codes, S


def ref_m2xfp(m, e):
    vals = [Fraction(mi) * Fraction(2) ** ei for mi, ei in zip(m, e)]
    c4, scale = ref_quantize_values(vals, FP4_E2M1)
    c6, scale6 = ref_quantize_values(vals, FP6_E2M3)
    assert scale == scale6
    c4, c6 = [c & 7 for c in c4], [c & 31 for c in c6]
    codes, meta = [], []
    for g in range(0, len(vals), 8):
        sub = c4[g:g + 8]
        top = sub.index(max(sub))
        c = sub[top]
        r = min(max(c6[g + top], 4 * c - 1), 4 * c + 2)
        meta.append(r - 4 * c + 1)
        for i in range(8):
            nzv = r != 0 if i == top else sub[i] != 0
            codes.append(sub[i] | (8 if vals[g + i] < 0 and nzv else 0))
    return codes, scale, meta


# ----------------------------------------------------------------------------- model tests
def test_m2xfp_model_equals_format_library(seed):
    rng = random.Random(seed)
    B = 32
    blocks = [block_around(rng, B, 24, 10, -100, 100) for _ in range(1500)]
    blocks += [block_around(rng, B, 24, 10, -140, -110) for _ in range(300)]   # E clamped at -127
    mt, et = blocks_tensor(float32_lanes(blocks))
    x = as_float32(mt, et)
    enc = parse_format("m2xfp4_a", block_size=B).encode(x)
    codes, scales, meta = quantize_blocks_m2xfp(mt, et)
    assert torch.equal(codes, enc.codes.reshape(codes.shape).long())
    assert torch.equal(scales, enc.scales.reshape(scales.shape).long())
    assert torch.equal(meta, enc.meta["subgroup_meta"].reshape(meta.shape).long())
    assert set(meta.unique().tolist()) == {0, 1, 2, 3}
    assert int(scales.min()) == 0                              # E clamped at -127 reached


@pytest.mark.parametrize("t", [-24, -3, 0, 7])
def test_nvfp4_model_equals_format_library(t, seed):
    """The library computes s_t = amax_tensor / 2688 from the tensor; one calibration element of
    magnitude 2688 * 2^t makes it exactly 2^t, the tensor scale masec gives the kernel."""
    rng = random.Random(seed)
    B = 16
    blocks = [block_around(rng, B, 24, 10, t - 14, t + 11) for _ in range(1500)]
    blocks = [(m, e) if max(abs(Fraction(a) * Fraction(2) ** b) for a, b in zip(m, e)) <= 2688 * Fraction(2) ** t
              else ([0] * B, e) for m, e in blocks]
    blocks.append(([21] + [0] * (B - 1), [7 + t] * B))   # 21 * 2^(7 + t) = 2688 * 2^t
    mt, et = blocks_tensor(float32_lanes(blocks))
    x = as_float32(mt, et)
    enc = NVFP4Format(B).encode(x)
    assert float(enc.meta["tensor_scale"]) == 2.0 ** t
    codes, sb = quantize_blocks_nvfp4(mt, et, t)
    assert torch.equal(codes, enc.codes.reshape(codes.shape).long())
    assert torch.equal(sb, enc.scales.reshape(sb.shape).long())
    assert int(sb.min()) == 8 and int(sb.max()) == 126        # both clamps reached


@pytest.mark.parametrize("M", [1, 4, 6, 11, 12, 15, 16])
def test_anda_model_equals_format_library(M, seed):
    rng = random.Random(seed)
    G = 64
    blocks = [block_around(rng, G, 24, 10, -30, 17) for _ in range(250)]
    mt, et = blocks_tensor(float32_lanes(blocks))
    x = as_float32(mt, et)
    enc = AndaFormat(M, G).encode(x)
    codes, S = quantize_blocks_anda(mt, et, M)
    assert torch.equal(codes, enc.codes.reshape(codes.shape).long())
    assert torch.equal(S, enc.scales.reshape(S.shape).long())
    assert int(S.min()) == 1 and int(S.max()) == 30


def test_models_equal_exact_references_on_wide_values(seed):
    """Values the library cannot hold (30-bit mantissas, exponents beyond float32): the models equal
    exact rational references written from the format definitions."""
    rng = random.Random(seed)
    for _ in range(60):
        m, e = block_around(rng, 32, 30, 12, -160, 140)
        c, s, meta = quantize_blocks_m2xfp(torch.tensor([m]), torch.tensor([e]))
        assert (c[0].tolist(), int(s[0]), meta[0].tolist()) == ref_m2xfp(m, e), (m, e)
    for t in (-40, 0, 9):
        for _ in range(40):
            m, e = block_around(rng, 16, 30, 12, t - 20, t + 16)
            c, sb = quantize_blocks_nvfp4(torch.tensor([m]), torch.tensor([e]), t)
            assert (c[0].tolist(), int(sb[0])) == ref_nvfp4(m, e, t), (m, e, t)
    for M in (3, 8, 13):
        for _ in range(25):
            m, e = block_around(rng, 64, 30, 12, -40, 20)
            c, S = quantize_blocks_anda(torch.tensor([m]), torch.tensor([e]), M)
            assert (c[0].tolist(), int(S[0])) == ref_anda(m, e, M), (m, e, M)


def test_nvfp4_tensor_scale_calibration():
    assert nvfp4_tensor_scale_exp(2688.0) == 0
    assert nvfp4_tensor_scale_exp(2688.0 * 2 ** -5) == -5
    assert nvfp4_tensor_scale_exp(2689.0) == 1          # rounded up: block scales stay <= 448
    assert nvfp4_tensor_scale_exp(1.0) == -11           # 1 / 2688 -> 2^-11
    with pytest.raises(ValueError):
        nvfp4_tensor_scale_exp(0.0)


def test_output_format_params():
    assert output_format_params(parse_format("m2xfp4_a")) == (QFMT_M2XFP, FP4_E2M1)
    assert output_format_params(parse_format("nvfp4")) == (QFMT_NVFP4, FP4_E2M1)
    assert output_format_params(parse_format("anda7")) == (QFMT_ANDA, int_element(8))
    assert output_format_params(parse_format("mxint8"))[0] == 0
    for bad in ("anda16", "m2xfp4_w", "bitmod_fp4"):
        with pytest.raises(ValueError):
            output_format_params(parse_format(bad))
    assert output_data_width(16, QFMT_M2XFP, FP4_E2M1) == 16 * 4 + 4
    assert output_data_width(4, QFMT_ANDA, int_element(7)) == 28


# ----------------------------------------------------------------------------- RTL
# (name, qfmt, element, B, P, MW, EW, TS_EXP, (lz range of the inputs))
RTL_CONFIGS = [
    ("m2xfp_p8", QFMT_M2XFP, FP4_E2M1, 32, 8, 20, 10, 0, (-150, 140)),
    ("m2xfp_p16", QFMT_M2XFP, FP4_E2M1, 32, 16, 14, 9, 0, (-150, 140)),
    ("nvfp4_p4", QFMT_NVFP4, FP4_E2M1, 16, 4, 20, 10, -5, (-30, 9)),
    ("nvfp4_p16", QFMT_NVFP4, FP4_E2M1, 16, 16, 12, 9, 3, (-14, 17)),
    ("anda6_p4", QFMT_ANDA, int_element(7), 64, 4, 20, 10, 0, (-32, 18)),
    ("anda13_p8", QFMT_ANDA, int_element(14), 64, 8, 26, 10, 0, (-32, 18)),
]


def make_vectors(rng, cfg, nblocks, fixed=()):
    name, q, el, B, P, mw, ew, t, (lo, hi) = cfg
    blocks = [(list(m) + [0] * (B - len(m)), list(e) + [0] * (B - len(e))) for m, e in fixed]
    blocks += [block_around(rng, B, mw, ew, lo, hi) for _ in range(nblocks)]
    mt, et = blocks_tensor(blocks)
    codes, scales, meta = quantize_blocks_format(mt, et, q, el, t)
    beats_in, beats_out = [], []
    for n, (m, e) in enumerate(blocks):
        for b in range(0, B, P):
            beats_in.append([pack_lanes_me(m[b:b + P], e[b:b + P], mw, ew)])
            word = pack_lanes(codes[n, b:b + P].tolist(), el.bits)
            if meta is not None:
                word |= pack_lanes(meta[n, b // 8:(b + P) // 8].tolist(), 2) << (P * el.bits)
            beats_out.append([word, int(scales[n])])
    # M2XFP's data word is codes + metadata: no lane layout (a mismatch is reported as whole words)
    return (StreamVectors(("data",), beats_in),
            StreamVectors(("data", "scale"), beats_out, {"data": (P, el.bits)} if meta is None else {}))


def simulate(build_root, seed, cfgs, nblocks, pipes, mutation=None, yosys=False, fixed=()):
    """All ``cfgs`` in one build (instance i: s_x<i> / m_y<i>, ``PIPE = pipes[i]``). ``mutation`` =
    (text, replacement): a deliberately wrong variant of the rendered RTL; ``fixed``: (m, e) blocks
    (zero-filled to B lanes) sent first to every instance."""
    rng = random.Random(seed)
    inputs, outputs, insts = {}, {}, []
    for i, cfg in enumerate(cfgs):
        name, q, el, B, P, mw, ew, t, _ = cfg
        inputs[f"s_x{i}"], outputs[f"m_y{i}"] = make_vectors(rng, cfg, nblocks, fixed)
        insts.append((sv_params(P, B, mw, ew, el, pipe=pipes[i], qfmt=q, ts_exp=t),
                      {"s_x": (P * (mw + ew), False), "m_y": (output_data_width(P, q, el), True)}))
    vf = VectorFile(inputs, outputs, seed=seed, gap_prob=0.3, stall_prob=0.3)
    folder = build_root / ("_".join(f"{c[0]}-{p}" for c, p in zip(cfgs, pipes)) + ("_mutant" if mutation else ""))
    files = render_with_deps("mx_quantize", folder / "rtl")
    if mutation:
        src = files[-1].read_text()
        assert src.count(mutation[0]) == 1, mutation[0]
        files[-1].write_text(src.replace(mutation[0], mutation[1]))
    files.append(write_multi_top(folder / "rtl" / "tb_seed_quantize.sv", "tb_seed_quantize", "mx_quantize", insts))
    if yosys:
        files = [yosys_netlist(files, "tb_seed_quantize", folder / "yosys_netlist.v")]
        folder = folder / "yosys"
    return run_stream_test(files, "tb_seed_quantize", vf, folder / "build")


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("seed_quantize_builds")


def run_rtl(build_root, seed, pipes, nblocks=40):
    res = simulate(build_root, seed, RTL_CONFIGS, nblocks, pipes)
    assert res.ok, res.message
    full = res.run("full_rate")
    bound = max(nblocks * c[3] // c[4] + c[3] // c[4] + 2 + latency(p) for c, p in zip(RTL_CONFIGS, pipes))
    print(f"seed mx_quantize PIPE {pipes}: full_rate {full['cycles']} cycles, ideal {full['ideal_cycles']}, "
          f"bound {bound}")
    assert full["cycles"] <= bound     # 1 beat per cycle after one block and the pipeline


def test_rtl_matches_model(build_root, seed):
    """M2XFP (P 8 and 16), NVFP4 (P 4 and 16, tensor scales 2^-5 and 2^3), Anda6 and Anda13 (P 8) in one
    build, each mode at PIPE 0 and PIPE 3: random gaps and backpressure, then full rate."""
    run_rtl(build_root, seed, [0, 3, 3, 0, 0, 3])


@pytest.mark.slow
@pytest.mark.parametrize("pipes", [[3, 0, 0, 3, 3, 0], [1, 2, 1, 2, 1, 2]])
def test_rtl_matches_model_more_pipes(build_root, seed, pipes):
    run_rtl(build_root, seed, pipes, nblocks=120)


@pytest.mark.slow
def test_yosys_netlist_matches_model(build_root, seed):
    """The same build synthesized by native Yosys (generic cells) and simulated: Yosys reads the
    seed-format paths as Verilator does."""
    cfgs = [RTL_CONFIGS[0], RTL_CONFIGS[2], RTL_CONFIGS[4]]   # one instance per mode: a flat netlist builds slowly
    res = simulate(build_root, seed, cfgs, 16, [0, 3, 0], yosys=True)
    assert res.ok, res.message


MUTANTS = {  # mode -> (rendered text, wrong replacement)
    # M2XFP: the top-1 element of a subgroup taken at the highest index on ties
    "m2xfp": ("if (c4[(g*8+l)*3 +: 3] > best) begin", "if (c4[(g*8+l)*3 +: 3] >= best) begin"),
    # NVFP4: the block scale not clamped at 448 (the E4M3 NaN code 127 gets through)
    "nvfp4": ("(kf > (XW+4)'(126)) ? XW'(126)", "(kf > (XW+4)'(127)) ? XW'(127)"),
    # Anda: the FP16 rounding carry into the next binade ignored when forming S
    "anda": ("top == 12'hFFF", "top == 12'hFFF && 1'b0"),
}


EXPOSE = {  # mode -> (m, e) blocks whose output the mutant gets wrong for every seed (sent first)
    # a tie for the top-1 FP4 magnitude (4.5 and 4.0 both round to FP4 4): lane 0 keeps metadata 2 (4.5),
    # the mutant refines lane 1 (4.0, metadata 1)
    "m2xfp": [([9, 1], [-1, 2])],
    # 2^12 with tensor scale 2^-5: the block scale 2^17 / 6 is far beyond 448 (code 126); unclamped 127
    "nvfp4": [([1], [12])],
    # 4095 rounds to FP16 4096: S is that binade's exponent field (27), the mutant keeps 26
    "anda": [([4095], [0])],
}


@pytest.mark.parametrize("mode", list(MUTANTS))
def test_wrong_rtl_fails(build_root, seed, mode):
    """A deliberately wrong RTL variant must fail the vectors of its mode (the EXPOSE blocks make
    that independent of the seed; the random blocks follow)."""
    cfgs = [next(c for c in RTL_CONFIGS if c[0].startswith(mode))]   # one instance: a small build
    res = simulate(build_root, seed, cfgs, 80, [0], mutation=MUTANTS[mode], fixed=EXPOSE[mode])
    print(f"mutant {mode}: {res.message[:300]}")
    assert not res.ok and "differs" in res.message


@pytest.mark.parametrize("cfg", RTL_CONFIGS, ids=[c[0] for c in RTL_CONFIGS])
@pytest.mark.parametrize("pipe", [0, 3])
def test_lint_clean(tmp_path, cfg, pipe):
    name, q, el, B, P, mw, ew, t, _ = cfg
    files = render_with_deps("mx_quantize", tmp_path)
    lint(files, "mx_quantize", parameters=sv_params(P, B, mw, ew, el, pipe=pipe, qfmt=q, ts_exp=t))


def test_anda_stream_is_what_mx_linear_decodes(seed):
    """The Anda stream (codes sign << M | k, S on the scale bus) read through mx_linear's XFMT = 3 decode
    (anda_as_mx: an int element of M + 1 bits with scale S + 112) gives the library's Anda values."""
    from masec.formats.base import Encoded
    from masec.hw_templates.kernels.mx_linear import anda_as_mx

    rng = random.Random(seed)
    for M in (2, 6, 15):
        blocks = [block_around(rng, 64, 20, 10, -30, 17) for _ in range(40)]
        mt, et = blocks_tensor(blocks)
        codes, S = quantize_blocks_anda(mt, et, M)
        tc, sc, el = anda_as_mx(codes, S, M)
        got = el.value_table().to(torch.float64)[tc] * torch.pow(2.0, (sc - 127).to(torch.float64)).unsqueeze(-1)
        enc = Encoded(f"anda{M}", codes.unsqueeze(1).to(torch.int32), S.unsqueeze(1).to(torch.int32),
                      (codes.shape[0], 64), 1, M + 1, 64, 5)
        ref = AndaFormat(M, 64).decode(enc).to(torch.float64)
        assert torch.equal(got.reshape(ref.shape), ref)
