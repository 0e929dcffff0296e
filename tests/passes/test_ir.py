"""The hardware IR: build_ir, insert_forks, size_fifos, check, and the reference run over the IR."""
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from masec.config import CompileConfig
from masec.errors import MasecError
from masec.frontend import export, normalize
from masec.hwir import IntValue, run_reference, view_value
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.hw.build_ir import build_ir
from masec.passes.hw.streams import BRAM_DEPTH, FIFO_DEPTH, insert_forks, size_fifos
from masec.passes.transform.assign_formats import assign_formats
from masec.passes.transform.canonicalize import canonicalize
from masec.passes.transform.select_kernels import select_kernels


def lowered(model, inputs, **kw):
    gm = export(model.eval(), inputs)
    canonicalize(gm, inputs)
    normalize(gm, "m.py")
    shape_prop(gm, inputs)
    cfg = CompileConfig(model_file="m.py", out="o", **kw).validated()
    assign_formats(gm, cfg)
    select_kernels(gm, cfg)
    return gm, build_ir(gm, cfg)


class Residual(nn.Module):
    """x -> rms_norm -> linear -> add(x, .): a reconvergent path."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.RMSNorm(c, eps=1e-5)
        self.fc = nn.Linear(c, c, bias=False)

    def forward(self, x):
        return x + self.fc(self.norm(x))


def residual_ir(t=8, c=128):
    torch.manual_seed(0)
    x = torch.randn(t, c)
    gm, ir = lowered(Residual(c), (x,))
    return gm, ir, (x,)


def test_build_ir_instances_and_typed_edges():
    gm, ir, _ = residual_ir()
    assert [i.kernel for i in ir.instances.values()] == ["input", "mx_rmsnorm", "mx_linear", "mx_add", "output"]
    # before insert_forks the input feeds two edges, which check() refuses
    assert len(ir.out_edges("in_x")) == 2
    with pytest.raises(MasecError, match="needs a fork"):
        ir.check()
    for e in ir.edges:
        assert e.type.shape == (8, 128) and e.type.fmt.name == "mxint8" and e.type.lanes == 4
        assert e.type.beats == 8 * 128 // 4


def test_residual_gets_a_fork_and_whole_tensor_fifos_in_block_ram():
    gm, ir, _ = residual_ir()
    assert insert_forks(ir)
    size_fifos(ir)
    ir.check()
    (fork,) = [i for i in ir.instances.values() if i.kernel == "stream_fork"]
    assert [e.dst[0] for e in ir.in_edges(fork.name)] == [fork.name] and ir.in_edges(fork.name)[0].src[0] == "in_x"
    branches = ir.out_edges(fork.name)
    kinds = {n: i.kernel for n, i in ir.instances.items()}
    assert sorted(kinds[e.dst[0]] for e in branches) == ["mx_add", "mx_rmsnorm"]
    for e in branches:   # at least one whole tensor (deadlock-free), whole tensors only, in block RAM
        assert e.type.beats == 256 and e.depth >= 256 and e.depth % 256 == 0 and e.ram_style == 1
        assert "fork" in e.why
    # the residual waits a whole linear (the bottleneck) for the other branch: with one tensor only,
    # the next inference could not enter until the add starts; it holds two
    depth = {kinds[e.dst[0]]: e.depth for e in branches}
    assert depth["mx_add"] >= 2 * 256 and depth["mx_add"] >= depth["mx_rmsnorm"]
    for e in ir.edges:
        if e not in branches:
            assert (e.depth, e.ram_style) == (FIFO_DEPTH, 0)


def test_shallow_fork_branches_stay_in_registers():
    torch.manual_seed(0)
    gm, ir = lowered(Residual(32), (torch.randn(4, 32),))
    insert_forks(ir)
    size_fifos(ir)
    fork = next(i for i in ir.instances.values() if i.kernel == "stream_fork")
    for e in ir.out_edges(fork.name):
        assert e.depth % 32 == 0 and 32 <= e.depth <= BRAM_DEPTH and e.ram_style == 0


def test_insert_forks_and_size_fifos_are_idempotent():
    gm, ir, _ = residual_ir()
    assert insert_forks(ir) and size_fifos(ir)
    snap = ([(i.name, i.kernel) for i in ir.instances.values()],
            [(e.src, e.dst, e.type, e.depth, e.ram_style, e.why) for e in ir.edges])
    assert not insert_forks(ir)
    assert not size_fifos(ir)
    assert snap == ([(i.name, i.kernel) for i in ir.instances.values()],
                    [(e.src, e.dst, e.type, e.depth, e.ram_style, e.why) for e in ir.edges])


def test_check_catches_a_corrupted_edge_type():
    gm, ir, _ = residual_ir()
    insert_forks(ir)
    size_fifos(ir)
    ir.check()
    lin = next(i.name for i in ir.instances.values() if i.kernel == "mx_linear")
    e = next(e for e in ir.edges if e.dst[0] == lin)
    e.type = replace(e.type, lanes=8)
    with pytest.raises(MasecError, match=rf"internal error: edge {e.src[0]}\.0 -> {lin}\.0 carries"):
        ir.check()


def test_check_catches_a_dangling_input():
    gm, ir, _ = residual_ir()
    insert_forks(ir)
    add = next(i.name for i in ir.instances.values() if i.kernel == "mx_add")
    ir.edges = [e for e in ir.edges if e.dst[0] != add or e.dst[1] != 1]
    with pytest.raises(MasecError, match="internal error"):
        ir.check()


def test_reference_of_a_head_split_is_the_gathered_codes():
    class Split(nn.Module):
        def forward(self, x):
            B, T, C = x.shape
            return torch.relu(x).view(B, T, 4, C // 4).transpose(1, 2)

    x = torch.randn(1, 3, 128)
    gm, ir = lowered(Split(), (x,))
    insert_forks(ir)
    size_fifos(ir)
    ir.check()
    (reorder,) = [i for i in ir.instances.values() if i.kernel == "stream_reorder"]
    assert reorder.buffering == "tensor"
    (e_in,) = ir.in_edges(reorder.name)
    assert e_in.type.shape == (1, 3, 4, 32)      # the view is free: same beats, new shape
    values = run_reference(ir, (x,))
    src = view_value(values[e_in.src], e_in.type)
    out = values[(reorder.name, 0)]
    index = torch.tensor([t * 4 + h for h in range(4) for t in range(3)])
    assert out.shape == (1, 4, 3, 32)
    assert torch.equal(out.codes, src.codes[index]) and torch.equal(out.scales, src.scales[index])
    # and the reference output follows the float model's layout
    y = values[(ir.outputs[0].name, 0)]
    ref = torch.relu(x).view(1, 3, 4, 32).transpose(1, 2)
    assert y.shape == tuple(ref.shape)


def test_view_value_keeps_the_beats():
    gm, ir, inputs = residual_ir(t=4, c=64)
    insert_forks(ir)
    values = run_reference(ir, inputs)
    v = values[("in_x", 0)]
    t = replace(ir.instances["in_x"].out_types[0], shape=(8, 32))
    w = view_value(v, t)
    assert w.shape == (8, 32) and torch.equal(w.codes.reshape(-1), v.codes.reshape(-1))
    ints = IntValue(torch.arange(6), 3)
    assert view_value(ints, replace(t, shape=(2, 3), fmt=None)).shape == (2, 3)
