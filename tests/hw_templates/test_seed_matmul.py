"""mx_matmul with seed activation operands (AFMT / BFMT: NVFP4, M2XFP activations, Anda): the operand
decode vs the format library, accumulators vs exact rationals, RTL vs model under random gaps and
backpressure (both transposes, scale and metadata extremes) at PIPE 0 and 3, a mutant, lint."""
import random
from fractions import Fraction

import pytest
import torch

from masec.formats import parse_format
from masec.hw_templates.kernels.mx_linear import stream_widths
from masec.hw_templates.kernels.mx_matmul import (
    MAX_PIPE, _elements, ideal_cycles, instance_config, latency, matmul_accumulators, matmul_model, operand_terms,
)
from masec.hw_templates.manifest import kernel
from masec.hw_templates.render import render_with_deps
from masec.sim.mxstream import mx_beats
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile
from mx_helpers import write_multi_top
from pipe_helpers import assert_pipe_latency
from test_seed_linear import random_x_stream, seed_stream, stream_fmt, tame_x, xterm_values

SEED_NAMES = ("nvfp4", "m2xfp4_a", "anda4", "anda1", "anda15")


def operand_values(t, length: int) -> list[list[Fraction]]:
    """Exact values of decoded operand rows as mx_matmul's products read them (:func:`_elements`:
    element significand times NVFP4's scale significand, offset, E8M0-equivalent exponent)."""
    sig, off, ex = _elements(t.codes, t.exps, t.elem, length, t.sig)
    from masec.hw_templates.kernels.mx_linear import elem_info
    exmin = elem_info(t.elem).exmin
    return [[Fraction(s) * Fraction(2) ** (o + exmin + e - 127) for s, o, e in zip(rs, ro, re)]
            for rs, ro, re in zip(sig.tolist(), off.tolist(), ex.tolist())]


