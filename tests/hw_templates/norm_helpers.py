"""Helpers shared by test_mx_rmsnorm.py, test_mx_layernorm.py and test_mx_softmax.py: stimulus,
vector files, the comparison with the ideal MX output, and the RTL tests all three run
(:func:`rtl_tests`)."""
from __future__ import annotations

import copy
import random

import pytest
import torch

from masec.hw_templates.kernels.mx_norm import ordinal
from masec.hw_templates.kernels.mx_relu import stress_mx
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_stream
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import VectorFile
from pipe_helpers import assert_pipe_latency


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


def run_sim(files, top, vf, build_dir, params):
    return run_stream_test(files, top, vf, build_dir, parameters=params)


def mutate_one_beat(vf: VectorFile, stream: str = "m_y") -> int:
    """Flip one bit of the data of an output beat in place; return its index."""
    beats = vf.outputs[stream].beats
    i = len(beats) // 2
    beats[i] = [beats[i][0] ^ 1, *beats[i][1:]]
    return i


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


# ----------------------------------------------------------------------------- RTL tests
def simulate(tmp, top, params, seed, codes, scales, out_codes, out_scales, el_in, el_out, lanes, block, rows):
    """Render ``top`` with its dependencies into ``tmp/rtl`` and run it on the stimulus ``(codes,
    scales)`` against the model output; returns ``(result, meta)`` for :func:`rtl_tests`."""
    assert (out_codes != 0).any(), "stimulus gives an all-zero output"
    files = render_with_deps(top, tmp / "rtl")
    row_beats = codes.shape[1] * block // lanes
    vf = norm_vectors(codes, scales, out_codes, out_scales, el_in, el_out, lanes, seed, rows, row_beats)
    res = run_sim(files, top, vf, tmp / "build", params)
    return res, (files, params, vf, row_beats, block // lanes)


def rtl_tests(top, build_and_run, default, sweep, *, latency, sweep_id, lint_id, lint_parameters, pipes=(0,),
              pipe_latency=None):
    """The RTL tests of a row-reducing kernel, for its test module to bind at module level:
    ``(default_run, test_rtl_matches_model, test_check_can_fail, test_rtl_matches_model_sweep,
    test_lints_clean, test_pipeline_latency) = rtl_tests("mx_rmsnorm", _build_and_run, DEFAULT, SWEEP,
    latency=12, pipes=(0, 3), pipe_latency=M.rmsnorm_latency, ...)``.

    ``build_and_run(tmp, cfg, seed, pipe)`` returns :func:`simulate`'s ``(result, meta)``. The default
    configuration builds once per module and per ``PIPE`` in ``pipes`` (``default_run``, one seed for
    all) for the model check and the mutated-beat check; ``sweep`` runs with the slow tests at every
    ``PIPE``. Full rate must finish within ``ideal + B/P + latency + pipe_latency(params)`` cycles,
    and ``test_pipeline_latency`` checks that the highest ``PIPE`` finishes exactly
    ``pipe_latency(params)`` cycles later than ``PIPE`` 0 at full rate (1 beat/cycle kept, latency as
    modeled). ``default`` always lints at every ``PIPE``, ``sweep`` with the slow tests;
    ``lint_parameters(cfg, pipe)`` gives the SV parameters; ``sweep_id`` / ``lint_id`` name a configuration.
    """
    added = pipe_latency or (lambda params: 0)
    seed0 = random.SystemRandom().randrange(1, 2 ** 31)
    runs: dict[int, tuple] = {}

    def run_default(tmp_path_factory, pipe):
        if pipe not in runs:
            tmp = tmp_path_factory.mktemp(f"{top.removeprefix('mx_')}_default_pipe{pipe}")
            print(f"\n[masec] {top} default config PIPE {pipe} seed {seed0}")
            res, meta = build_and_run(tmp, default, seed0, pipe)
            runs[pipe] = (tmp, res, meta)
        return runs[pipe]

    def check_result(res, cfg, meta):
        assert res.ok, res.message
        full = res.run("full_rate")
        _, params, _, row_beats, bpb = meta
        extra = added(params)
        print(f"{top} {cfg} PIPE {params.get('PIPE', 0)}: full_rate {full['cycles']} cycles, ideal "
              f"{full['ideal_cycles']} (all beats + one row of {row_beats} beats), pipeline latency {extra}")
        assert full["cycles"] <= full["ideal_cycles"] + bpb + latency + extra, \
            f"{full['cycles']} cycles > ideal {full['ideal_cycles']} + B/P {bpb} + latency {latency} + {extra}"

    @pytest.fixture(scope="module", params=list(pipes), ids=[f"pipe{p}" for p in pipes])
    def default_run(request, tmp_path_factory):
        return run_default(tmp_path_factory, request.param)

    def test_rtl_matches_model(default_run):
        _, res, meta = default_run
        check_result(res, default, meta)

    def test_check_can_fail(default_run):
        """One flipped bit in one expected beat must fail the run and name that beat (same build)."""
        tmp, _, (files, params, vf, _, _) = default_run
        wrong = copy.deepcopy(vf)
        i = mutate_one_beat(wrong)
        res = run_sim(files, top, wrong, tmp / "build", params)
        assert not res.ok
        assert f"beat {i}" in res.message, res.message

    def test_pipeline_latency(tmp_path_factory):
        """The deepest PIPE: same outputs (checked above), full rate exactly pipe_latency cycles later."""
        lo, hi = min(pipes), max(pipes)
        _, r0, _ = run_default(tmp_path_factory, lo)
        _, r1, meta = run_default(tmp_path_factory, hi)
        assert r0.ok and r1.ok, (r0.message, r1.message)
        c0, c1 = r0.run("full_rate")["cycles"], r1.run("full_rate")["cycles"]
        assert lo == 0
        assert assert_pipe_latency(top, c0, c1, hi, meta[1]) == added(meta[1])

    @pytest.mark.slow
    @pytest.mark.parametrize("pipe", list(pipes))
    @pytest.mark.parametrize("cfg", sweep, ids=[sweep_id(c) for c in sweep])
    def test_rtl_matches_model_sweep(tmp_path, seed, cfg, pipe):
        res, meta = build_and_run(tmp_path, cfg, seed, pipe)
        check_result(res, cfg, meta)

    # lint: the default configuration always, the sweep with the slow tests
    lint_cases = [default, *(pytest.param(c, marks=pytest.mark.slow) for c in sweep)]

    @pytest.mark.parametrize("pipe", list(pipes))
    @pytest.mark.parametrize("cfg", lint_cases, ids=lint_id)
    def test_lints_clean(tmp_path, cfg, pipe):
        files = render_with_deps(top, tmp_path)
        lint(files, top, parameters=lint_parameters(cfg, pipe))

    return (default_run, test_rtl_matches_model, test_check_can_fail, test_rtl_matches_model_sweep, test_lints_clean,
            test_pipeline_latency)
