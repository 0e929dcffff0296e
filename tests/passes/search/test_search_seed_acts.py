"""Seed ACTIVATION formats (nvfp4, m2xfp4_a, anda4) in the precision search: offered exactly where
``masec compile`` builds them (the compiler's own check, per activation group), emulated as the
compiled design computes them (NVFP4 with the tensor scale calibrated on the example inputs), and
the chosen precision.toml compiles. On stories260K the RMSNorm outputs take them (mx_rmsnorm's Y_QFMT)."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from masec.backend import compile_model, lower
from masec.config import CompileConfig
from masec.passes.search.emulate import Emulator, spec_from_assignment
from masec.passes.search.precision_file import dump_precision
from masec.passes.search.runner import run_search
from masec.passes.search.space import Candidate, build_space, candidates, discover_sites, site_checked
from masec.reference import hardware_outputs

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"
STORIES = ROOT / "examples" / "stories260k" / "model.py"
sys.path.insert(0, str(HERE))
import seed_act_model  # noqa: E402

SEEDS = {Candidate.make("nvfp4", 16), Candidate.make("m2xfp4_a", 32), Candidate.make("anda4", 64)}


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mlp():
    mm = _load(MLP, "_mlp_seed_acts")
    return mm.model().eval(), mm.example_inputs()


def _offered(space) -> dict:
    return {g: {c for c in space.cands_for(g) if site_checked(c)} for g in space.groups}


@pytest.mark.parametrize("parallelism", [4, 8])
def test_offered_where_the_compiler_builds_them(parallelism):
    """Only fc1's output (a linear's output read through relu by a linear) takes them; the input x
    (also read by the add) and the LayerNorm output never do. M2XFP activations need 8 lanes."""
    model, x = seed_act_model.model, seed_act_model.example_inputs
    sites, _, _ = discover_sites(model, x)
    assert {s.key for s in sites if s.kind == "act"} == {"act:x", "act:fc1", "act:norm"}
    space = build_space(sites, "node", candidates())
    with Emulator(model, space, example_inputs=x) as emu:
        verdicts = space.check_seed_acts(lambda a: emu.refusal(a, parallelism=parallelism))
    want = SEEDS if parallelism == 8 else SEEDS - {Candidate.make("m2xfp4_a", 32)}
    offered = _offered(space)
    assert offered["act:fc1"] == want
    assert offered["act:x"] == set() and offered["act:norm"] == set()
    for g in ("weight:fc1", "weight:fc2", "weight:fc3"):      # NVFP4 stays a linear-weight format
        assert offered[g] == {Candidate.make("nvfp4", 16)}
    assert "add" in verdicts["act:x"]["nvfp4:16"] or "reads" in verdicts["act:x"]["nvfp4:16"]
    assert "layer_norm" in verdicts["act:norm"]["anda4:64"]
    if parallelism == 4:
        assert "8 lanes" in verdicts["act:fc1"]["m2xfp4_a:32"]


@torch.no_grad()
@pytest.mark.parametrize("fmt,block,sites,parallelism", [
    ("nvfp4", 16, ("act:fc1",), 4), ("nvfp4", 16, ("act:x", "act:fc1"), 4),
    ("anda4", 64, ("act:fc1",), 4), ("m2xfp4_a", 32, ("act:x", "act:fc1"), 8)])
def test_emulation_equals_the_compiled_reference(tmp_path, fmt, block, sites, parallelism):
    """examples/mlp with a seed activation format: the emulated output equals the compiled design's
    bit-exact reference (compiler/reference.py) element for element on the example inputs."""
    model, x = _mlp()
    space = build_space(discover_sites(model, x)[0], "node", candidates())
    assign = {s.key: Candidate.make("mxint8", 32) for s in space.sites}
    assign.update({s: Candidate.make(fmt, block) for s in sites})
    prec = tmp_path / "p.toml"
    prec.write_text(dump_precision(spec_from_assignment(space, assign)))
    cfg = CompileConfig(model_file=str(MLP), out=str(tmp_path / "d"), precision_file=str(prec),
                        parallelism=parallelism).validated()
    gm, ir, values, inputs = lower(cfg)
    hw = hardware_outputs(ir, values)[0]
    with Emulator(model, space, example_inputs=x) as emu:
        emu.apply(assign)
        y = model(*inputs)
    assert torch.equal(y, hw), f"{int((y != hw).sum())} of {y.numel()} elements differ"
    if fmt == "nvfp4":
        ts = {n.name: n.meta["masec"].formats["out"].ts_exp for n in gm.graph.nodes
              if "masec" in n.meta and "out" in n.meta["masec"].formats}
        assert ts["fc1"] is not None


@torch.no_grad()
def test_nvfp4_tensor_scale_comes_from_the_example_inputs(tmp_path):
    """At another input shape the emulation keeps the compiled tensor scale (calibrated on the example
    inputs), so example rows give the compiled design's outputs even beside 3x larger rows."""
    model, x = _mlp()
    space = build_space(discover_sites(model, x)[0], "node", candidates())
    assign = {s.key: Candidate.make("mxint8", 32) for s in space.sites}
    assign["act:fc1"] = Candidate.make("nvfp4", 16)
    prec = tmp_path / "p.toml"
    prec.write_text(dump_precision(spec_from_assignment(space, assign)))
    cfg = CompileConfig(model_file=str(MLP), out=str(tmp_path / "d"), precision_file=str(prec)).validated()
    _gm, ir, values, _ = lower(cfg)
    hw = hardware_outputs(ir, values)[0]
    with Emulator(model, space, example_inputs=x) as emu:
        emu.apply(assign)
        y = model(torch.cat([x[0], 3 * x[0]]))
    assert torch.equal(y[: x[0].shape[0]], hw)


