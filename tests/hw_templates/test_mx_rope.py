"""mx_rope: exact fixed-point rotation + shared quantizer; RTL == model == exact-rational reference;
approximation error (table) measured against float64 RoPE."""
import random
import time
from fractions import Fraction

import pytest
import torch

from masec.formats import MXFormat, parse_format
from masec.hw_templates.kernels.mx_rope import (MAX_PIPE, instance_config, latency,
                                                rope_exact_values, rope_mem_text, rope_model, rope_reference,
                                                rope_rom_words, rope_table)
from masec.hw_templates.render import render_with_deps
from masec.passes.hw.pipeline import pipe_depth
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile
from mx_helpers import ref_quantize_values
from mx_stream_data import random_mx
from pipe_helpers import assert_pipe_latency

# (in fmt, out fmt, lanes, block, dim, head_dim, max_pos, pos_start, seq_len, rows, cs_bits)
CONFIGS = [
    ("mxfp8_e4m3", "mxfp8_e4m3", 4, 32, 64, 32, 20, 3, 5, 12, 16),
]
SLOW_CONFIGS = [
    ("mxint8", "mxfp4", 8, 32, 48, 16, 16, 0, 16, 10, 12),
    ("mxfp4", "mxint8", 32, 32, 64, 32, 8, 2, 6, 9, 16),
    ("mxfp8_e5m2", "mxfp8_e4m3", 2, 16, 16, 16, 40, 30, 10, 14, 20),
    ("mxint8", "mxint8", 16, 16, 128, 64, 64, 0, 64, 6, 16),
]
ALL = CONFIGS + SLOW_CONFIGS
PIPES = [0, MAX_PIPE]   # unpipelined and every cut
FULL_CYCLES: dict = {}  # (config, pipe) -> full-rate cycles (data-independent), for test_rope_pipe_latency


def _ids(c):
    return f"{c[0]}-{c[1]}-P{c[2]}-B{c[3]}-D{c[4]}-hd{c[5]}-cs{c[10]}"


