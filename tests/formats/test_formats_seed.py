"""Seed formats (M2XFP, BitMoD, Anda): FORMATS.md worked examples, brute-force Fraction oracles,
and the error ordering on a real stories260K weight."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from masec.formats import FormatError, parse_format
from masec.formats.bitmod import type_table
from mx_oracle import REF_ELEMENTS, floor_log2, quantize_element
from stories_weights import DEFAULT_PATH, load_linear_weights

FP4 = REF_ELEMENTS["fp4_e2m1"]
FP6 = REF_ELEMENTS["fp6_e2m3"]


def bits32(t: torch.Tensor) -> torch.Tensor:
    t = t.to(torch.float32).contiguous()
    return torch.where(torch.isnan(t), torch.full_like(t, float("nan")), t).view(torch.int32)


def blocky(seed: int, rows: int, cols: int) -> torch.Tensor:
    """Heavy-tailed rows with per-row scales and some exact zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) ** 3 * torch.exp2(torch.randint(-20, 20, (rows, 1), generator=g).float())
    x[:, ::11] = 0.0
    return x


# ---------------------------------------------------------------------------------- M2XFP
def test_m2xfp_activation_worked_examples():
    """FP4 4.0 refines to {3.75, 4, 4.5, 5}; 6.0 to {5.5, 6, 6.5, 7} (FORMATS.md §6)."""
    cases = [(3.6, 3.75), (3.8, 3.75), (4.1, 4.0), (4.3, 4.5), (4.9, 5.0),
             (5.2, 5.5), (6.2, 6.0), (6.4, 6.5), (7.9, 7.0)]
    fmt = parse_format("m2xfp4_a")
    for v, want in cases:
        # block max 7.9 in subgroup 0 pins E = 0; the element under test tops subgroup 1
        x = torch.full((32,), 0.5)
        x[0] = 7.9
        x[8 + 3] = v
        q = fmt.quantize(x)
        assert q[8 + 3].item() == want, (v, q[8 + 3].item())
        assert q[9].item() == 0.5  # the others stay FP4
        enc = fmt.encode(x)
        assert enc.scales.item() == 127
        assert torch.equal(fmt.decode(enc), q)
    assert fmt.bits_per_element == 4.5


def test_m2xfp_activation_ties_lowest_index_and_sign():
    fmt = parse_format("m2xfp4_a")
    x = torch.zeros(32)
    x[0] = 7.0
    x[8:16] = torch.tensor([4.3, -4.3, 4.2, 0, 0, 0, 0, 0])  # all FP4 4.0: the first (index 8) is refined
    q = fmt.quantize(x)
    assert q[8:11].tolist() == [4.5, -4.0, 4.0]
    # a subgroup of tiny values: FP4 code 0 on top, refined to a non-zero E2M3 value with its sign
    x[16:24] = torch.tensor([-0.2, 0.1, 0, 0, 0, 0, 0, 0])
    q = fmt.quantize(x)
    assert q[16].item() == -0.25 and q[17].item() == 0.0
    enc = fmt.encode(x)
    assert enc.codes[0, 16].item() == 8  # FP4 -0 code carries the sign of the refined value
    assert torch.equal(fmt.decode(enc), q)


def ref_m2xfp_activation(block: list[float]) -> list[float]:
    fs = [Fraction(v) for v in block]
    amax = max(abs(f) for f in fs)
    e = max((floor_log2(amax) if amax else -126) - 2, -127)
    v = [f / Fraction(2) ** e for f in fs]
    q4 = [quantize_element(a, FP4, "even") for a in v]
    grid4 = sorted({quantize_element(Fraction(k, 4), FP4, "even") for k in range(0, 25)})
    grid6 = sorted({quantize_element(Fraction(k, 8), FP6, "even") for k in range(0, 61)})
    out = list(q4)
    for s in range(0, len(block), 8):
        codes = [grid4.index(abs(q)) for q in q4[s:s + 8]]
        top = s + codes.index(max(codes))
        c = codes[top - s]
        c6 = grid6.index(abs(quantize_element(v[top], FP6, "even")))
        c6 = min(max(c6, 4 * c - 1), 4 * c + 2)
        out[top] = (1 if v[top] >= 0 else -1) * grid6[c6]
    return [float(q * Fraction(2) ** e) for q in out]


def ref_m2xfp_weight(block: list[float]) -> list[float]:
    """Brute force over b in (-1, 0, 1) and m per subgroup, exact arithmetic."""
    fs = [Fraction(v) for v in block]
    amax = max(abs(f) for f in fs)
    e = max((floor_log2(amax) if amax else -126) - 2, -127)
    best = None
    for b in (-1, 0, 1):
        if e + b < -127:
            continue
        deq, errs = [], []
        for s in range(0, len(block), 8):
            cands = []
            for m in range(4):
                scale = Fraction(2) ** (e + b) * (1 + Fraction(m, 4))
                q = [quantize_element(f / scale, FP4, "even") * scale for f in fs[s:s + 8]]
                cands.append((sum((f - qq) ** 2 for f, qq in zip(fs[s:s + 8], q)), m, q))
            err, _, q = min(cands, key=lambda t: (t[0], t[1]))
            deq += q
            errs.append(err)
        tot = sum(errs)
        if best is None or tot < best[0]:
            best = (tot, deq)
    return [float(q) + 0.0 for q in best[1]]