def test_search_offers_them_and_the_chosen_file_compiles(tmp_path):
    """A search whose cheapest point puts NVFP4 on fc1's output; its precision.toml compiles."""
    res = run_search(seed_act_model.model, seed_act_model.example_inputs, seed_act_model.evaluate,
                     seed_act_model.calibration_data, tmp_path / "s", metric_name="mse", max_loss="1000%",
                     trials=0, types=("mxint8", "nvfp4", "m2xfp4_a", "anda4"), blocks=(32,), progress=False,
                     threads=1)
    offered = _offered(res.space)
    assert offered["act:fc1"] == SEEDS - {Candidate.make("m2xfp4_a", 32)}
    assert offered["act:x"] == set() and offered["act:norm"] == set()
    assert res.chosen["assignment"]["act:fc1"] == "nvfp4:16"      # the cheapest point (max loss 1000 %)
    out = compile_model(CompileConfig(model_file=str(HERE / "seed_act_model.py"), out=str(tmp_path / "design"),
                                      precision_file=str(tmp_path / "s" / "precision.toml")))
    fmts = {n.name: n.meta["masec"].formats for n in out.gm.graph.nodes if "masec" in n.meta}
    assert fmts["fc1"]["out"].name == "nvfp4" and fmts["fc1"]["out"].ts_exp is not None
    assert "seed activation formats (--parallelism 4): offered to 1 of 3 activation groups" in \
        (tmp_path / "s" / "search.log").read_text()


@pytest.mark.parametrize("by", ["node", "type"])
def test_stories260k_offers_them_on_the_rmsnorm_outputs(by):
    """stories260K's RMSNorm outputs (read by q/k/v, w1/w3 and the classifier) are made by mx_rmsnorm,
    which emits the seed activation formats (Y_QFMT): those groups are offered nvfp4, m2xfp4_a (8 lanes)
    and anda4; the untraceable `linear_inputs` group (wo and w2 inputs, which is `[default] act`, every
    other stream too) is offered none."""
    mod = _load(STORIES, f"_stories260k_seed_acts_{by}")
    sites, _, _ = discover_sites(mod.model, mod.example_inputs)
    space = build_space(sites, by, candidates())
    with Emulator(mod.model, space, example_inputs=mod.example_inputs) as emu:
        space.check_seed_acts(lambda a: emu.refusal(a, parallelism=8))
    offered = _offered(space)
    norm_groups = {g for g in space.groups if space.group_kind(g) == "act" and g != "act:linear_inputs"}
    assert len(norm_groups) == (11 if by == "node" else 1)
    assert all(all(s.op == "rms_norm" for s in sites if s.key in space.groups[g]) for g in norm_groups)
    assert all(offered[g] == SEEDS for g in norm_groups)
    assert offered["act:linear_inputs"] == set()


def test_cli_parallelism_offers_m2xfp_and_is_recorded(tmp_path):
    """`masec search --parallelism 8`: m2xfp4_a (8 lanes or more) is offered to fc1's output, and
    search.json records the lanes the precision file is for; a bad value is refused."""
    import json

    from masec.passes.search.cli import main

    args = [str(HERE / "seed_act_model.py"), "--trials", "0", "--types", "mxint8,m2xfp4_a", "--block-sizes", "32",
            "--max-loss", "1000%", "--no-progress", "--threads", "1", "--metric", "evaluate"]
    assert main(args + ["--out", str(tmp_path / "s8"), "--parallelism", "8"]) == 0
    doc = json.loads((tmp_path / "s8" / "search.json").read_text())
    assert doc["parallelism"] == 8
    assert doc["chosen"]["assignment"]["act:fc1"] == "m2xfp4_a:32"    # offered at 8 lanes, and the cheapest
    assert main(args + ["--out", str(tmp_path / "s3"), "--parallelism", "3"]) == 2
