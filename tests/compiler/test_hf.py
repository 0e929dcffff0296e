"""HuggingFace models from small configs: ``LlamaForCausalLM`` (rotate-half RoPE, GQA, SwiGLU,
RMSNorm) and ``GPT2LMHeadModel`` (Conv1D, tanh GELU, learned positions, LayerNorm, tied head)
compile from token ids to logits; the canonical graph computes HF's logits; the RTL is bit-exact
(slow). Needs ``transformers`` (``pip install -e .[hf]``, after torch)."""
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[hf]); "
                                           "the HuggingFace model tests need it")

from masec import ops  # noqa: E402
from masec.backend import compile_model, lower  # noqa: E402
from masec.config import CompileConfig  # noqa: E402
from masec.frontend import load_model_file  # noqa: E402
from masec.simulate import simulate  # noqa: E402

MODELS = Path(__file__).parent / "models"
LLAMA, GPT2 = MODELS / "hf_llama.py", MODELS / "hf_gpt2.py"


def _lower(path, fmt="mxint8"):
    t0 = time.perf_counter()
    gm, ir, values, inputs = lower(CompileConfig(model_file=str(path), out="unused", format=fmt).validated())
    return gm, ir, values, inputs, time.perf_counter() - t0


def _ops(gm) -> list[str]:
    return [ops.op_of(n) for n in gm.graph.nodes if n.op == "call_function"]


def _float_matches_hf(path, gm, inputs):
    model, ins = load_model_file(str(path), "model", "example_inputs")[:2]
    with torch.no_grad():
        ref = model(*ins)
        out = gm(*inputs)
    assert out.shape == ref.shape == (1, 16, 256)
    assert torch.allclose(out, ref, atol=1e-4), float((out - ref).abs().max())


def test_hf_llama_compiles_and_canonical_graph_equals_hf_logits():
    gm, ir, values, inputs, secs = _lower(LLAMA)
    names = _ops(gm)
    # rotate-half RoPE became the interleaved rope kernel (q and k of both layers)
    assert names.count("rope") == 4 and names.count("softmax") == 2 and names.count("rms_norm") == 5, names
    assert set(names) <= {"embedding", "rms_norm", "linear", "view", "gather_rows", "rope", "matmul", "softmax",
                          "add", "mul", "silu"}, names
    _float_matches_hf(LLAMA, gm, inputs)
    kernels = {i.kernel for i in ir.instances.values()}
    assert {"mx_rope", "mx_matmul", "mx_softmax", "mx_embedding", "mx_rmsnorm"} <= kernels, kernels
    print(f"hf llama: lowered in {secs:.1f} s, {len(ir.instances)} instances")


def test_hf_gpt2_compiles_and_canonical_graph_equals_hf_logits():
    gm, ir, values, inputs, secs = _lower(GPT2)
    names = _ops(gm)
    assert names.count("gelu_tanh") == 2 and names.count("layer_norm") == 5, names
    assert set(names) <= {"embedding", "layer_norm", "linear", "view", "gather_rows", "matmul", "softmax", "add",
                          "gelu_tanh"}, names
    _float_matches_hf(GPT2, gm, inputs)
    kernels = [i.kernel for i in ir.instances.values()]
    # the learned positions wpe(arange(T)) are a constant streamed from a ROM into the add
    assert kernels.count("stream_rom") == 1 and "mx_gelu_tanh" in kernels, kernels
    print(f"hf gpt2: lowered in {secs:.1f} s, {len(ir.instances)} instances")


@pytest.mark.slow
@pytest.mark.parametrize("path", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_hf_model_simulates_bit_exactly(tmp_path, seed, path):
    out = tmp_path / path.stem
    t0 = time.perf_counter()
    compile_model(CompileConfig(model_file=str(path), out=str(out), format="mxint8", seed=seed))
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message
    full = s.result.run("full_rate")
    print(f"{path.stem} mxint8: compile {t_compile:.1f} s, simulate {time.perf_counter() - t0:.1f} s; full rate "
          f"{full['cycles']} cycles (ideal {full['ideal_cycles']}), {full['output_beats']} output beats")


@pytest.mark.parametrize("path", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_hf_sdpa_attention_canonicalizes_too(path):
    """HF's default attention (``attn_implementation="sdpa"``) gives the same canonical ops."""
    import importlib.util

    from masec.frontend import export
    from masec.passes.transform.canonicalize import canonicalize

    spec = importlib.util.spec_from_file_location(f"_{path.stem}_sdpa", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model, inputs = mod.build("sdpa"), mod.example_inputs
    with torch.no_grad():
        ref = model(*inputs)
        gm = canonicalize(export(model, inputs), inputs)
        out = gm(*inputs)
    assert all(ops.op_of(n) is not None for n in gm.graph.nodes if n.op == "call_function")
    assert torch.allclose(out, ref, atol=1e-4), float((out - ref).abs().max())
    if path == LLAMA:
        assert _ops(gm).count("rope") == 4


RAW_LLAMA = '''
import torch
from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=2, use_cache=False)).eval()
example_inputs = (torch.randint(0, 128, (1, 8)),)
'''


def test_hf_model_without_wrapper_when_use_cache_is_off(tmp_path):
    """With ``use_cache=False`` a bare ``LlamaForCausalLM`` (default sdpa attention) compiles: its
    ``ModelOutput`` holds only the logits (with the cache on, export refuses the DynamicCache)."""
    f = tmp_path / "raw_llama.py"
    f.write_text(RAW_LLAMA)
    res = compile_model(CompileConfig(model_file=str(f), out=str(tmp_path / "out"), format="mxint8"))
    assert [r["output"] for r in res.accuracy] == ["lm_head"] and res.accuracy[0]["rel_rms"] < 0.05
    assert _ops(res.gm).count("rope") == 2
