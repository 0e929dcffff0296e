"""Helpers shared by test_mx_add.py and test_mx_mul.py: operands, vector files, the RTL run and
the RTL tests both run (:func:`eltwise_rtl_tests`)."""
from __future__ import annotations


import pytest
import torch

from masec.hw_templates.kernels.mx_eltwise import (MAX_PIPE, add_latency, add_model, instance_config, mul_latency,
                                                   mul_model, reference_model)
from masec.hw_templates.kernels.mx_relu import resolve_format, stress_mx
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import VectorFile
from pipe_helpers import assert_pipe_latency

MODELS = {"add": add_model, "mul": mul_model}
LATENCY = {"add": add_latency, "mul": mul_latency}
PIPES = [0, MAX_PIPE]   # unpipelined and every cut
FORMATS = ["mxint8", "mxfp8_e4m3", "mxfp4", "mxfp8_e5m2", "mxint4", "mxfp6_e3m2"]


def operands(fx, fy, nblocks, gen, close_scales=0.5):
    """Stress operands; a fraction of the blocks get y scales within +-3 of x (cancellation, ties)."""
    cx, sx = stress_mx(fx.element, nblocks, fx.block_size, gen)
    cy, sy = stress_mx(fy.element, nblocks, fy.block_size, gen)
    k = int(nblocks * close_scales)
    sy[:k] = (sx[:k] + torch.randint(-3, 4, (k,), generator=gen)).clamp(0, 254)
    return cx, sx, cy, sy


def model_equals_reference(op, nx, seed):
    """x in ``nx``, every y and output format in FORMATS (block 32): the bounded-width model of ``op``
    == the unbounded exact result, quantized (reference_model). Returns ``(fx, fy, operands)`` of every
    combination for further checks."""
    gen = torch.Generator().manual_seed(seed)
    checked = []
    for ny in FORMATS:
        for no in FORMATS:
            fx, fy, fo = (resolve_format(n, 32) for n in (nx, ny, no))
            cx, sx, cy, sy = operands(fx, fy, 24, gen)
            got = MODELS[op](cx, sx, fx.element, cy, sy, fy.element, fo.element)
            ref = reference_model(op, cx, sx, fx.element, cy, sy, fy.element, fo.element)
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]), (nx, ny, no)
            checked.append((fx, fy, (cx, sx, cy, sy)))
    return checked


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


def run_eltwise_rtl(build_cache, op, names, block, lanes, seed, mutate=False, pipe=0):
    """Simulate one configuration at ``PIPE = pipe`` (gaps, backpressure, then full rate); returns the
    result (its full-rate cycles include the PIPE's latency)."""
    fx, fy, fo = (resolve_format(n, block) for n in names)
    _, params, top = instance_config((2, 2 * block), fx, fy, fo, lanes, op=op, pipe=pipe)
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
    # register stage + one block in mx_quantize + its output, plus what PIPE adds
    latency = block // lanes + 2 + LATENCY[op](params)
    print(f"mx_{op} {'+'.join(names)} B{block} P{lanes} PIPE {pipe}: full_rate {full['cycles']} cycles, ideal "
          f"{full['ideal_cycles']} ({full['output_beats']} beats), allowed latency {latency}; seed {seed}")
    assert full["cycles"] <= full["ideal_cycles"] + latency, \
        f"{full['cycles']} cycles > ideal {full['ideal_cycles']} + latency {latency}"
    return res


def eltwise_rtl_tests(op, rtl_cases, slow_cases):
    """The RTL tests of ``mx_<op>``, for its test module to bind at module level: ``(build_cache,
    test_<op>_rtl_matches_model, test_<op>_rtl_matches_model_sweep, test_<op>_rtl_check_can_fail,
    test_<op>_lints_clean, test_<op>_pipe_latency) = eltwise_rtl_tests(op, RTL_CASES, SLOW_CASES)``.

    Cases are ``(names, block, lanes)``; ``rtl_cases`` run by default at PIPE 0 and MAX_PIPE (the
    first one also with one flipped output bit, which must fail the run at beat 3), ``slow_cases``
    with the slow tests; all of them lint at both PIPEs. The latency test checks that MAX_PIPE adds
    exactly ``SPEC.extra["latency"]`` full-rate cycles (so the pipeline still takes 1 beat/cycle).
    Builds and full-rate cycle counts are shared between tests of one parameter set (``build_cache``).
    """
    kernel = f"mx_{op}"

    @pytest.fixture(scope="module")
    def build_cache(tmp_path_factory):
        get = make_build_cache(tmp_path_factory, kernel)
        get.full_cycles = {}
        return get

    def run(build_cache, seed, names, block, lanes, pipe):
        res = run_eltwise_rtl(build_cache, op, names, block, lanes, seed, pipe=pipe)
        build_cache.full_cycles[(names, block, lanes, pipe)] = res.run("full_rate")["cycles"]

    @pytest.mark.parametrize("pipe", PIPES)
    @pytest.mark.parametrize("names,block,lanes", rtl_cases)
    def test_rtl_matches_model(build_cache, seed, names, block, lanes, pipe):
        run(build_cache, seed, names, block, lanes, pipe)

    @pytest.mark.slow
    @pytest.mark.parametrize("pipe", [1, 2])
    @pytest.mark.parametrize("names,block,lanes", slow_cases)
    def test_rtl_matches_model_sweep(build_cache, seed, names, block, lanes, pipe):
        run(build_cache, seed, names, block, lanes, pipe)

    def test_pipe_latency(build_cache, seed):
        """Full rate: PIPE = MAX_PIPE takes exactly SPEC.extra["latency"] cycles more than PIPE 0."""
        names, block, lanes = rtl_cases[0]
        for pipe in PIPES:
            if (names, block, lanes, pipe) not in build_cache.full_cycles:
                run(build_cache, seed, names, block, lanes, pipe)
        c0, cmax = (build_cache.full_cycles[(names, block, lanes, p)] for p in PIPES)
        assert_pipe_latency(kernel, c0, cmax, MAX_PIPE)

    def test_rtl_check_can_fail(build_cache, seed):
        names, block, lanes = rtl_cases[0]
        res = run_eltwise_rtl(build_cache, op, names, block, lanes, seed, mutate=True)
        assert not res.ok and "beat 3" in res.message, res.message

    @pytest.mark.parametrize("names,block,lanes", rtl_cases + slow_cases)
    def test_lints_clean(tmp_path, names, block, lanes):
        fx, fy, fo = (resolve_format(n, block) for n in names)
        files = render_with_deps(kernel, tmp_path)
        lint(files, kernel)
        for pipe in PIPES:
            _, params, top = instance_config((1, block), fx, fy, fo, lanes, op=op, pipe=pipe)
            lint(files, top, parameters=params)

    return (build_cache, test_rtl_matches_model, test_rtl_matches_model_sweep, test_rtl_check_can_fail,
            test_lints_clean, test_pipe_latency)