def _case(seed, cfg):
    fi_name, fo_name, lanes, block, dim, hd, max_pos, p0, seq, rows, cs = cfg
    rng = random.Random(seed)
    fi, fo = parse_format(fi_name, block_size=block), parse_format(fo_name, block_size=block)
    nblk = -(-dim // block)
    codes, scales = random_mx(rng, fi.element, rows, nblk, block, row_len=dim)
    oc, os_ = rope_model(codes, scales, fi.element, fo.element, hd, p0, seq, cs, max_pos=max_pos)
    return fi, fo, codes, scales, oc, os_


def _run(tmp_path, seed, cfg, check_fail=False, pipe=0):
    fi_name, fo_name, lanes, block, dim, hd, max_pos, p0, seq, rows, cs = cfg
    fi, fo, codes, scales, oc, os_ = _case(seed, cfg)
    tmp_path.mkdir(parents=True, exist_ok=True)
    mem = tmp_path / "rope.mem"
    mem.write_text(rope_mem_text(max_pos, hd, lanes, cs))
    ctx, params, top = instance_config(fi, fo, lanes, dim, hd, max_pos, p0, seq, cs, mem_file=str(mem), pipe=pipe)
    files = render_with_deps("mx_rope", tmp_path / "rtl", **ctx)
    s_out = mx_stream(oc, os_, fo.element.bits, lanes)
    vf = VectorFile({"s_x": mx_stream(codes, scales, fi.element.bits, lanes)}, {"m_y": s_out}, seed=seed)
    sim_params = {**params, "MEM_FILE": str(mem)}
    t0 = time.time()
    res = run_stream_test(files, top, vf, tmp_path / "build", parameters=sim_params)
    assert res.ok, res.message
    full = res.run("full_rate")
    allowed = block // lanes + 4 + latency(params)
    print(f"mx_rope {_ids(cfg)} PIPE {pipe}: full_rate {full['cycles']} cycles for {len(s_out.beats)} beats "
          f"(ideal {full['ideal_cycles']}, latency allowance {allowed}); seed {seed}; {time.time() - t0:.1f}s")
    assert full["cycles"] <= full["ideal_cycles"] + allowed
    FULL_CYCLES[(cfg, pipe)] = full["cycles"]
    if check_fail:
        beats = [list(b) for b in s_out.beats]
        beats[3][0] ^= 1 << 4
        vf.outputs["m_y"] = StreamVectors(("data", "scale"), beats, s_out.lanes)
        res = run_stream_test(files, top, vf, tmp_path / "build", parameters=sim_params)
        assert not res.ok and "beat 3" in res.message


@pytest.mark.parametrize("pipe", PIPES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_rope_rtl(tmp_path, seed, cfg, pipe):
    _run(tmp_path, seed, cfg, check_fail=pipe == 0, pipe=pipe)


@pytest.mark.slow
@pytest.mark.parametrize("pipe", [1, 2])
@pytest.mark.parametrize("cfg", SLOW_CONFIGS, ids=_ids)
def test_rope_rtl_sweep(tmp_path, seed, cfg, pipe):
    _run(tmp_path, seed, cfg, pipe=pipe)


def test_rope_pipe_latency(tmp_path, seed):
    """Full rate: PIPE = MAX_PIPE takes exactly SPEC.extra["latency"] cycles more than PIPE 0 (so the
    pipeline still takes one beat per cycle)."""
    cfg = CONFIGS[0]
    for pipe in PIPES:
        if (cfg, pipe) not in FULL_CYCLES:
            _run(tmp_path / f"pipe{pipe}", seed, cfg, pipe=pipe)
    c0, cmax = (FULL_CYCLES[(cfg, p)] for p in PIPES)
    assert_pipe_latency("mx_rope", c0, cmax, MAX_PIPE)


def test_rope_latency_and_pipe_depth():
    assert [latency({"PIPE": p}) for p in range(MAX_PIPE + 1)] == [0, 3, 6, 9]
    assert [pipe_depth("mx_rope", ns) for ns in (20.0, 10.0, 8.0, 4.0, 3.0, 2.0)] == [0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError):
        latency({"PIPE": MAX_PIPE + 1})


@pytest.mark.parametrize("pipe", PIPES)
@pytest.mark.parametrize("cfg", ALL, ids=_ids)
def test_rope_lints_clean(tmp_path, cfg, pipe):
    fi_name, fo_name, lanes, block, dim, hd, max_pos, p0, seq, rows, cs = cfg
    ctx, params, top = instance_config(parse_format(fi_name, block_size=block), parse_format(fo_name, block_size=block),
                                       lanes, dim, hd, max_pos, p0, seq, cs, mem_file="rope.mem", pipe=pipe)
    lint(render_with_deps("mx_rope", tmp_path, **ctx), top, parameters=params)


@pytest.mark.parametrize("cfg", ALL, ids=_ids)
def test_rope_model_equals_exact_rational_reference(seed, cfg):
    """Independent Fraction arithmetic with the same fixed-point table, then exact MX quantization."""
    fi_name, fo_name, lanes, block, dim, hd, max_pos, p0, seq, rows, cs = cfg
    fi, fo, codes, scales, oc, os_ = _case(seed, cfg)
    ctab, stab = rope_table(max_pos, hd, cs)
    one = Fraction(1, 1 << (cs - 2))
    nblk = codes.shape[1]
    for r in range(rows):
        pos = p0 + r % seq
        vals = [fi.element.code_value(int(codes[r, j // block, j % block]))
                * Fraction(2) ** (int(scales[r, j // block]) - 127) for j in range(nblk * block)]
        out = []
        for j in range(0, nblk * block, 2):
            i = (j % hd) // 2
            c, s = int(ctab[pos, i]) * one, int(stab[pos, i]) * one
            a, b = vals[j], vals[j + 1]
            out += [a * c - b * s, a * s + b * c]
        for k in range(nblk):
            ref_codes, ref_scale = ref_quantize_values(out[k * block:(k + 1) * block], fo.element)
            assert oc[r, k].tolist() == ref_codes, f"row {r} block {k}"
            assert int(os_[r, k]) == ref_scale, f"row {r} block {k} scale"


def test_rope_table_error_and_layout():
    """Table entries are round-to-nearest of cos/sin: error <= 2^-(F+1); ROM words hold {sin, cos} pairs."""
    import math
    for cs in (10, 16, 20):
        c, s = rope_table(64, 32, cs)
        f = cs - 2
        pos = torch.arange(64, dtype=torch.float64)[:, None]
        theta = torch.tensor([10000.0 ** (-2.0 * i / 32) for i in range(16)], dtype=torch.float64)
        err_c = (c.double() / 2 ** f - torch.cos(pos * theta)).abs().max().item()
        err_s = (s.double() / 2 ** f - torch.sin(pos * theta)).abs().max().item()
        assert max(err_c, err_s) <= 2.0 ** -(f + 1) + 1e-12, (cs, err_c, err_s)
        assert int(c.abs().max()) <= 1 << f  # |cos| <= 1 fits CS_W-bit two's complement
    words = rope_rom_words(4, 8, 4, 12)
    c, s = rope_table(4, 8, 12)
    w = words[1 * 2 + 1]  # pos 1, lane group 1 -> pairs 2, 3
    assert (w & 0xFFF) == (int(c[1, 2]) & 0xFFF) and ((w >> 12) & 0xFFF) == (int(s[1, 2]) & 0xFFF)
    assert ((w >> 24) & 0xFFF) == (int(c[1, 3]) & 0xFFF) and ((w >> 36) & 0xFFF) == (int(s[1, 3]) & 0xFFF)
    assert math.isclose(float(c[0, 0]), 2.0 ** 10)


@pytest.mark.parametrize("cs_bits", [12, 16])
def test_rope_error_vs_float(seed, cs_bits):
    """Measured approximation: before output rounding |err| <= (|a|+|b|) 2^-(F+1); after it, the codes
    equal masec.formats' quantization of the float64 RoPE except near rounding ties (rate printed)."""
    gen = torch.Generator().manual_seed(seed)
    fmt = parse_format("mxfp8_e4m3")
    hd, rows, dim = 64, 48, 128
    x = torch.randn(rows, dim, generator=gen, dtype=torch.float64)
    enc = fmt.encode(x)
    xq = fmt.decode(enc).to(torch.float64)
    y_float = rope_reference(xq, hd)
    m, e = rope_exact_values(enc.codes, enc.scales, fmt.element, hd, cs_bits=cs_bits)
    y_exact = m.double() * torch.pow(2.0, e.double())
    bound = (xq[:, 0::2].abs() + xq[:, 1::2].abs()).repeat_interleave(2, dim=1) * 2.0 ** -(cs_bits - 1)
    err = (y_exact - y_float).abs()
    assert bool((err <= bound * (1 + 1e-9) + 1e-300).all())
    oc, os_ = rope_model(enc.codes, enc.scales, fmt.element, fmt.element, hd, cs_bits=cs_bits)
    ref = MXFormat(fmt.element, 32, "even").encode(y_float)
    mismatch = (oc != ref.codes.long()).double().mean().item()
    y_hw = (fmt.element.decode_codes(oc) * torch.pow(2.0, os_.double() - 127).unsqueeze(-1)).reshape(rows, dim)
    rel = ((y_hw - y_float).abs().max() / y_float.abs().max()).item()
    print(f"rope cs_bits={cs_bits}: max |pre-rounding err| {err.max().item():.3g} "
          f"(bound {bound.max().item():.3g}); code mismatch vs float-RoPE+MX {100 * mismatch:.3f}%; "
          f"max |out - float| / max|float| {rel:.3g}")
    assert mismatch < (0.02 if cs_bits >= 16 else 0.1)


def test_rope_config_checks():
    with pytest.raises(ValueError):
        instance_config("mxint8", "mxint8", 3, 64, 64, 16)
    with pytest.raises(ValueError):
        instance_config("mxint8", "mxint8", 4, 64, 64, 16, pos_start=10, seq_len=10)
