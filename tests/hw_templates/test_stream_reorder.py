"""stream_reorder: corner turn / reorder buffer in double-buffered block RAM; RTL == model, exact."""
import json
import random
import subprocess
import sys

import pytest
import torch

from masec.errors import MasecError
from masec.hw_templates.kernels.stream_reorder import (ideal_cycles, index_mem_text, instance_config, latency, model,
                                                       permute_index, transpose_index)
from masec.hw_templates.manifest import registry
from masec.hw_templates.render import render_with_deps
from masec.passes.hw.pipeline import pipe_depth
from masec.sim.runner import lint, run_stream_test
from masec.sim.vectors import StreamVectors, VectorFile


# ---- index helpers against torch --------------------------------------------------------------

@pytest.mark.parametrize("shape,perm", [((4, 3), (1, 0)), ((2, 3, 4), (0, 2, 1)), ((2, 3, 4), (2, 0, 1)),
                                        ((5,), (0,)), ((2, 1, 3, 2), (3, 1, 0, 2)), ((3, 4), (-1, 0))])
def test_permute_index_matches_torch_permute(shape, perm):
    ref = torch.arange(torch.Size(shape).numel()).reshape(shape).permute(perm).flatten().tolist()
    assert permute_index(shape, perm) == ref


@pytest.mark.parametrize("shape,perm,repeat", [((6, 2), (1, 0), (1, 3)), ((6, 2), (1, 0), (-1, 2)),
                                               ((2, 5, 2), (0, 2, 1), (2, 4)), ((3, 4), (0, 1), (0, 2)),
                                               ((3, 4), (1, 0), (0, 1))])
def test_permute_index_repeat_matches_torch_repeat_interleave(shape, perm, repeat):
    grid = torch.arange(torch.Size(shape).numel()).reshape(shape)
    ref = grid.repeat_interleave(repeat[1], dim=repeat[0]).permute(perm).flatten().tolist()
    assert permute_index(shape, perm, repeat) == ref


def test_gqa_index_is_llama_repeat_kv():
    """K [T, Hkv, D] -> [H, T, D] with every KV head read by H/Hkv consecutive query heads (repeat_kv)."""
    t, hkv, g, d = 5, 2, 3, 4
    k = torch.randn(t, hkv, d)
    ref = k[:, :, None, :].expand(t, hkv, g, d).reshape(t, hkv * g, d).transpose(0, 1)   # llama repeat_kv
    idx = permute_index((t, hkv), (1, 0), repeat=(1, g))
    assert torch.equal(k.reshape(t * hkv, d)[idx].reshape(hkv * g, t, d), ref)


def test_transpose_index_is_head_split():
    t, h, d = 6, 4, 3
    x = torch.randn(t, h, d)
    idx = transpose_index(t, h)
    assert torch.equal(x.reshape(t * h, d)[idx].reshape(h, t, d), x.transpose(0, 1))
    assert transpose_index(3, 2) == [0, 2, 4, 1, 3, 5]


def test_helpers_reject_bad_arguments():
    with pytest.raises(ValueError):
        permute_index((2, 3), (0, 0))
    with pytest.raises(ValueError):
        permute_index((2, 3), (1, 0), repeat=(2, 2))
    with pytest.raises(ValueError):
        index_mem_text([0, 3], 3)
    with pytest.raises(ValueError):
        instance_config(8, 1, 2, [])
    with pytest.raises(ValueError):
        model(list(range(5)), 2, [0])


# ---- model, mem image, config -----------------------------------------------------------------

def test_model_reorders_units_of_each_tensor():
    beats = list(range(12))                     # two tensors of 3 units of 2 beats
    assert model(beats[:6], 2, [2, 0, 0]) == [4, 5, 0, 1, 0, 1]
    assert model(beats, 2, [2, 0, 0], n_in=3) == [4, 5, 0, 1, 0, 1, 10, 11, 6, 7, 6, 7]
    assert model([[7], [8]], 1, [1, 1, 0]) == [[8], [8], [7]]


