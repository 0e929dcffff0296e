"""mx_add: model vs unbounded-integer reference and masec.formats, RTL vs model, lint.

Also holds the helpers the mx_mul tests share (``eltwise_vectors``, ``run_eltwise_rtl``)."""
import subprocess

import pytest
import torch

from masec.hw_templates.kernels.mx_eltwise import (add_me, add_model, add_widths, instance_config, mul_model,
                                                    reference_model)
from masec.hw_templates.kernels.mx_relu import resolve_format, stress_mx
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import VectorFile
from masec.toolchain import verilator_binary, verilator_env

MODELS = {"add": add_model, "mul": mul_model}
FORMATS = ["mxint8", "mxfp8_e4m3", "mxfp4", "mxfp8_e5m2", "mxint4", "mxfp6_e3m2"]


# ------------------------------------------------------------------------------ shared helpers
def operands(fx, fy, nblocks, gen, close_scales=0.5):
    """Stress operands; a fraction of the blocks get y scales within +-3 of x (cancellation, ties)."""
    cx, sx = stress_mx(fx.element, nblocks, fx.block_size, gen)
    cy, sy = stress_mx(fy.element, nblocks, fy.block_size, gen)
    k = int(nblocks * close_scales)
    sy[:k] = (sx[:k] + torch.randint(-3, 4, (k,), generator=gen)).clamp(0, 254)
    return cx, sx, cy, sy


def eltwise_vectors(op, fx, fy, fo, lanes, seed, nblocks=24):
    gen = torch.Generator().manual_seed(seed)
    cx, sx, cy, sy = operands(fx, fy, nblocks, gen)
    cz, sz = MODELS[op](cx, sx, fx.element, cy, sy, fy.element, fo.element)
    notes = [f"block {b} beat {j}: x scale {int(sx[b])}, y scale {int(sy[b])}"
             for b in range(nblocks) for j in range(fx.block_size // lanes)]
    return VectorFile({"s_x": mx_stream(cx, sx, fx.element.bits, lanes), "s_y": mx_stream(cy, sy, fy.element.bits, lanes)},
                      {"m_z": mx_stream(cz, sz, fo.element.bits, lanes, notes)}, seed=seed)


def make_build_cache(tmp_path_factory, kernel):
    cache = {}

    def get(params):
        key = tuple(sorted(params.items()))
        if key not in cache:
            d = tmp_path_factory.mktemp(kernel)
            cache[key] = (render_with_deps(kernel, d / "rtl"), d / "build")
        return cache[key]
    return get


def run_eltwise_rtl(build_cache, op, names, block, lanes, seed, mutate=False):
    fx, fy, fo = (resolve_format(n, block) for n in names)
    _, params, top = instance_config((2, 2 * block), fx, fy, fo, lanes, op=op)
    files, build_dir = build_cache(params)
    vf = eltwise_vectors(op, fx, fy, fo, lanes, seed, nblocks=6 if mutate else 24)
    if mutate:
        beats = vf.outputs["m_z"].beats
        beats[3] = [beats[3][0] ^ 1, beats[3][1]]
    res = run_stream_test(files, top, vf, build_dir, parameters=params)
    if mutate:
        return res
    assert res.ok, res.message
    full = res.run("full_rate")
    latency = block // lanes + 2   # register stage + one block in mx_quantize + its output
    print(f"mx_{op} {'+'.join(names)} B{block} P{lanes}: full_rate {full['cycles']} cycles, ideal "
          f"{full['ideal_cycles']} ({full['output_beats']} beats), allowed latency {latency}")
    assert full["cycles"] <= full["ideal_cycles"] + latency
    return res


def lint_params(files, top, params):
    """verilator --lint-only -Wall with SV parameter overrides."""
    cmd = [verilator_binary(), "--lint-only", "-Wall", "--top-module", top,
           *[f"-G{k}={v}" for k, v in params.items()], *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=verilator_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "%Warning" not in out and "%Error" not in out, out


# ------------------------------------------------------------------------------ model tests
@pytest.mark.parametrize("nx", FORMATS)
def test_add_model_equals_exact_sum_quantized(nx):
    """Every output format, every y format: the bounded-width model == the unbounded exact sum, quantized."""
    gen = torch.Generator().manual_seed(11)
    for ny in FORMATS:
        for no in FORMATS:
            fx, fy, fo = (resolve_format(n, 32) for n in (nx, ny, no))
            cx, sx, cy, sy = operands(fx, fy, 24, gen)
            got = add_model(cx, sx, fx.element, cy, sy, fy.element, fo.element)
            ref = reference_model("add", cx, sx, fx.element, cy, sy, fy.element, fo.element)
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]), (nx, ny, no)


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
@pytest.fixture(scope="module")
def build_cache(tmp_path_factory):
    return make_build_cache(tmp_path_factory, "mx_add")


# one default build covers an fp8 and an int operand and an fp4 result
RTL_CASES = [(("mxfp8_e4m3", "mxint8", "mxfp4"), 32, 8)]
SLOW_CASES = [(("mxint8", "mxint8", "mxint8"), 32, 4), (("mxfp4", "mxfp4", "mxfp8_e4m3"), 32, 32),
              (("mxfp8_e5m2", "mxint4", "mxint8"), 16, 1), (("mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3"), 16, 16)]


@pytest.mark.parametrize("names,block,lanes", RTL_CASES)
def test_add_rtl_matches_model(build_cache, seed, names, block, lanes):
    run_eltwise_rtl(build_cache, "add", names, block, lanes, seed)


@pytest.mark.slow
@pytest.mark.parametrize("names,block,lanes", SLOW_CASES)
def test_add_rtl_matches_model_sweep(build_cache, seed, names, block, lanes):
    run_eltwise_rtl(build_cache, "add", names, block, lanes, seed)


def test_add_rtl_check_can_fail(build_cache, seed):
    names, block, lanes = RTL_CASES[0]
    res = run_eltwise_rtl(build_cache, "add", names, block, lanes, seed, mutate=True)
    assert not res.ok and "beat 3" in res.message


@pytest.mark.parametrize("names,block,lanes", RTL_CASES + SLOW_CASES)
def test_add_lints_clean(tmp_path, names, block, lanes):
    fx, fy, fo = (resolve_format(n, block) for n in names)
    _, params, top = instance_config((1, block), fx, fy, fo, lanes, op="add")
    files = render_with_deps("mx_add", tmp_path)
    lint(files, top)
    lint_params(files, top, params)
