"""Compiled designs stay bit-exact at every mx_quantize pipeline depth that --clock selects.

mx_quantize is instantiated inside mx_linear, mx_matmul, the norms, softmax, the activations,
add/mul, rope and cast; `masec compile --clock` picks its PIPE (pipe_for_clock). The MLP example
(linear, relu) is simulated at the deepest setting in the default suite; blocks covering every
kernel that instantiates mx_quantize are simulated at two clock settings in the slow suite.
Random input gaps and output backpressure, every output element compared, seed printed.
"""
import re
from pathlib import Path

import pytest

from masec.backend import compile_model
from masec.config import CompileConfig
from masec.hw_templates.kernels.mx_quantize import latency, pipe_for_clock
from masec.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(__file__).parent / "models"


def _compile_and_sim(tmp_path, model: Path, clock_ns: float, seed: int, **kw):
    out = tmp_path / f"{model.stem}_{clock_ns:g}ns"
    compile_model(CompileConfig(model_file=str(model), out=str(out), clock_ns=clock_ns, seed=seed, **kw))
    text = (out / "rtl" / "mx_quantize.sv").read_text()
    pipe = int(re.search(r"parameter int unsigned PIPE\s*=\s*(\d+)", text).group(1))
    assert pipe == pipe_for_clock(clock_ns)
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message
    full = s.result.run("full_rate")
    print(f"{model.stem} --clock {clock_ns} (mx_quantize PIPE {pipe}, +{latency(pipe)} cycles): full_rate "
          f"{full['cycles']} cycles, ideal {full['ideal_cycles']}; seed {seed}")
    return full


def test_mlp_bit_exact_with_the_deepest_quantizer_pipeline(tmp_path, seed):
    full = _compile_and_sim(tmp_path, ROOT / "examples" / "mlp" / "model.py", 3.0, seed, format="mxint8",
                            parallelism=4)
    assert pipe_for_clock(3.0) == 3
    assert full["cycles"] <= full["ideal_cycles"] * 1.25   # still about one beat per cycle


@pytest.mark.slow
@pytest.mark.parametrize("clock_ns", [10.0, 4.0])
@pytest.mark.parametrize("model", ["swiglu_block.py", "llama_block.py", "nanogpt_block.py"])
def test_blocks_bit_exact_at_two_clock_settings(tmp_path, seed, model, clock_ns):
    """rmsnorm, layernorm, linear, silu, gelu, mul, add, rope, matmul, softmax: PIPE 0 and 2."""
    _compile_and_sim(tmp_path, MODELS / model, clock_ns, seed, format="mxint8")