def test_model_matches_torch_on_a_head_split():
    t, h, ub = 4, 3, 2
    x = torch.arange(t * h * ub).reshape(t, h, ub)
    assert model(x.flatten().tolist(), ub, transpose_index(t, h)) == x.transpose(0, 1).flatten().tolist()


def test_index_mem_text_and_instance_config():
    assert index_mem_text([0, 2, 1], 3) == "0\n2\n1\n"
    assert index_mem_text([0, 17], 18) == "00\n11\n"
    assert index_mem_text([0], 1) == "0\n"
    ctx, params, module = instance_config(40, 2, 6, [5, 0, 1, 1], "idx.mem")
    assert (ctx, module) == ({}, "stream_reorder")
    assert params == {"WIDTH": 40, "UNIT_BEATS": 2, "N_IN": 6, "N_OUT": 4, "IDX_MEM": "idx.mem"}
    assert ideal_cycles(4, 4, 2, 3) == 8 + 8 + 2 * 8
    assert ideal_cycles(2, 6, 1, 2) == 2 + 6 + 6


def test_registered_with_examples():
    spec = registry()["stream_reorder"]
    assert spec.examples and all(callable(f) for ex in spec.examples for f in ex["files"].values())


# ---- RTL ---------------------------------------------------------------------------------------

def _build(tmp_path, width, unit_beats, n_in, idx, pipe=0):
    """Render, write IDX next to the build and return (files, params, build_dir)."""
    files = render_with_deps("stream_reorder", tmp_path / "rtl")
    build_dir = tmp_path / f"build{pipe}"
    build_dir.mkdir(parents=True, exist_ok=True)
    mem = build_dir / "idx.mem"
    mem.write_text(index_mem_text(idx, n_in))
    _, params, top = instance_config(width, unit_beats, n_in, idx, mem_file=str(mem))
    return files, {**params, "PIPE": pipe}, build_dir


def _vectors(seed, width, unit_beats, n_in, idx, n_tensors, **kw):
    rng = random.Random(seed)
    beats = [rng.randrange(1 << width) for _ in range(n_tensors * n_in * unit_beats)]
    out = model(beats, unit_beats, idx, n_in)
    per = len(idx) * unit_beats
    notes = [f"tensor {k // per} output unit {(k % per) // unit_beats} (input unit {idx[(k % per) // unit_beats]}) "
             f"beat {k % unit_beats}" for k in range(len(out))]
    return VectorFile({"s_x": StreamVectors(("data",), [[b] for b in beats])},
                      {"m_y": StreamVectors(("data",), [[b] for b in out], notes=notes)}, seed=seed,
                      ideal_cycles=ideal_cycles(n_in, len(idx), unit_beats, n_tensors), **kw)


CASES = {
    "identity U1": (1, 6, list(range(6))),
    "transpose [4,3] U2": (2, 12, transpose_index(4, 3)),
    "gqa [T3,Hkv2]x2 U1 (N_OUT > N_IN)": (1, 6, permute_index((3, 2), (1, 0), repeat=(1, 2))),
    "subset [2,4,0] of 5 U3": (3, 5, [2, 4, 0]),
    "single unit U1": (1, 1, [0]),
    "broadcast 1 -> 4 U2": (2, 1, [0, 0, 0, 0]),
}


# PIPE 1 on the cases that stress the IDX lookahead: a one-unit IDX (a bank is read back to back),
# more output than input units, whole-unit subsets of multi-beat units
PIPE_CASES = [(c, 0) for c in CASES] + [(c, 1) for c in ("single unit U1", "gqa [T3,Hkv2]x2 U1 (N_OUT > N_IN)",
                                                         "subset [2,4,0] of 5 U3", "transpose [4,3] U2")]


