"""FIFO sizing: a residual block deadlocks with 2-entry FIFOs and passes with the computed depths.

The fork in front of ``x -> rms_norm -> linear -> add(x, .)`` must let the residual branch run a
whole tensor ahead: rms_norm and the linear read a full row before their first output, so with
2-entry FIFOs the fork stalls on the residual branch while the add waits for the linear: deadlock.
``size_fifos`` gives both fork branches whole tensors (at least one; more where the cycle model
says a branch waits for the other; block RAM above 64 entries).
"""
import shutil
from pathlib import Path

import pytest

from masec import emit
from masec.backend import lower
from masec.config import CompileConfig
from masec.simulate import simulate

MODEL = '''
import torch
import torch.nn as nn


class Residual(nn.Module):
    def __init__(self, c=64):
        super().__init__()
        self.norm = nn.RMSNorm(c, eps=1e-5)
        self.fc = nn.Linear(c, c, bias=False)

    def forward(self, x):
        return x + self.fc(self.norm(x))


torch.manual_seed(0)
model = Residual()
example_inputs = (torch.randn(8, 64),)
'''


def write(tmp_path: Path, name: str, lowered, cfg) -> Path:
    gm, ir, values, inputs = lowered
    out = tmp_path / name
    out.mkdir()
    emit.write_tree(out, gm, ir, values, inputs, cfg)
    return out


@pytest.mark.slow
def test_residual_block_deadlocks_with_depth_2_and_passes_with_computed_depths(tmp_path, seed):
    model = tmp_path / "residual.py"
    model.write_text(MODEL)
    cfg = CompileConfig(model_file=str(model), out=str(tmp_path / "unused"), seed=seed).validated()
    lowered = lower(cfg)
    ir = lowered[1]
    fork = next(i for i in ir.instances.values() if i.kernel == "stream_fork")
    branches = ir.out_edges(fork.name)
    assert len(branches) == 2
    assert all(e.type.beats == 128 and e.depth >= 128 and e.depth % 128 == 0 and e.ram_style == 1 for e in branches)
    depths = {e.depth for e in branches}

    ok = write(tmp_path, "computed", lowered, cfg)
    top = (ok / "rtl" / "top.sv").read_text()
    assert all(f".DEPTH({d})" in top for d in depths) and ".RAM_STYLE(1)" in top
    for e in ir.edges:
        e.depth, e.ram_style = 2, 0
    shallow = write(tmp_path, "depth2", lowered, cfg)
    assert not any(f".DEPTH({d})" in (shallow / "rtl" / "top.sv").read_text() for d in depths)

    bad = simulate(shallow, seed=seed).result
    assert not bad.ok
    assert "SimTimeoutError" in bad.message and "differs" not in bad.message, bad.message   # stuck, not wrong

    good = simulate(ok, seed=seed).result
    assert good.ok, good.message
    full = good.run("full_rate")
    print(f"computed depths: full_rate {full['cycles']} cycles, ideal {full['ideal_cycles']}")
    shutil.rmtree(tmp_path / "depth2" / "sim_build", ignore_errors=True)
