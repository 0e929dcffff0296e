"""Seed activation formats read by matmuls (mx_matmul's AFMT / BFMT decode): q, k, v projections in
nvfp4 / m2xfp4_a / anda4 feeding q k^T (k as the transposed B) and scores x v (v as the row-major B);
compile, parameters, bit-exact simulation; what is still refused."""
import json
from pathlib import Path

import pytest

from masec.errors import MasecError
from masec.meta import meta
from seed_helpers import compile_with, sim_ok

HEAD = Path(__file__).parent / "models" / "single_head.py"
MIXED = """[default]
act = "mxint8"
weight = "mxint8"
[node."query"]
act = "nvfp4"
[node."key"]
act = "m2xfp4_a"
[node."value"]
act = "anda4"
"""
FMT_CODE = {"mxint8": None, "m2xfp4_a": 1, "nvfp4": 2, "anda4": 3}


@pytest.fixture(autouse=True)
def small_head(monkeypatch):
    """single_head.py at d_model = head = 32 (T = 8)."""
    monkeypatch.setenv("MASEC_HEAD_DIM", "32")


def matmul_params(out) -> list[dict]:
    build = json.loads((out / "masec_build.json").read_text())
    return [i["params"] for i in build["instances"] if i["kernel"] == "mx_matmul"]


def test_mixed_seed_operands_compile(tmp_path):
    """q in nvfp4 (A of q k^T, its calibrated tensor scale as A_TS_EXP), k in m2xfp4_a (the transposed B),
    v in anda4 (the row-major B of scores x v): the matmuls get AFMT / BFMT; the scores and the output
    stay MX (the reference ran through mx_matmul's model when the design was written)."""
    out, res = compile_with(tmp_path, MIXED, "mixed", model=HEAD, parallelism=8)
    fq = next(meta(n).formats["out"] for n in res.gm.graph.nodes if n.name == "query")
    qk, sv = sorted(matmul_params(out), key=lambda p: -p["TRANS_B"])
    assert (qk["TRANS_B"], qk["AFMT"], qk["A_TS_EXP"], qk["BFMT"]) == (1, 2, fq.ts_exp, 1)
    assert (sv["TRANS_B"], sv["BFMT"]) == (0, 3) and "AFMT" not in sv


@pytest.mark.slow
@pytest.mark.parametrize("prec", [MIXED] + [MIXED.replace('"nvfp4"', f'"{f}"').replace('"m2xfp4_a"', f'"{f}"')
                                            .replace('"anda4"', f'"{f}"') for f in ("nvfp4", "m2xfp4_a", "anda4")],
                         ids=["mixed", "nvfp4", "m2xfp4_a", "anda4"])
def test_seed_operands_simulate_bit_exactly(tmp_path, seed, prec):
    """masec sim: every output element equals the reference, with the three formats mixed and with each
    one on q, k and v."""
    out, _ = compile_with(tmp_path, prec, "sim", model=HEAD, seed=seed, parallelism=8)
    sim_ok(out, seed)


def refused(tmp_path, toml, *needles, **kw):
    with pytest.raises(MasecError) as exc:
        compile_with(tmp_path, toml, "bad", model=HEAD, **kw)
    msg = str(exc.value)
    assert "\n" not in msg.strip(), msg
    for n in needles:
        assert n in msg, (n, msg)


def test_m2xfp_operand_needs_eight_lanes(tmp_path):
    """k in m2xfp4_a made with 8 lanes, the matmul built for 4: refused at the matmul with the fix."""
    refused(tmp_path, '[default]\nact = "mxint8"\n[node."key"]\nact = "m2xfp4_a"\nlanes = 8\n',
            "`matmul", "(matmul)", "multiple of 8", "--parallelism 8", parallelism=4)


def test_seed_matmul_output_is_refused(tmp_path):
    """A matmul's output stage is MX only: a seed format on the scores is refused naming the node."""
    refused(tmp_path, '[default]\nact = "mxint8"\n[op.matmul]\nact = "nvfp4"\n', "(matmul", "port out", "nvfp4",
            parallelism=8)


def test_seed_operand_through_a_head_split_is_refused(tmp_path):
    """Multi-head attention: q, k, v reach the matmuls through a head-split corner turn (gather_rows ->
    stream_reorder), which is not built for seed activation streams: refused in one line at that node."""
    with pytest.raises(MasecError) as exc:
        compile_with(tmp_path, '[default]\nact = "mxint8"\n[op.linear]\nact = "nvfp4"\n', "mh",
                     model=HEAD.parent / "nanogpt_block.py", parallelism=8)
    msg = str(exc.value)
    assert "\n" not in msg.strip() and "(gather_rows" in msg and "nvfp4" in msg and "MX act format" in msg, msg
