"""Transformer blocks written the way their communities write them compile and simulate
bit-exactly under random input gaps and output backpressure (issue 7, "How it is checked").

Whole-block simulations carry the ``slow`` marker (run with ``-m slow``), the single-head one too:
its Verilator build alone (3 linears, 2 matmuls, softmax) takes minutes on a loaded 2-core machine.
"""
from pathlib import Path

import pytest

from masec.backend import compile_model
from masec.config import CompileConfig
from masec.simulate import simulate

MODELS = Path(__file__).parent / "models"

BLOCKS = {
    # id: (model file, environment)
    "llama_sdpa": ("llama_block.py", {"MASEC_ATTN": "sdpa"}),
    "llama_explicit": ("llama_block.py", {"MASEC_ATTN": "explicit"}),
    "nanogpt": ("nanogpt_block.py", {}),
    "single_head": ("single_head.py", {}),
    "swiglu_written_out": ("swiglu_block.py", {}),
    "bert_2_layers_padding_mask": ("bert_encoder.py", {}),
}

#: canonical kernels each block must lower to (checks the rewrites happened, not just "it compiled")
KERNELS = {
    "llama_sdpa": {"mx_rmsnorm", "mx_linear", "mx_rope", "stream_reorder", "mx_matmul", "mx_softmax", "mx_add"},
    "llama_explicit": {"mx_rmsnorm", "mx_linear", "mx_rope", "stream_reorder", "mx_matmul", "mx_softmax", "mx_add"},
    "nanogpt": {"mx_layernorm", "mx_linear", "stream_reorder", "mx_matmul", "mx_softmax", "mx_gelu", "mx_add"},
    "single_head": {"mx_linear", "mx_matmul", "mx_softmax"},
    "swiglu_written_out": {"mx_rmsnorm", "mx_linear", "mx_silu", "mx_mul", "mx_add"},
    "bert_2_layers_padding_mask": {"mx_layernorm", "mx_linear", "stream_reorder", "mx_matmul", "mx_gelu", "mx_add"},
}

MAX_REL_RMS = {"mxint8": 0.05, "mxfp8_e4m3": 0.2, "mxfp4": 0.6}


def compile_and_simulate(tmp_path, monkeypatch, seed, block, fmt):
    fname, env = BLOCKS[block]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / f"{block}_{fmt}"
    res = compile_model(CompileConfig(model_file=str(MODELS / fname), out=str(out), format=fmt, seed=seed))
    kernels = {r["kernel"] for r in res.rows}
    assert KERNELS[block] <= kernels, kernels
    (acc,) = res.accuracy
    assert acc["rel_rms"] < MAX_REL_RMS[fmt], acc
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message
    full = s.result.run("full_rate")
    print(f"{block} {fmt}: rel RMS {acc['rel_rms']:.4f}; full_rate {full['cycles']} cycles, "
          f"ideal {full['ideal_cycles']}; seed {seed}")
    return res


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mxint8", "mxfp8_e4m3", "mxfp4"])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_block_simulates_bit_exactly(tmp_path, monkeypatch, seed, block, fmt):
    compile_and_simulate(tmp_path, monkeypatch, seed, block, fmt)


@pytest.mark.slow
def test_linear_over_one_input_block_simulates_bit_exactly(tmp_path, seed):
    model = tmp_path / "lin.py"
    model.write_text("import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(32, 32, bias=False)\n"
                     "example_inputs = (torch.randn(8, 32),)\n")
    out = tmp_path / "o"
    compile_model(CompileConfig(model_file=str(model), out=str(out), seed=seed))
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message


@pytest.mark.parametrize("block", ["llama_sdpa", "nanogpt"])
def test_block_top_passes_verilator_lint(tmp_path, monkeypatch, block):
    import json

    from masec.sim.runner import lint

    fname, env = BLOCKS[block]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / block
    compile_model(CompileConfig(model_file=str(MODELS / fname), out=str(out)))
    sources = json.loads((out / "masec_build.json").read_text())["sources"]
    lint([out / s for s in sources], "top", workdir=out / "rtl")