@pytest.mark.parametrize("case,pipe", PIPE_CASES)
def test_reorder_rtl_matches_model(tmp_path, seed, case, pipe):
    unit_beats, n_in, idx = CASES[case]
    width, n_tensors = 20, 5
    files, params, build_dir = _build(tmp_path, width, unit_beats, n_in, idx, pipe)
    vf = _vectors(seed, width, unit_beats, n_in, idx, n_tensors)
    res = run_stream_test(files, "stream_reorder", vf, build_dir, parameters=params)
    assert res.ok, res.message
    full = res.run("full_rate")
    print(f"reorder {case} PIPE {pipe}: {full['cycles']} cycles for {n_tensors} tensors, {full['output_beats']} beats "
          f"(ideal {full['ideal_cycles']})")
    assert full["cycles"] <= full["ideal_cycles"] + 2 + latency({"PIPE": pipe})


@pytest.mark.parametrize("pipe", [0, 1])
def test_reorder_same_build_other_index_and_heavy_backpressure(tmp_path, seed, pipe):
    """IDX is read at run time from IDX_MEM: one build serves any index of its size; heavy stalls
    keep both banks full (the writer waits on the reader)."""
    n_in, unit_beats, width = 8, 2, 33
    files, params, build_dir = _build(tmp_path, width, unit_beats, n_in, transpose_index(4, 2), pipe)
    rng = random.Random(seed)
    for idx in (transpose_index(2, 4), [rng.randrange(n_in) for _ in range(n_in)]):
        (build_dir / "idx.mem").write_text(index_mem_text(idx, n_in))
        vf = _vectors(seed, width, unit_beats, n_in, idx, 6, gap_prob=0.05, stall_prob=0.7)
        res = run_stream_test(files, "stream_reorder", vf, build_dir, parameters=params)
        assert res.ok, f"idx {idx}: {res.message}"


def test_reorder_full_rate_over_several_tensors(tmp_path, seed):
    """Head split [T16, H4] of 4-beat units, 6 tensors back to back: 1 beat/cycle once the first is in,
    at PIPE 0 and 1; PIPE 1 takes exactly latency({"PIPE": 1}) cycles more."""
    t, h, unit_beats, width = 16, 4, 4, 72
    idx = transpose_index(t, h)
    cycles = {}
    for pipe in (0, 1):
        files, params, build_dir = _build(tmp_path, width, unit_beats, t * h, idx, pipe)
        for n_tensors in (1, 6):
            vf = _vectors(seed, width, unit_beats, t * h, idx, n_tensors)
            res = run_stream_test(files, "stream_reorder", vf, build_dir, parameters=params)
            assert res.ok, res.message
            full = res.run("full_rate")
            beats = full["output_beats"]
            steady = beats / (full["cycles"] - t * h * unit_beats - latency(params))   # after the first tensor is in
            print(f"reorder head split T{t} H{h} U{unit_beats} x{n_tensors} PIPE {pipe}: {full['cycles']} cycles for "
                  f"{beats} beats (ideal {full['ideal_cycles']}), {steady:.4f} beats/cycle after the first tensor")
            assert full["cycles"] <= full["ideal_cycles"] + 2 + latency(params)
            assert steady > 0.99
            cycles[pipe, n_tensors] = full["cycles"]
    # exactly the added latency, for one tensor and for six back to back (banks turn around as at PIPE 0)
    assert cycles[1, 1] - cycles[0, 1] == cycles[1, 6] - cycles[0, 6] == latency({"PIPE": 1}) == 1


def test_reorder_check_can_fail(tmp_path, seed):
    """A wrong expected beat must make the testbench fail, naming the beat."""
    idx = transpose_index(3, 2)
    files, params, build_dir = _build(tmp_path, 16, 1, 6, idx)
    vf = _vectors(seed, 16, 1, 6, idx, 2)
    beats = vf.outputs["m_y"].beats
    beats[7] = [beats[7][0] ^ 0x40]
    res = run_stream_test(files, "stream_reorder", vf, build_dir, parameters=params)
    assert not res.ok
    assert "beat 7" in res.message