@pytest.mark.parametrize("which", ["w", "a"])
def test_m2xfp_matches_bruteforce_oracle(which, seed):
    x = blocky(seed, 6, 32)
    x[0] = torch.tensor([6.0, 4.5, 3.0, 1.5, 0.75, 0, 0, 0] * 4)  # exact ties between candidates
    x[1, :] = x[1, :] * 2.0 ** -140  # E clamped at -127
    fmt = parse_format(f"m2xfp4_{which}")
    ref = ref_m2xfp_weight if which == "w" else ref_m2xfp_activation
    q = fmt.quantize(x)
    for r in range(x.shape[0]):
        assert q[r].tolist() == ref(x[r].tolist()), (which, r)
    enc = fmt.encode(x)
    assert torch.equal(bits32(fmt.decode(enc)), bits32(q))
    key = "subgroup_m" if which == "w" else "subgroup_meta"
    assert enc.meta[key].shape == (6, 1, 4) and int(enc.meta[key].max()) <= 3


def test_m2xfp_weight_scale_metadata():
    fmt = parse_format("m2xfp4")
    assert fmt.name == "m2xfp4_w"
    x = torch.tensor([4.5, 3.0, 1.5, 0.75, 0, 0, 0, 0] * 4)  # = 1.5 * FP4 grid values
    enc = fmt.encode(x)
    q = fmt.quantize(x)
    assert torch.equal(q, x)  # exactly representable with ratio 1.5
    # b = -1 (scale 2^-1 * 1.5) also represents it exactly and is tried first
    assert enc.scales.item() == 127 - 1 and enc.meta["subgroup_m"].tolist() == [[2, 2, 2, 2]]
    with pytest.raises(FormatError, match="MX and NVFP4 only"):
        enc.pack()


def test_m2xfp_nan_block():
    x = torch.randn(2, 32)
    x[1, 4] = float("nan")
    for name in ("m2xfp4_w", "m2xfp4_a"):
        fmt = parse_format(name)
        q = fmt.quantize(x)
        assert torch.isnan(q[1]).all() and not torch.isnan(q[0]).any()
        assert torch.equal(bits32(fmt.decode(fmt.encode(x))), bits32(q))


# --------------------------------------------------------------------------------- BitMoD
def test_bitmod_grids_match_table():
    """FORMATS.md §7 in code units (the paper's FP4 values times 2)."""
    fp4 = [0, 1, 2, 3, 4, 6, 8, 12]
    for t, special in enumerate([10, -10, 16, -16]):
        vals = type_table(4, t).tolist()
        assert sorted(vals) == sorted(set(fp4) | {-v for v in fp4} | {special})
        assert vals[8] == special  # the -0 code holds the special value
    for t, special in enumerate([3, -3, 6, -6]):
        vals = type_table(3, t).tolist()
        assert sorted(vals) == sorted({0, 1, 2, 4, -1, -2, -4, special}) and vals[4] == special
    assert parse_format("bitmod_fp4").bits_per_element == 4 + 18 / 128
    assert parse_format("bitmod_fp3").bits_per_element == 3 + 18 / 128


def test_bitmod_picks_the_matching_type():
    s = 2.0 ** -7  # exact in FP16, so amax / qmax reproduces it
    base = [12, 8, 6, 4, 3, 2, 1, 0, -1, -2, -3, -4, -6, -8]
    cases = {0: base + [10], 1: base + [-10, -12], 2: [16, 12, 8, -6, 3, 1], 3: [-16, 12, 8, -6, 3, 1]}
    fmt = parse_format("bitmod_fp4")
    for tid, vals in cases.items():
        x = torch.zeros(128)
        x[: len(vals)] = torch.tensor(vals, dtype=torch.float32) * s
        enc = fmt.encode(x)
        assert enc.meta["type_id"].item() == tid, (tid, enc.meta["type_id"])
        assert torch.equal(fmt.quantize(x), x)
        assert torch.equal(fmt.decode(enc), x)


