"""Seed weight formats through the compiler: an MLP (and a LLaMA block) with M2XFP / NVFP4 / BitMoD
linear weights compiles and simulates bit-exactly under random gaps and backpressure."""
import json
from pathlib import Path

import pytest

from masec.errors import MasecError
from masec.sim.runner import lint

ROOT = Path(__file__).parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"
LLAMA = Path(__file__).parent / "models" / "llama_block.py"
from seed_helpers import compile_with, sim_ok  # noqa: E402  (tests/compiler is on the path)


def weights_of(res):
    return [str(r["param_formats"].get("weight")) for r in res.rows if r["op"] == "linear"]


def test_mlp_m2xfp_and_nvfp4_weights(tmp_path, seed):
    """fc1 M2XFP weights (blocks of 32), fc2 NVFP4 weights (blocks of 16: fc2's input follows);
    biases in the activation format; one compile, bit-exact simulation, lint-clean top."""
    toml = ('[default]\nact = "mxint8"\n[node."fc1"]\nweight = "m2xfp4_w"\n'
            '[node."fc2"]\nweight = "nvfp4"\nweight_block_size = 16\n')
    out, res = compile_with(tmp_path, toml, "mlp_m2x_nv", seed=seed)
    w = weights_of(res)
    assert len(w) == 2 and "m2xfp4_w" in w[0] and "nvfp4" in w[1], w
    sim_ok(out, seed)
    lint([out / s for s in json.loads((out / "masec_build.json").read_text())["sources"]], "top")


@pytest.mark.slow
@pytest.mark.parametrize("toml,name", [
    ('[default]\nact = "mxint8"\n[op.linear]\nweight = "bitmod_fp4"\nweight_block_size = 128\n', "bitmod_fp4"),
    ('[default]\nact = "mxfp8_e4m3"\n[op.linear]\nweight = "bitmod_fp3"\nweight_block_size = 64\n', "bitmod_fp3"),
    ('[default]\nact = "mxfp8_e4m3"\n[op.linear]\nweight = "m2xfp4_w"\n', "m2xfp4_w"),
    ('[default]\nact = "mxint8"\n[op.linear]\nweight = "nvfp4"\nweight_block_size = 16\n', "nvfp4"),
])
def test_mlp_each_seed_weight_format(tmp_path, seed, toml, name):
    out, _ = compile_with(tmp_path, toml, f"mlp_{name}", seed=seed, parallelism=8)
    sim_ok(out, seed)


@pytest.mark.slow
def test_llama_block_m2xfp_weights(tmp_path, seed):
    """A LLaMA block (RMSNorm, RoPE attention, SwiGLU) with every linear weight in M2XFP."""
    toml = '[default]\nact = "mxint8"\n[op.linear]\nweight = "m2xfp4_w"\n'
    out, _ = compile_with(tmp_path, toml, "llama_m2xfp", model=LLAMA, seed=seed)
    sim_ok(out, seed)


def test_bitmod_group_not_a_multiple_of_the_input_block_is_refused(tmp_path):
    toml = '[default]\nact = "mxint8"\n[op.linear]\nweight = "bitmod_fp4"\nweight_block_size = 16\n'
    with pytest.raises(MasecError, match="BitMoD group .16. must be a multiple of x's block .32."):
        compile_with(tmp_path, toml, "bad")