@pytest.mark.parametrize("params", [{}, {"WIDTH": 40, "UNIT_BEATS": 1, "N_IN": 1, "N_OUT": 1},
                                    {"WIDTH": 72, "UNIT_BEATS": 4, "N_IN": 64, "N_OUT": 64, "IDX_MEM": "i.mem"},
                                    {"WIDTH": 9, "UNIT_BEATS": 3, "N_IN": 5, "N_OUT": 11, "IDX_MEM": "i.mem"},
                                    {"WIDTH": 40, "UNIT_BEATS": 1, "N_IN": 1, "N_OUT": 1, "PIPE": 1},
                                    {"WIDTH": 72, "UNIT_BEATS": 4, "N_IN": 512, "N_OUT": 512, "IDX_MEM": "i.mem",
                                     "PIPE": 1}])
def test_reorder_lints_clean(tmp_path, params):
    files = render_with_deps("stream_reorder", tmp_path)
    lint(files, "stream_reorder", parameters=params)


def test_reorder_bad_parameters_stop_elaboration(tmp_path):
    files = render_with_deps("stream_reorder", tmp_path)
    with pytest.raises(MasecError, match="must be >= 1"):
        lint(files, "stream_reorder", parameters={"N_OUT": 0})
    script = ("from pyosys import libyosys as ys\nd = ys.Design()\n"
              f"ys.run_pass('read_verilog -sv {files[-1]}', d)\n"
              "ys.run_pass('chparam -set UNIT_BEATS 0 stream_reorder', d)\n"
              "ys.run_pass('hierarchy -top stream_reorder', d)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "must be >= 1" in proc.stdout + proc.stderr


_SYNTH = r"""
import json, sys
from pyosys import libyosys as ys
job = json.loads(sys.argv[1])
d = ys.Design()
ys.run_pass(f"read_verilog -sv {job['file']}", d)
ys.run_pass("chparam " + " ".join(f"-set {k} {v}" for k, v in job["params"].items()) + " stream_reorder", d)
ys.run_pass("synth_xilinx -top stream_reorder -flatten", d)
ys.run_pass(f"tee -q -o {job['stat']} stat -json", d)
"""


def _synth(tmp_path, width, unit_beats, n_in, idx) -> dict:
    files = render_with_deps("stream_reorder", tmp_path / "rtl")
    mem = tmp_path / "idx.mem"
    mem.write_text(index_mem_text(idx, n_in))
    _, params, _ = instance_config(width, unit_beats, n_in, idx, mem_file=str(mem))
    params["IDX_MEM"] = f'"{mem}"'
    job = {"file": str(files[-1]), "params": params, "stat": str(tmp_path / "stat.json")}
    proc = subprocess.run([sys.executable, "-c", _SYNTH, json.dumps(job)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads((tmp_path / "stat.json").read_text())
    cells = data.get("design", {}).get("num_cells_by_type") or data["modules"]["\\stream_reorder"]["num_cells_by_type"]
    print(f"stream_reorder W{width} U{unit_beats} N_IN {n_in} N_OUT {len(idx)}: {dict(sorted(cells.items()))}")
    return cells


def test_reorder_yosys_synth_small(tmp_path):
    """Native Yosys reads the template (generate-block checks, untyped IDX_MEM) and maps the RAM."""
    cells = _synth(tmp_path, 40, 2, 12, permute_index((6, 2), (1, 0), repeat=(1, 3)))
    assert any(c.startswith("RAMB") for c in cells), "data buffer did not map to block RAM"
    assert any(c.startswith("FD") for c in cells)


@pytest.mark.slow
def test_reorder_yosys_synth_head_split(tmp_path):
    cells = _synth(tmp_path, 72, 4, 512, transpose_index(64, 8))
    assert cells.get("RAMB36E1", 0) == 8        # 2 x 2048 words x 72 bits


def test_pipe_rule_and_latency():
    """pipe_depth clips the default rule to the manifest's max_pipe (1); latency refuses PIPE 2."""
    assert [pipe_depth("stream_reorder", ns) for ns in (20.0, 10.0, 6.0, 3.0)] == [0, 0, 1, 1]
    assert [pipe_depth("stream_reorder", 6.0, fam) for fam in ("xcup", "xc7", "ecp5")] == [1, 1, 1]
    assert latency({"PIPE": 0}) == 0 and latency({"PIPE": 1}) == 1
    with pytest.raises(ValueError):
        latency({"PIPE": 2})
