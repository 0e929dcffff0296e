"""mx_embedding: token ids -> embedding rows from a $readmemh ROM; RTL == model, exact."""
import random
import time

import pytest
import torch

from masec.formats import pack_mx_block_words, parse_format, unpack_mx_block_words
from masec.hw_templates.kernels.mx_embedding import (embedding_model, embedding_reference, instance_config,
                                                     pack_rom, rom_mem_text)
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile
from masec.sim.mxstream import plain_stream
from mx_stream_data import random_mx

# (format, vocab, dim, block, lanes, tokens)
CONFIGS = [("mxfp8_e4m3", 40, 40, 32, 8, 50)]
SLOW_CONFIGS = [("mxint8", 7, 32, 32, 1, 40), ("mxfp4", 300, 96, 32, 32, 200), ("mxint8", 64, 64, 16, 4, 100)]


def _table(rng, fmt, vocab, dim, block):
    nblk = -(-dim // block)
    return random_mx(rng, fmt.element, vocab, nblk, block, row_len=dim)


def _run(tmp_path, seed, cfg, check_fail=False):
    fmt_name, vocab, dim, block, lanes, ntok = cfg
    rng = random.Random(seed)
    fmt = parse_format(fmt_name, block_size=block)
    codes, scales = _table(rng, fmt, vocab, dim, block)
    mem = tmp_path / "emb.mem"
    mem.write_text(rom_mem_text(codes, scales, fmt.element.bits, lanes))
    ids = [0, vocab - 1] + [rng.randrange(vocab) for _ in range(ntok - 2)]
    ctx, params, top = instance_config(vocab, dim, fmt, lanes, mem_file=str(mem))
    files = render_with_deps("mx_embedding", tmp_path / "rtl", **ctx)
    oc, os_ = embedding_model(ids, codes, scales)
    s_out = mx_stream(oc, os_, fmt.element.bits, lanes)
    vf = VectorFile({"s_x": plain_stream(ids, params["ID_W"])}, {"m_y": s_out}, seed=seed)
    sim_params = {**params, "MEM_FILE": str(mem)}
    t0 = time.time()
    res = run_stream_test(files, top, vf, tmp_path / "build", parameters=sim_params)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"mx_embedding {fmt_name} V{vocab} D{dim} B{block} P{lanes}: full_rate {full['cycles']} cycles for "
          f"{ntok} tokens / {len(s_out.beats)} beats (ideal {full['ideal_cycles']}); {time.time() - t0:.1f}s")
    assert full["cycles"] <= full["ideal_cycles"] + 2  # latency 2, then 1 beat/cycle across tokens
    if check_fail:
        beats = [list(b) for b in s_out.beats]
        beats[9][0] ^= 1
        vf.outputs["m_y"] = StreamVectors(("data", "scale"), beats, s_out.lanes)
        res = run_stream_test(files, top, vf, tmp_path / "build", parameters=sim_params)
        assert not res.ok and "beat 9" in res.message


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}-V{c[1]}-D{c[2]}-P{c[4]}")
def test_embedding_rtl(tmp_path, seed, cfg):
    _run(tmp_path, seed, cfg, check_fail=True)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", SLOW_CONFIGS, ids=lambda c: f"{c[0]}-V{c[1]}-D{c[2]}-P{c[4]}")
def test_embedding_rtl_sweep(tmp_path, seed, cfg):
    _run(tmp_path, seed, cfg)


@pytest.mark.parametrize("cfg", CONFIGS + SLOW_CONFIGS, ids=lambda c: f"{c[0]}-V{c[1]}-D{c[2]}-P{c[4]}")
def test_embedding_lints_clean(tmp_path, cfg):
    fmt_name, vocab, dim, block, lanes, _ = cfg
    ctx, params, top = instance_config(vocab, dim, parse_format(fmt_name, block_size=block), lanes, "emb.mem")
    lint(render_with_deps("mx_embedding", tmp_path, **ctx), top, parameters=params)


def test_pack_rom_layout(seed):
    """One word per beat, rows in order; P == B is masec.formats' block packing."""
    rng = random.Random(seed)
    fmt = parse_format("mxint8")
    codes, scales = _table(rng, fmt, 5, 64, 32)
    assert pack_rom(codes, scales, 8, 32) == pack_mx_block_words(codes, scales, 8)
    words = pack_rom(codes, scales, 8, 4)
    assert len(words) == 5 * 2 * 8
    c, s = unpack_mx_block_words(words, 8, 4)
    assert torch.equal(c.reshape(5, 2, 32).long(), codes)
    assert torch.equal(s.reshape(5, 2, 8).long(), scales.unsqueeze(-1).expand(5, 2, 8))


def test_embedding_model_is_the_quantized_table(seed):
    """Decoding the model's rows gives exactly the MX-quantized float embedding rows."""
    gen = torch.Generator().manual_seed(seed)
    fmt = parse_format("mxfp8_e4m3")
    weight = torch.randn(20, 48, generator=gen) * 3
    enc = fmt.encode(weight)
    ids = torch.tensor([[3, 0, 19], [7, 7, 1]])
    oc, os_ = embedding_model(ids, enc.codes, enc.scales)
    vals = fmt.element.decode_codes(oc) * torch.pow(2.0, os_.double() - 127).unsqueeze(-1)
    got = vals.reshape(2, 3, -1)[..., :48]
    assert torch.equal(got.float(), embedding_reference(ids, weight, fmt))
    with pytest.raises(ValueError):
        embedding_model([20], enc.codes, enc.scales)
