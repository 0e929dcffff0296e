"""GPTQ weight rounding (passes/transform/gptq.py): less output error than round-to-nearest on a
linear with known inputs, quantize(W') == W' (also when a block's maximum shrinks), deterministic,
the option through precision.toml and the CLI, refusals; compile and search emulation agree."""
import sys
from pathlib import Path

import pytest
import torch

from masec.backend import lower
from masec.cli import main as masec_main
from masec.config import CompileConfig
from masec.errors import MasecError
from masec.formats import parse_format
from masec.passes.search.emulate import Emulator, spec_from_assignment
from masec.passes.search.precision_file import PrecisionError, dump_precision, parse_precision
from masec.passes.search.space import Candidate, build_space, discover_sites
from masec.passes.transform.gptq import column_quantizer, gptq_round, hessian, round_weight, settle
from masec.reference import hardware_outputs

ROOT = Path(__file__).parents[2]
SEARCH = ROOT / "tests" / "passes" / "search"
sys.path.insert(0, str(SEARCH))
import toy_model  # noqa: E402

FORMATS = [("mxint4", 32), ("mxfp4", 32), ("mxfp4", 16), ("mxint8", 64), ("mxfp6_e2m3", 32), ("nvfp4", 16),
           ("m2xfp4_w", 32), ("bitmod_fp4", 128), ("bitmod_fp3", 128)]


def _fmt(name, block):
    return parse_format(name) if name.startswith("bitmod") else parse_format(name, block_size=block)


def _problem(seed=0, rows=48, cols=80):
    """Correlated inputs (GPTQ's gain comes from the correlations) and a weight, not block aligned."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) * 0.3 + torch.eye(cols)
    x = torch.randn(400, cols, generator=g) @ mix
    w = torch.randn(rows, cols, generator=g) * 0.05
    return x, w


@pytest.mark.parametrize("name,block", FORMATS)
def test_gptq_beats_round_to_nearest_and_is_on_the_grid(name, block):
    x, w = _problem()
    f = _fmt(name, block)
    wq, _ = round_weight(w, hessian(x), f)
    rtn = f.quantize(w)
    e_gptq = float((x @ wq.T - x @ w.T).norm())
    e_rtn = float((x @ rtn.T - x @ w.T).norm())
    print(f"{name}@{block}: ||X W'^T - X W^T|| {e_gptq:.4f}, round-to-nearest {e_rtn:.4f}")
    assert e_gptq < 0.9 * e_rtn
    assert torch.equal(f.quantize(wq), wq)          # idempotent: the hardware holds these codes
    assert wq.dtype == torch.float32 and wq.shape == w.shape


def test_identity_hessian_gives_round_to_nearest():
    """No correlations and no dampening growth: every column's error stays in its column."""
    _, w = _problem(1)
    for name, block in (("mxint4", 32), ("mxfp4", 16)):
        f = _fmt(name, block)
        assert torch.equal(gptq_round(w, torch.eye(w.shape[1], dtype=torch.float64), f, act_order=False),
                           f.quantize(w))


def test_mx_block_whose_maximum_shrinks_keeps_its_values():
    """A block whose largest element GPTQ moves down: re-quantization picks a smaller exponent that
    holds the same values, so nothing moves (settle changes 0 elements)."""
    f = _fmt("mxint4", 32)
    w = torch.full((1, 32), 0.01)
    w[0, 0] = 1.0            # block exponent from this element
    q = f.quantize(w).clone()
    q[0, 0] = 0.125          # as if GPTQ had moved it: the block max now sits two binades lower
    state = column_quantizer(f, w).start(w)
    assert int(state[0]) == 0
    out, moved = settle(q, f)
    assert moved == 0 and torch.equal(out, q)


