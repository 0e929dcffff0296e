"""The search's hardware emulation (passes/search/emulate.py) against the compiler's bit-exact
reference: on a model of linears and adds, the fake-quantized canonical graph gives exactly the
hardware's outputs; a partial assignment quantizes only the assigned ports; restore() gives the
user's float model back."""
import sys
from pathlib import Path

import torch

from masec.backend import lower
from masec.config import CompileConfig
from masec.passes.search.emulate import Emulator, spec_from_assignment
from masec.passes.search.precision_file import dump_precision
from masec.passes.search.space import Candidate, build_space, discover_sites
from masec.reference import hardware_outputs

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import toy_model  # noqa: E402

MIXED = {"weight:big": ("mxint8", 32), "weight:small1": ("mxfp4", 32), "weight:small2": ("mxint4", 16),
         "act:x": ("mxfp6_e2m3", 32)}


def _space():
    sites, _, _ = discover_sites(toy_model.model, toy_model.example_inputs)
    return build_space(sites, "node")


@torch.no_grad()
def test_hardware_emulation_equals_the_bit_exact_reference(tmp_path):
    space = _space()
    assign = {k: Candidate.make(f, b) for k, (f, b) in MIXED.items()}
    prec = tmp_path / "precision.toml"
    prec.write_text(dump_precision(spec_from_assignment(space, assign)))
    cfg = CompileConfig(model_file=str(HERE / "toy_model.py"), out=str(tmp_path / "design"),
                        precision_file=str(prec)).validated()
    _gm, ir, values, inputs = lower(cfg)
    hw = hardware_outputs(ir, values)[0]
    model = toy_model.model
    with Emulator(model, space, example_inputs=toy_model.example_inputs) as emu:
        emu.apply(assign)
        y = model(*inputs)
        # the add outputs are quantized too ([default] mxint8): not the float sum of the linears
        assert y.shape == hw.shape
        assert torch.equal(y, hw), f"{int((y != hw).sum())} of {y.numel()} elements differ"
        # model.forward (called directly, as examples/smollm2's evaluate does) runs the emulation too
        assert torch.equal(model.forward(*inputs), hw)
    assert "forward" not in model.__dict__


@torch.no_grad()
def test_partial_assignment_quantizes_only_assigned_ports():
    space = _space()
    model = toy_model.model
    x = toy_model.example_inputs[0]
    w0 = {n: getattr(model, n).weight.detach().clone() for n in ("big", "small1", "small2")}
    c = Candidate.make("mxint4", 32)
    with Emulator(model, space, example_inputs=toy_model.example_inputs) as emu:
        emu.apply({"weight:big": c})
        y = model(x)
        want = x @ c.format.quantize(w0["big"]).T + x @ w0["small1"].T + x @ w0["small2"].T
        assert torch.allclose(y, want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(y, model.big(x) + model.small1(x) + model.small2(x), rtol=1e-4, atol=1e-5)
        emu.apply({"act:x": c})
        y = model(x)
        xq = c.format.quantize(x)
        assert torch.allclose(y, xq @ w0["big"].T + xq @ w0["small1"].T + xq @ w0["small2"].T, rtol=1e-5, atol=1e-6)
        emu.restore()
        assert torch.equal(model(x), toy_model.Toy.forward(model, x))
    for n, w in w0.items():   # the user's parameters are never written
        assert torch.equal(getattr(model, n).weight, w)


def test_fast_fake_quant_is_bit_identical_to_the_format():
    from masec.formats import parse_format
    from masec.passes.search.emulate import MXFakeQuant
    from masec.passes.search.space import ELEMENT_TYPES

    g = torch.Generator().manual_seed(0)
    for name in ELEMENT_TYPES:
        for block in (8, 16, 32, 64):
            f = parse_format(name, block_size=block)
            q = MXFakeQuant(f)
            # partial last blocks, zero blocks, tiny (E clamped at -127), huge and subnormal values
            for shape, scale in (((7, 96), 1.0), ((3, 5, 40), 1e-30), ((4, 64), 1e30), ((2, 33), 1e-40),
                                 ((16,), 3.0)):
                x = torch.randn(shape, generator=g) * scale
                x[..., :3] = 0.0
                x.view(-1)[5::7] *= 1e-3
                got, want = q(x), f.quantize(x)
                assert got.shape == want.shape
                assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (name, block, shape, scale)
