"""Seed activation formats made by an RMSNorm (mx_rmsnorm's Y_QFMT) or an element-wise mul (mx_mul's
OUT_QFMT) and read by linears (XFMT): a LLaMA attention block (tests/compiler/models/llama_block.py:
norm -> wq, wk, wv) with nvfp4 / m2xfp4_a / anda4 on the norm's output, and a SwiGLU feed-forward block
(swiglu_block.py: norm -> w1, w3; silu(w1) * w3 -> w2) with the format on the norm's and the mul's
outputs. Compile-only checks in the default suite; `masec sim` bit-exact is slow (a whole block: 6-7 min
on the shared 2-core machine)."""
from pathlib import Path

import pytest

from masec.errors import MasecError
from masec.hw_templates.kernels.mx_quantize import QFMT_ANDA, QFMT_M2XFP, QFMT_NVFP4
from masec.meta import meta
from seed_helpers import compile_with, sim_ok  # noqa: E402  (tests/compiler is on the path)

LLAMA = Path(__file__).parent / "models" / "llama_block.py"
SWIGLU = Path(__file__).parent / "models" / "swiglu_block.py"
#: (norm act format, its block, lanes, the mx_rmsnorm Y_QFMT)
CASES = [("nvfp4", 16, 4, QFMT_NVFP4), ("m2xfp4_a", 32, 8, QFMT_M2XFP), ("anda4", 32, 4, QFMT_ANDA)]


def norm_toml(fmt: str, block: int) -> str:
    return (f'[default]\nact = "mxint8"\nweight = "mxint8"\n'
            f'[node."norm"]\nact = "{fmt}"\nblock_size = {block}\n')


def nodes(res) -> dict:
    return {n.name: meta(n) for n in res.gm.graph.nodes if "masec" in n.meta}


@pytest.mark.parametrize("fmt,block,lanes,qfmt", CASES, ids=[c[0] for c in CASES])
def test_llama_block_compiles_with_a_seed_norm_output(tmp_path, fmt, block, lanes, qfmt):
    """The norm's mx_rmsnorm emits the format (Y_QFMT; NVFP4: Y_TS_EXP = the calibrated tensor scale) and
    q/k/v's mx_linear decode it (XFMT; NVFP4: X_TS_EXP the same); the rest stays MXINT8."""
    _, res = compile_with(tmp_path, norm_toml(fmt, block), fmt, model=LLAMA, parallelism=lanes)
    m = nodes(res)
    out = m["norm"].formats["out"]
    assert (out.name, out.block_size) == (fmt, block)
    k = m["norm"].kernel.params_dict
    assert m["norm"].kernel.kernel == "mx_rmsnorm" and k["Y_QFMT"] == qfmt
    if fmt == "nvfp4":
        assert out.ts_exp is not None and k["Y_TS_EXP"] == out.ts_exp
    else:
        assert out.ts_exp is None and "Y_TS_EXP" not in k
    for lin in ("wq", "wk", "wv"):
        kl = m[lin].kernel.params_dict
        assert kl["XFMT"] == qfmt, (lin, kl)
        if fmt == "nvfp4":
            assert kl["X_TS_EXP"] == out.ts_exp
        assert m[lin].formats["out"].name == "mxint8"


def test_m2xfp_norm_output_needs_8_lanes(tmp_path):
    with pytest.raises(MasecError, match=r"node `norm` \(rms_norm\).*8 lanes or more"):
        compile_with(tmp_path, norm_toml("m2xfp4_a", 32), "m2x4", model=LLAMA, parallelism=4)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,block,lanes,qfmt", CASES[:2], ids=[c[0] for c in CASES[:2]])
def test_llama_block_seed_norm_output_simulates_bit_exactly(tmp_path, seed, fmt, block, lanes, qfmt):
    """`masec sim`: every output element equals the bit-exact reference (random gaps/backpressure, full rate)."""
    out, _ = compile_with(tmp_path, norm_toml(fmt, block), fmt, model=LLAMA, parallelism=lanes, seed=seed)
    sim_ok(out, seed)


def swiglu_toml(fmt: str, block: int) -> str:
    return norm_toml(fmt, block) + f'[op.mul]\nact = "{fmt}"\nblock_size = {block}\n'


@pytest.mark.parametrize("fmt,block,lanes,qfmt", CASES, ids=[c[0] for c in CASES])
def test_swiglu_block_compiles_with_seed_norm_and_mul_outputs(tmp_path, fmt, block, lanes, qfmt):
    """The gate mul's mx_mul emits the format (OUT_QFMT; NVFP4: its own calibrated OUT_TS_EXP) and w2
    decodes it; the norm's feeds w1 and w3."""
    _, res = compile_with(tmp_path, swiglu_toml(fmt, block), fmt, model=SWIGLU, parallelism=lanes)
    m = nodes(res)
    mul = next(v for v in m.values() if v.op == "mul")
    out = mul.formats["out"]
    assert (out.name, out.block_size) == (fmt, block)
    k = mul.kernel.params_dict
    assert mul.kernel.kernel == "mx_mul" and k["OUT_QFMT"] == qfmt
    if fmt == "nvfp4":
        assert out.ts_exp is not None and k["OUT_TS_EXP"] == out.ts_exp
    assert m["w2"].kernel.params_dict["XFMT"] == qfmt
    assert m["w1"].kernel.params_dict["XFMT"] == m["w3"].kernel.params_dict["XFMT"] == qfmt
    assert m["norm"].kernel.params_dict["Y_QFMT"] == qfmt


def test_seed_output_read_by_the_residual_add_is_refused(tmp_path):
    """w2's output in nvfp4 is read by the residual add, which decodes MX only: refused, naming the add."""
    with pytest.raises(MasecError, match=r"\(add.*reads `w2` in nvfp4"):
        compile_with(tmp_path, '[default]\nact = "mxint8"\nweight = "mxint8"\n[node."w2"]\nact = "nvfp4"\n'
                     'block_size = 16\n', "bad", model=SWIGLU, parallelism=4)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,block,lanes,qfmt", CASES[:2], ids=[c[0] for c in CASES[:2]])
def test_swiglu_block_seed_norm_and_mul_outputs_simulate_bit_exactly(tmp_path, seed, fmt, block, lanes, qfmt):
    out, _ = compile_with(tmp_path, swiglu_toml(fmt, block), fmt, model=SWIGLU, parallelism=lanes, seed=seed)
    sim_ok(out, seed)