def test_seed_format_scale_change_is_settled():
    """BitMoD/NVFP4 scales follow the block maximum: a block that GPTQ left off its own grid is
    re-quantized until it is a fixed point."""
    for name, block in (("bitmod_fp4", 128), ("nvfp4", 16), ("m2xfp4_w", 32)):
        f = _fmt(name, block)
        q = f.quantize(torch.linspace(0.1, 1, 128).reshape(1, 128))
        top = q.abs() == q.abs().max()
        q[top] *= 0.7              # the block maxima shrink off the grid: the scales would change
        out, moved = settle(q, f)
        assert moved > 0 and torch.equal(f.quantize(out), out), name


def test_deterministic():
    x, w = _problem(2)
    h = hessian(x)
    for name, block in (("mxfp4", 32), ("nvfp4", 16), ("m2xfp4_w", 32)):
        f = _fmt(name, block)
        a, _ = round_weight(w, h, f)
        b, _ = round_weight(w.clone(), h.clone(), f)
        assert a.numpy().tobytes() == b.numpy().tobytes()


def test_unsupported_format_is_refused():
    with pytest.raises(MasecError, match="no GPTQ rounding for weight format 'int8'"):
        column_quantizer(parse_format("int8"), torch.zeros(4, 4))
    with pytest.raises(MasecError, match="--weight-rounding 'round'"):
        CompileConfig(model_file="m.py", out="o", weight_rounding="round").validated()


MIXED = {"weight:big": ("mxint4", 32), "weight:small1": ("nvfp4", 16), "weight:small2": ("m2xfp4_w", 32),
         "act:x": ("mxfp6_e2m3", 32)}


def _space():
    sites, _, _ = discover_sites(toy_model.model, toy_model.example_inputs)
    return build_space(sites, "node")


@torch.no_grad()
def test_compile_and_search_emulation_agree(tmp_path):
    """The compiled design's bit-exact reference (parameter memories from W') equals the search's
    emulation with GPTQ weights; the compiled weights are GPTQ's, on their grid, not RTN's."""
    space = _space()
    assign = {k: Candidate.make(f, b) for k, (f, b) in MIXED.items()}
    spec = spec_from_assignment(space, assign)
    spec.options = {"weight_rounding": "gptq", "calibration_batches": 2}
    prec = tmp_path / "precision.toml"
    prec.write_text(dump_precision(spec))
    cfg = CompileConfig(model_file=str(SEARCH / "toy_model.py"), out=str(tmp_path / "d"),
                        precision_file=str(prec)).validated()
    assert (cfg.weight_rounding, cfg.calibration_batches) == ("gptq", 2)
    gm, ir, values, inputs = lower(cfg)
    hw = hardware_outputs(ir, values)[0]
    model = toy_model.model
    with Emulator(model, space, example_inputs=toy_model.example_inputs, weight_rounding="gptq",
                  calibration=toy_model.calibration_data[:2]) as emu:
        emu.apply(assign)
        y = model(*inputs)
        assert torch.equal(y, hw), f"{int((y != hw).sum())} of {y.numel()} elements differ"
        w = emu.gptq_weights()
    fmts = {n.name: n.meta["masec"].formats["weight"] for n in gm.graph.nodes if n.name in ("big", "small1", "small2")}
    assert sorted(f.name for f in fmts.values()) == ["m2xfp4_w", "mxint4", "nvfp4"]
    for name, tf in fmts.items():      # blocks as compiled (a linear's weight blocks follow its input's)
        wq = getattr(gm, f"_masec_gptq_{name}")
        assert torch.equal(wq, w[(name, "weight")])
        f = tf.parse()
        assert torch.equal(f.quantize(wq), wq)
        assert not torch.equal(wq, f.quantize(getattr(model, name).weight))
    for n in ("big", "small1", "small2"):     # the user's model is not touched
        assert not hasattr(model, f"_masec_gptq_{n}")