# ----------------------------------------------------------------------------- model tests
@pytest.mark.parametrize("name", SEED_NAMES)
def test_operand_decode_is_the_format_library(name):
    """A seed-format operand read as mx_matmul's products read it (decoded element, NVFP4's UE4M3
    significand multiplied into the element significand, E8M0-equivalent exponent) is exactly the
    format library's decode: ties for M2XFP's top-1, zero blocks, tiny and huge scales."""
    block = 16 if name == "nvfp4" else 32
    f = parse_format(name, block_size=block)
    g = torch.Generator().manual_seed(len(name))
    x = torch.randn(8, 128, generator=g) * torch.logspace(-8, 8, 8).unsqueeze(-1)
    x[1, :40] = 0.0
    x[2, 8:16] = 1.0
    x[3, 16:24] = torch.tensor([0.1, 0.2, 0.15, 0.05, 0.0, 4.0, 0.0, 0.0])
    ts = None
    if name == "nvfp4":   # a power-of-two tensor scale, as the compiler calibrates it
        import dataclasses
        enc = f.encode(x)
        ts = -5
        enc = dataclasses.replace(enc, meta={**enc.meta, "tensor_scale": torch.tensor(2.0 ** ts)})
    else:
        enc = f.encode(x)
    meta = enc.meta["subgroup_meta"].reshape(8, -1, block // 8) if name == "m2xfp4_a" else None
    t = operand_terms(f, enc.codes.reshape(8, -1, block), enc.scales.reshape(8, -1), meta, ts)
    got = torch.tensor([[float(v) for v in r] for r in operand_values(t, 128)], dtype=torch.float64)
    assert torch.equal(got.to(torch.float32), f.decode(enc))
    assert torch.equal(got, xterm_values(t).reshape(8, 128))


def random_operand(rng, name: str, rows: int, length: int, block: int, tame: bool = True):
    """(format, ts_exp, codes, scales, meta) of a random operand stream ``name`` (:func:`stream_fmt` names)
    with the scale / metadata extremes of test_seed_linear's generators; rows >= 1 tamed."""
    f, ts = stream_fmt(name, block)
    nb = -(-length // block)
    c, s, m = random_x_stream(rng, name, f, rows, nb, block, length)
    if tame:
        tame_x(name, s)
    return f, ts, c, s, m


@pytest.mark.parametrize("af,bf,trans_b", [("nvfp4:-3", "m2xfp4_a", True), ("anda5", "nvfp4:4", False),
                                           ("m2xfp4_a", "anda4", False), ("nvfp4:-1", "nvfp4:2", True),
                                           ("mxint8", "m2xfp4_a", False)])
def test_accumulators_within_bound_of_exact(af, bf, trans_b, seed):
    """With seed-format operands the model's accumulators equal the exact rational A B (operands from
    :func:`operand_values`, checked against the library above) within K ulps (one per product step)."""
    rng = random.Random(seed)
    M, K, N = 3, 40, 24
    ba = 16 if af.startswith("nvfp4") else 32
    bb = 16 if bf.startswith("nvfp4") else 32
    fa, ta, ac, asc, am = random_operand(rng, af, M, K, ba)
    fb, tb_, bc, bsc, bm = random_operand(rng, bf, N if trans_b else K, K if trans_b else N, bb)
    A_t, B_t = operand_terms(fa, ac, asc, am, ta), operand_terms(fb, bc, bsc, bm, tb_)
    A, X = matmul_accumulators(A_t.codes, A_t.exps, A_t.elem, B_t.codes, B_t.exps, B_t.elem, trans_b, K, N,
                               a_sig=A_t.sig, b_sig=B_t.sig)
    av = operand_values(A_t, K)
    bv = operand_values(B_t, K if trans_b else N)
    for m in range(M):
        for n in range(N):
            ex = sum(av[m][k] * (bv[n][k] if trans_b else bv[k][n]) for k in range(K))
            err = abs(Fraction(A[m][n]) * Fraction(2) ** X[m][n] - ex)
            assert err <= K * Fraction(2) ** X[m][n], (m, n)


def test_seed_operands_are_checked():
    """NVFP4's tensor-scale exponent is given exactly for an NVFP4 operand; an M2XFP operand needs lanes
    a multiple of 8; an anda16 or seed-weight operand and a seed output are refused (ValueError)."""
    mx, nv, m2 = parse_format("mxint8"), parse_format("nvfp4"), parse_format("m2xfp4_a")
    with pytest.raises(ValueError, match="a_ts_exp"):
        instance_config(4, 32, 8, nv, mx, mx, True, 8, 8, 8)
    with pytest.raises(ValueError, match="b_ts_exp"):
        instance_config(4, 32, 8, mx, mx, mx, True, 8, 8, 8, b_ts_exp=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        instance_config(4, 32, 8, m2, mx, mx, True, 4, 4, 4)
    for bad in ("anda16", "m2xfp4_w", "bitmod_fp4"):
        with pytest.raises(ValueError, match="operand B"):
            instance_config(4, 32, 8, mx, parse_format(bad), mx, True, 8, 8, 8)
    with pytest.raises(ValueError, match="output"):
        instance_config(4, 32, 8, mx, mx, m2, True, 8, 8, 8)
    _, p, _ = instance_config(4, 32, 8, mx, mx, mx, True, 8, 8, 8)
    assert not {"AFMT", "BFMT", "A_TS_EXP", "B_TS_EXP"} & set(p)   # MX instances: the former parameter list


def test_manifest_entry():
    """mx_matmul's manifest names the seed parameters, the shared decode module it instantiates, seed
    examples (linted by test_lint_all), and its latency does not depend on the operand formats."""
    spec = kernel("mx_matmul")
    names = {p.name for p in spec.params}
    assert {"AFMT/BFMT", "A_TS_EXP/B_TS_EXP"} <= names
    assert "mx_act_decode" in spec.deps and "mx_act_decode" in kernel("mx_linear").deps
    assert any("AFMT" in ex["params"] for ex in spec.examples) and any("BFMT" in ex["params"] for ex in spec.examples)
    for pipe in range(MAX_PIPE + 1):
        assert latency({"PIPE": pipe, "AFMT": 1, "BFMT": 2}) == latency({"PIPE": pipe})


# ----------------------------------------------------------------------------- RTL tests
#  af, bf, of, M, K, N, trans_b, BA, BB, BC, P_A, P_B, P_N, loads
# every NPN = ceil(N / P_N) is odd or 1, so no configuration interleaves its accumulators (that is
# format-independent and tested in test_mx_matmul.py) and all add the same latency at PIPE 3
RTL_CONFIGS = [
    ("nvfp4:-3", "m2xfp4_a", "mxint8", 3, 40, 12, True, 16, 32, 16, 8, 8, 4, 2),      # Q K^T, partial blocks
    ("anda5", "nvfp4:4", "mxfp8_e4m3", 3, 12, 24, False, 32, 16, 16, 4, 8, 8, 2),     # scores x V
    ("m2xfp4_a", "anda4", "mxint8", 2, 32, 24, False, 32, 32, 16, 16, 8, 8, 2),       # 2 subgroups per A beat
    ("nvfp4:-1", "nvfp4:2", "mxint8", 2, 32, 8, True, 16, 16, 8, 8, 4, 8, 2),         # both significands
    ("mxint8", "m2xfp4_a", "mxint8", 2, 10, 24, False, 32, 32, 32, 8, 8, 8, 2),       # M2XFP along N
]
SLOW_CONFIGS = [
    ("anda15", "anda1", "mxint8", 3, 24, 8, True, 32, 32, 8, 8, 8, 8, 2),
    ("m2xfp4_a", "m2xfp4_a", "mxfp8_e4m3", 2, 64, 16, True, 32, 32, 16, 32, 16, 8, 2),
    ("nvfp4:0", "mxfp8_e4m3", "mxint8", 3, 16, 40, False, 16, 32, 32, 16, 8, 8, 2),
]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("seed_matmul_builds")


def build_case(rng, cfg):
    """(A beats, B beats, C beats, params, ideal cycles) of ``loads`` random matmuls of one configuration."""
    af, bf, of, M, K, N, tb, BA, BB, BC, pa, pb, pn, loads = cfg
    o_fmt = parse_format(of, block_size=BC)
    a_beats, b_beats, y_beats = [], [], []
    for _ in range(loads):
        fa, ta, ac, asc, am = random_operand(rng, af, M, K, BA)
        fb, tb_, bc, bsc, bm = random_operand(rng, bf, N if tb else K, K if tb else N, BB)
        A_t, B_t = operand_terms(fa, ac, asc, am, ta), operand_terms(fb, bc, bsc, bm, tb_)
        yc, ys = matmul_model(A_t.codes, A_t.exps, A_t.elem, B_t.codes, B_t.exps, B_t.elem, o_fmt.element, BC, tb,
                              K, N, a_sig=A_t.sig, b_sig=B_t.sig)
        a_beats += seed_stream(ac, asc, am, 4 if am is not None else stream_widths(fa, 1)[0], pa).beats
        b_beats += seed_stream(bc, bsc, bm, 4 if bm is not None else stream_widths(fb, 1)[0], pb).beats
        y_beats += mx_beats(yc, ys, o_fmt.element.bits, pn)
    _, params, _ = instance_config(M, K, N, fa, fb, o_fmt, tb, pa, pb, pn, a_ts_exp=ta, b_ts_exp=tb_)
    return a_beats, b_beats, y_beats, params, loads * ideal_cycles(M, K, N, pn, BB, tb, pb)


def run_configs(build_root, seed, cfgs, pipe=0):
    """One Verilator build of ``cfgs`` (instance i = streams s_a<i>, s_b<i>, m_y<i>) at ``PIPE = pipe``;
    returns (result, ideal, bound)."""
    rng = random.Random(seed)
    inputs, outputs, insts, ideal, bound = {}, {}, [], 0, 0
    for i, cfg in enumerate(cfgs):
        af, bf, of, M, K, N, tb, BA, BB, BC, pa, pb, pn, loads = cfg
        a_beats, b_beats, y_beats, params, ideal_i = build_case(rng, cfg)
        params["PIPE"] = pipe
        wa = stream_widths(stream_fmt(af, BA)[0], pa)[0]
        wb = stream_widths(stream_fmt(bf, BB)[0], pb)[0]
        wy = pn * parse_format(of).element.bits
        inputs[f"s_a{i}"] = StreamVectors(("data", "scale"), a_beats)
        inputs[f"s_b{i}"] = StreamVectors(("data", "scale"), b_beats)
        outputs[f"m_y{i}"] = StreamVectors(("data", "scale"), y_beats, {"data": (pn, parse_format(of).element.bits)})
        insts.append((params, {"s_a": (wa, True), "s_b": (wb, True), "m_y": (wy, True)}))
        # as test_mx_matmul: per load the RAM read after the last B write and the pipeline (6), then one
        # C block in the quantizer, plus the pipeline's latency
        ideal, bound = max(ideal, ideal_i), max(bound, ideal_i + loads * 6 + BC // pn + 2 + latency(params))
    vf = VectorFile(inputs, outputs, seed=seed, gap_prob=0.3, stall_prob=0.3, ideal_cycles=ideal)
    folder = build_root / (f"seed_pipe{pipe}_" + "_".join(str(abs(hash(c)) % 10**8) for c in cfgs))
    files = render_with_deps("mx_matmul", folder / "rtl")
    files.append(write_multi_top(folder / "rtl" / "tb_seed_matmul.sv", "tb_seed_matmul", "mx_matmul", insts))
    return run_stream_test(files, "tb_seed_matmul", vf, folder / "build"), ideal, bound


def check_configs(build_root, seed, cfgs, pipe=0):
    res, ideal, bound = run_configs(build_root, seed, cfgs, pipe)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"seed mx_matmul PIPE {pipe}: full_rate {full['cycles']} cycles (slowest instance), ideal {ideal}, "
          f"bound {bound}")
    assert full["cycles"] <= bound
    return full["cycles"]


_FULL_RATE: dict = {}   # PIPE -> full-rate cycles of RTL_CONFIGS at _SEED0 (test_pipeline_latency)
_SEED0 = random.SystemRandom().randrange(1, 2 ** 31)   # one stimulus for both PIPEs


@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
def test_rtl_matches_model(build_root, pipe):
    """Every seed operand format as A and as B, both transposes, in one build: NVFP4 (UE4M3 scales 0 /
    subnormal / 448, tensor scales 2^-3 .. 2^4, both operands' significands), M2XFP (top-1 ties,
    refined zeros, every metadata value, E8M0 extremes; subgroups along K and along N), Anda (S 0..30);
    partial blocks. Exact under random gaps and backpressure, then full rate within the bound."""
    print(f"\n[masec] seed mx_matmul PIPE {pipe} seed {_SEED0} (replay: set _SEED0)")
    _FULL_RATE[pipe] = check_configs(build_root, _SEED0, RTL_CONFIGS, pipe)


def test_pipeline_latency(build_root):
    """With seed operands the deepest PIPE still finishes exactly latency(params) cycles after PIPE 0 at
    full rate (the write-side decode adds no cycle; one beat per cycle on both inputs)."""
    for pipe in (0, MAX_PIPE):
        if pipe not in _FULL_RATE:
            _FULL_RATE[pipe] = check_configs(build_root, _SEED0, RTL_CONFIGS, pipe)
    assert_pipe_latency("mx_matmul", _FULL_RATE[0], _FULL_RATE[MAX_PIPE], MAX_PIPE, {"N": 12, "P_N": 4})


@pytest.mark.slow
@pytest.mark.parametrize("pipe", [0, 2])
def test_rtl_matches_model_more(build_root, seed, pipe):
    """Anda M = 15 x M = 1, M2XFP x M2XFP at P_A = B (4 subgroups per beat), NVFP4 A (tensor scale 1)
    x MX fp8 B row-major."""
    check_configs(build_root, seed, SLOW_CONFIGS, pipe)


def _m2x_meta_one(f):
    return lambda codes, scales, meta: f(codes, scales, torch.ones_like(torch.as_tensor(meta)))


MUTANTS = {   # name: (mx_linear function the shared decode model uses, wrong version built from it)
    "m2xfp metadata ignored": ("m2xfp_act_as_int", _m2x_meta_one),
    "nvfp4 scale significand ignored": ("nvfp4_scale_terms", lambda f: lambda s: (torch.full_like(f(s)[0], 8),
                                                                                  f(s)[1])),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_rtl_check_can_fail(build_root, seed, mutant):
    """A deliberately wrong operand decode in the model fails against the RTL build of
    test_rtl_matches_model; the wrong expected outputs are first asserted to differ from the right ones."""
    import masec.hw_templates.kernels.mx_linear as ml

    def expected():
        rng = random.Random(seed)
        return [build_case(rng, c)[2] for c in RTL_CONFIGS]

    name, wrong = MUTANTS[mutant]
    orig = getattr(ml, name)
    right = expected()
    setattr(ml, name, wrong(orig))
    try:
        assert expected() != right, "the vectors do not expose the mutant"
        res, _, _ = run_configs(build_root, seed, RTL_CONFIGS, pipe=0)
    finally:
        setattr(ml, name, orig)
    assert not res.ok and "differs" in res.message


@pytest.mark.parametrize("pipe", [0, MAX_PIPE])
@pytest.mark.parametrize("cfg", RTL_CONFIGS + SLOW_CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}-T{int(c[6])}-P{c[12]}")
def test_lint_clean(tmp_path, cfg, pipe):
    af, bf, of, M, K, N, tb, BA, BB, BC, pa, pb, pn, loads = cfg
    (fa, ta), (fb, tb_) = stream_fmt(af, BA), stream_fmt(bf, BB)
    _, params, top = instance_config(M, K, N, fa, fb, parse_format(of, block_size=BC), tb, pa, pb, pn,
                                     a_ts_exp=ta, b_ts_exp=tb_)
    params["PIPE"] = pipe
    files = render_with_deps("mx_matmul", tmp_path)
    lint(files, top, parameters=params)