def ref_bitmod(group: list[float], bits: int) -> list[float]:
    fs = [Fraction(v) for v in group]
    amax = max(abs(f) for f in fs)
    best = None
    for t in range(4):
        grid = sorted(Fraction(v) for v in type_table(bits, t).tolist())
        qmax = max(abs(g) for g in grid)
        h = torch.tensor(float(amax / qmax), dtype=torch.float64).to(torch.float16).item()
        s = Fraction(h) if math.isfinite(h) else Fraction(10000)  # fp16 overflow, then the clamp
        lo = Fraction(torch.tensor(1e-5).to(torch.float16).item())
        s = min(max(s, lo), Fraction(10000))
        q = []
        for f in fs:
            t_ = f / s
            below = [g for g in grid if g <= t_]
            above = [g for g in grid if g >= t_]
            cand = [c for c in (below[-1] if below else None, above[0] if above else None) if c is not None]
            pick = min(cand, key=lambda c: (abs(c - t_), c))  # exact midpoint -> lower value
            q.append(pick * s)
        err = sum((f - qq) ** 2 for f, qq in zip(fs, q))
        if best is None or err < best[0]:
            best = (err, q)
    return [float(v) + 0.0 for v in best[1]]


@pytest.mark.parametrize("bits", [4, 3])
def test_bitmod_matches_bruteforce_oracle(bits, seed):
    x = blocky(seed, 3, 128)
    x[0, :16] = torch.tensor([12, 11, 10, 9, 7, 5, 3.5, 2.5, 1.5, 0.5, -0.5, -5, -7, -9, -11, -12]) / 1024
    fmt = parse_format(f"bitmod_fp{bits}")
    q = fmt.quantize(x)
    for r in range(3):
        assert q[r].tolist() == ref_bitmod(x[r].tolist(), bits), r
    enc = fmt.encode(x)
    assert torch.equal(bits32(fmt.decode(enc)), bits32(q))
    assert enc.codes.shape == (3, 1, 128) and int(enc.codes.max()) < 1 << bits


# ----------------------------------------------------------------------------------- Anda
def test_anda_worked_example():
    """M = 4: shared exponent of 3.0; mantissas aligned and truncated, never rounded."""
    x = torch.tensor([3.0, 1.0, 0.75, 0.1, 2.9, -2.9, -0.0, 1.99] + [0.0] * 56)
    q = parse_format("anda4").quantize(x)
    assert q[:8].tolist() == [3.0, 1.0, 0.75, 0.0, 2.75, -2.75, 0.0, 1.75]
    assert str(q[6].item()) == "0.0"
    enc = parse_format("anda4").encode(x)
    assert enc.scales.item() == 16 and enc.element_bits == 5
    assert enc.codes[0, 0].item() == 12 and enc.codes[0, 5].item() == (1 << 4) | 11
    assert parse_format("anda4").bits_per_element == 5 + 5 / 64


def ref_anda(group: list[float], m: int) -> list[float]:
    h = [torch.tensor(v).clamp(-65504, 65504).to(torch.float16).item() for v in group]
    parts = []
    for v in h:
        a = Fraction(abs(v))
        e = max(floor_log2(a) + 15, 1) if a else 1  # FP16 exponent field (subnormals: 1)
        parts.append((v, a, e))
    s = max(e for _, _, e in parts)
    step = Fraction(2) ** (s - 14 - m)
    return [float((-1 if v < 0 else 1) * math.floor(a / step) * step) + 0.0 for v, a, _ in parts]


@pytest.mark.parametrize("m", [1, 3, 4, 8, 11, 13, 16])
def test_anda_matches_oracle(m, seed):
    x = blocky(seed, 4, 64) * 2.0 ** -10
    x[0, :5] = torch.tensor([1e5, -7e4, 6e-8, 3e-6, -1e-7])  # saturation and FP16 subnormals
    fmt = parse_format(f"anda{m}")
    q = fmt.quantize(x)
    for r in range(4):
        assert q[r].tolist() == ref_anda(x[r].tolist(), m), (m, r)
    assert torch.equal(bits32(fmt.decode(fmt.encode(x))), bits32(q))
    with pytest.raises(FormatError):
        parse_format("anda17")


def test_anda_nan_group():
    x = torch.randn(2, 64)
    x[0, 1] = float("inf")
    fmt = parse_format("anda6")
    q = fmt.quantize(x)
    assert torch.isnan(q[0]).all() and not torch.isnan(q[1]).any()
    assert torch.equal(bits32(fmt.decode(fmt.encode(x))), bits32(q))


# ---------------------------------------------------------------- real weights: error ordering
@pytest.mark.skipif(not DEFAULT_PATH.exists(), reason="stories260K.bin not available")
def test_seed_formats_beat_mxfp4_on_real_weight():
    w = load_linear_weights()["layers.0.w1"]  # [172, 64] real pretrained weight
    def nmse(name):
        q = parse_format(name).quantize(w)
        return float(((q - w) ** 2).sum() / (w ** 2).sum())
    base = nmse("mxfp4")
    assert nmse("m2xfp4_w") < base
    assert nmse("bitmod_fp4") < base
    assert nmse("mxfp4") < nmse("bitmod_fp3")  # 3 bits is worse, as expected