def test_option_round_trips_and_cli_flag_wins(tmp_path):
    text = '[default]\nact = "mxint8"\nweight = "mxint4"\n\n[options]\ncalibration_batches = 4\nweight_rounding = "gptq"\n'
    spec = parse_precision(text)
    assert spec.options == {"weight_rounding": "gptq", "calibration_batches": 4}
    assert parse_precision(dump_precision(spec)) == spec
    assert dump_precision(spec).endswith(text.split("\n\n", 1)[1])
    prec = tmp_path / "p.toml"
    prec.write_text(text)
    model = str(SEARCH / "toy_model.py")
    cfg = CompileConfig(model_file=model, out="o", precision_file=str(prec)).validated()
    assert (cfg.weight_rounding, cfg.calibration_batches) == ("gptq", 4)
    assert '"weight_rounding": "gptq"' in cfg.to_json()
    cfg = CompileConfig(model_file=model, out="o", precision_file=str(prec), weight_rounding="nearest").validated()
    assert cfg.weight_rounding == "nearest" and "weight_rounding" not in cfg.to_json()
    for bad, msg in (('weight_rounding = "best"', 'use "nearest" or "gptq"'), ("calibration_batches = 0", "1 or more"),
                     ("damp = 0.1", "unknown key `damp`")):
        with pytest.raises(PrecisionError, match=msg):
            parse_precision(f"[options]\n{bad}\n")


def test_refusals_without_calibration_data(tmp_path, capsys):
    mlp = str(ROOT / "examples" / "mlp" / "model.py")    # defines no calibration_data
    rc = masec_main(["compile", mlp, "--format", "mxint4", "--weight-rounding", "gptq", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs `calibration_data` in the model file" in err[0], err
    rc = masec_main(["search", mlp, "--weight-rounding", "gptq", "--trials", "0", "--no-progress",
                     "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "needs `calibration_data`" in err[-1], err
    with pytest.raises(MasecError, match="needs `calibration_data`"):
        Emulator(toy_model.model, _space(), example_inputs=toy_model.example_inputs, weight_rounding="gptq")


@pytest.mark.parametrize("mixed", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_compiled_gptq_design_simulates_bit_exactly(tmp_path, mixed):
    """masec sim of a GPTQ design (MX weights; MX + NVFP4 + M2XFP weights): the parameter memories hold
    W' and the RTL equals the bit-exact reference under random gaps and backpressure."""
    from masec.backend import compile_model
    from masec.simulate import simulate

    if mixed:
        spec = spec_from_assignment(_space(), {k: Candidate.make(f, b) for k, (f, b) in MIXED.items()})
        spec.options = {"weight_rounding": "gptq"}
        prec = tmp_path / "p.toml"
        prec.write_text(dump_precision(spec))
        cfg = CompileConfig(model_file=str(SEARCH / "toy_model.py"), out=str(tmp_path / "d"), precision_file=str(prec))
    else:
        cfg = CompileConfig(model_file=str(SEARCH / "toy_model.py"), out=str(tmp_path / "d"), format="mxint4",
                            weight_rounding="gptq")
    res = compile_model(cfg)
    assert any(str(n.target).startswith("_masec_gptq_") for n in res.gm.graph.nodes if n.op == "get_attr")
    s = simulate(tmp_path / "d", seed=3)
    print(f"seed {s.seed}")
    assert s.result.ok, s.result.message


def test_search_writes_the_option_and_compile_reads_it(tmp_path):
    """masec search --weight-rounding gptq: precision.toml and search.json say gptq; masec compile
    --precision of that file rounds by GPTQ with the same calibration batches."""
    import json

    out = tmp_path / "s"
    rc = masec_main(["search", str(SEARCH / "toy_model.py"), "--weight-rounding", "gptq", "--gptq-batches", "2",
                     "--trials", "0", "--types", "mxint4,mxint8", "--block-sizes", "32", "--threads", "1",
                     "--no-progress", "--out", str(out)])
    assert rc == 0
    spec = parse_precision((out / "precision.toml").read_text())
    assert spec.options == {"weight_rounding": "gptq", "calibration_batches": 2}
    doc = json.loads((out / "search.json").read_text())
    assert doc["weight_rounding"] == "gptq" and "GPTQ" in doc["emulation"]
    cfg = CompileConfig(model_file=str(SEARCH / "toy_model.py"), out="o",
                        precision_file=str(out / "precision.toml")).validated()
    assert (cfg.weight_rounding, cfg.calibration_batches) == ("gptq", 2)
