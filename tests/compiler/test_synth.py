"""`masec synth` (masec.synth.synth_main) against the output-folder contract, and the emitted Yosys script.

A hand-written two-module design checks the mechanics fast (instances from top.sv, $readmemh of a
parameter-named memory file, per-instance sums, the cache); a compiled small model checks the real
kernels and the emitted synth.ys; the MLP example's full synthesis is marked slow.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from masec.errors import MasecError
from masec.parts import RESOURCES
from masec.synth import (add_synth_arguments, design_instances, fmax_estimate_mhz, logic_depth, parse_instances,
                         read_build, synth_main)

pytest.importorskip("pyosys")

ROOT = Path(__file__).resolve().parents[2]

ACC = """\
// a registered accumulator: one adder between registers
module acc #(
  parameter int unsigned W = 8  // data width
) (
  input  logic         clk_i,
  input  logic         rst_ni,
  input  logic [W-1:0] x_i,
  output logic [W-1:0] y_o
);
  always_ff @(posedge clk_i or negedge rst_ni)
    if (!rst_ni) y_o <= '0;
    else         y_o <= y_o + x_i;
endmodule
"""

ROM = """\
// a ROM read from a memory image named by a parameter (the default file does not exist)
module rom #(
  parameter int unsigned W   = 8,
  parameter int unsigned D   = 16,
  parameter              MEM = "missing.mem"
) (
  input  logic                 clk_i,
  input  logic [$clog2(D)-1:0] a_i,
  output logic [W-1:0]         d_o
);
  logic [W-1:0] mem [D];
  initial $readmemh(MEM, mem);
  always_ff @(posedge clk_i) d_o <= mem[a_i];
endmodule
"""

TOP = """\
// top: three instances, two distinct configurations
module top (
  input  logic        clk_i,
  input  logic        rst_ni,
  input  logic [15:0] x_i,
  input  logic [3:0]  a_i,
  output logic [31:0] y_o
);
  acc #(.W(8)) u_a0 (.clk_i(clk_i), .rst_ni(rst_ni), .x_i(x_i[7:0]), .y_o(y_o[7:0]));
  acc #(
    .W(8)   // same configuration as u_a0
  ) u_a1 (.clk_i(clk_i), .rst_ni(rst_ni), .x_i(x_i[15:8]), .y_o(y_o[15:8]));
  rom #(.W(16), .D(16), .MEM("r0.mem")) u_r0 (.clk_i(clk_i), .a_i(a_i), .d_o(y_o[31:16]));
endmodule
"""


def _tiny(root: Path) -> Path:
    rtl = root / "rtl"
    rtl.mkdir(parents=True)
    for name, text in (("acc", ACC), ("rom", ROM), ("top", TOP)):
        (rtl / f"{name}.sv").write_text(text)
    (rtl / "r0.mem").write_text("".join(f"{(i * 0x9E37) & 0xFFFF:04x}\n" for i in range(16)))
    (rtl / "filelist.f").write_text("acc.sv\nrom.sv\ntop.sv\n")
    (root / "masec_build.json").write_text(json.dumps(
        {"top": "top", "sources": ["rtl/acc.sv", "rtl/rom.sv", "rtl/top.sv"], "memories": ["rtl/r0.mem"]}))
    (root / "masec_config.json").write_text(json.dumps({"part": "xc7z020clg400-1"}))
    return root


def _args(out, *extra):
    return add_synth_arguments(argparse.ArgumentParser()).parse_args([str(out), "--jobs", "2", *extra])


def _check_report(rep: dict) -> None:
    assert set(rep["total"]) == set(RESOURCES)
    for k in RESOURCES:
        assert rep["total"][k] == sum(r[k] for r in rep["instances"])
    kernels = {k["id"]: k for k in rep["kernels"]}
    for r in rep["instances"]:
        assert all(r[c] == kernels[r["kernel"]][c] for c in (*RESOURCES, "logic_depth"))
        assert r["name"] in kernels[r["kernel"]]["instances"]
    assert set(rep["fits"]) == {"part", "utilization", "fits", "limiting"} and isinstance(rep["fits"]["fits"], bool)
    assert rep["logic_depth"] == max(r["logic_depth"] for r in rep["instances"])
    assert rep["fmax_estimate_mhz"] == fmax_estimate_mhz(rep["logic_depth"]) and "routing" in rep["timing_model"]
    assert all(k["fmax_estimate_mhz"] == fmax_estimate_mhz(k["logic_depth"]) for k in rep["kernels"])


def test_parse_instances_named_overrides_comments_and_strings():
    text = TOP.replace('.MEM("r0.mem")', '.MEM("a,b);(c.mem") /* .X(1) */')
    got = parse_instances(text)
    assert [(i.name, i.module) for i in got] == [("u_a0", "acc"), ("u_a1", "acc"), ("u_r0", "rom")]
    assert got[0].params == got[1].params == (("W", "8"),)
    assert got[2].report_params() == {"D": 16, "MEM": "a,b);(c.mem", "W": 16}
    with pytest.raises(MasecError, match="named overrides"):
        parse_instances("module top; acc #(8) u_a (.x(y)); endmodule")


def test_instance_list_from_build_json_wins(tmp_path):
    out = _tiny(tmp_path / "d")
    build = read_build(out)
    assert [i.name for i in design_instances(out, build)] == ["u_a0", "u_a1", "u_r0"]
    build["instances"] = [{"name": "u_x", "module": "rom", "params": {"MEM": "r0.mem", "W": 16}}]
    (inst,) = design_instances(out, build)
    assert inst.params == (("MEM", '"r0.mem"'), ("W", "16"))


def test_synth_tiny_design_sums_instances_and_caches(tmp_path, monkeypatch):
    out = _tiny(tmp_path / "d")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    t0 = time.monotonic()
    assert synth_main(_args(out)) == 0
    cold = time.monotonic() - t0
    text = (out / "report" / "synth.json").read_text()
    rep = json.loads(text)
    _check_report(rep)
    assert rep["part"] == "xc7z020clg400-1" and rep["family"] == "xc7"   # from masec_config.json
    assert len(rep["instances"]) == 3 and len(rep["kernels"]) == 2
    byname = {r["name"]: r for r in rep["instances"]}
    assert byname["u_a0"]["FF"] == 8 and byname["u_a0"]["logic_depth"] >= 1 and byname["u_a0"] == {
        **byname["u_a1"], "name": "u_a0"}
    rom = byname["u_r0"]
    assert rom["params"]["MEM"] == "r0.mem" and rom["LUT"] + rom["BRAM"] > 0   # the image was read
    assert rep["total"]["FF"] >= 8 + 8 + 16
    md = (out / "report" / "synth.md").read_text()
    assert sum(line.startswith("| u_") for line in md.splitlines()) == 3 and "| **total** |" in md
    assert len(list((tmp_path / "cache" / "synth").glob("*.json"))) == 2

    t0 = time.monotonic()
    assert synth_main(_args(out)) == 0
    warm = time.monotonic() - t0
    assert (out / "report" / "synth.json").read_text() == text  # deterministic, and all from the cache
    assert warm < 5 and warm < cold / 2


def test_cache_key_covers_memory_image_and_family(tmp_path, monkeypatch):
    out = _tiny(tmp_path / "d")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    build = read_build(out)
    build["instances"] = [{"name": "u_r0", "module": "rom", "params": {"W": 16, "D": 16, "MEM": "r0.mem"}}]
    (out / "masec_build.json").write_text(json.dumps(build))
    entries = tmp_path / "cache" / "synth"
    assert synth_main(_args(out)) == 0
    (out / "rtl" / "r0.mem").write_text("0000\n" * 16)        # an all-zero ROM: different logic
    assert synth_main(_args(out)) == 0
    assert len(list(entries.glob("*.json"))) == 2
    zero = json.loads((out / "report" / "synth.json").read_text())
    assert zero["total"]["LUT"] == 0 and zero["total"]["BRAM"] == 0   # a constant ROM is no logic
    # another part changes the family: a fresh synthesis, and utilization against that part
    assert synth_main(_args(out, "--part", "xczu3eg")) == 0
    rep = json.loads((out / "report" / "synth.json").read_text())
    assert rep["part"] == "xczu3eg-sbva484-1-e" and rep["family"] == "xcup" and len(list(entries.glob("*.json"))) == 3
    _check_report(rep)


def test_xc7_estimate_model():
    # 0.6 ns + levels x (0.642 + 0.5) ns: 2 levels = 2.884 ns, 3 levels = 4.026 ns
    assert fmax_estimate_mhz(2) == 346.7 and fmax_estimate_mhz(3) == 248.4
    assert fmax_estimate_mhz(0) > fmax_estimate_mhz(1) > fmax_estimate_mhz(10) > 0


def test_errors_are_one_line(tmp_path):
    with pytest.raises(MasecError, match="masec_build.json"):
        synth_main(_args(tmp_path))
    out = _tiny(tmp_path / "d")
    with pytest.raises(MasecError, match="unknown FPGA part 'xc7a35t'; known parts: xc7z020"):
        synth_main(_args(out, "--part", "xc7a35t"))


def test_logic_depth_counts_luts_between_registers():
    def cell(typ, ins, outs, **params):
        conns = {**{f"I{i}": [b] for i, b in enumerate(ins)}, **{p: [b] for p, b in outs.items()}}
        dirs = {**{f"I{i}": "input" for i in range(len(ins))}, **{p: "output" for p in outs}}
        return {"type": typ, "port_directions": dirs, "connections": conns, "parameters": params}

    net = {"modules": {"m": {"attributes": {"top": "1"}, "ports": {"x": {"direction": "input", "bits": [2]},
                                                                  "y": {"direction": "output", "bits": [7]}},
                             "cells": {"l1": cell("LUT2", [2, 6], {"O": 3}), "c": cell("CARRY4", [3], {"CO": 4}),
                                       "l2": cell("LUT3", [4, 2], {"O": 5}), "ff": cell("FDRE", [5], {"Q": 6}),
                                       "l3": cell("LUT1", [6], {"O": 7})}}}}
    assert logic_depth(net) == 2   # x -> LUT2 -> CARRY4 -> LUT3 -> FF; FF -> LUT1 -> y


def _compile(model: str, out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "masec.cli", "compile", str(ROOT / model), "--format", "mxint8",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _run_synth_ys(out: Path) -> dict:
    code = "from pyosys import libyosys as ys; ys.run_pass('script yosys/synth.ys', ys.Design())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "-defer" in (out / "yosys" / "synth.ys").read_text()
    return json.loads((out / "yosys" / "stat.json").read_text())["design"]["num_cells_by_type"]


def test_compiled_small_model(tmp_path, monkeypatch):
    out = _compile("tests/compiler/models/relu_fanout.py", tmp_path / "fan")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    assert synth_main(_args(out)) == 0
    rep = json.loads((out / "report" / "synth.json").read_text())
    _check_report(rep)
    assert len(rep["instances"]) >= 3 and rep["fits"]["fits"] and rep["total"]["FF"] > 0
    # masec_build.json lists every instance of top.sv (so the totals count them), the edge slices too
    build = json.loads((out / "masec_build.json").read_text())
    parsed = {i.name for i in parse_instances((out / "rtl" / "top.sv").read_text())}
    assert {i["name"] for i in build["instances"]} == parsed
    assert any(n.startswith("u_slice_in_") for n in parsed) and {r["name"] for r in rep["instances"]} == parsed
    assert "yowasp" not in (out / "Makefile").read_text()
    # the Makefile's synth target on a fresh install: masec synth . (all cached now)
    make = subprocess.run(["make", "-s", "synth", f"MASEC={sys.executable} -m masec.cli"], cwd=out,
                          capture_output=True, text=True)
    assert make.returncode == 0, make.stdout + make.stderr
    assert json.loads((out / "report" / "synth.json").read_text()) == rep
    assert "-mode out_of_context" in (out / "vivado" / "build.tcl").read_text()
    cells = _run_synth_ys(out)          # the emitted flat script runs under native Yosys
    assert any(c.startswith("FD") for c in cells)


@pytest.mark.slow
def test_mlp_example(tmp_path, monkeypatch):
    out = _compile("examples/mlp/model.py", tmp_path / "mlp")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    assert synth_main(_args(out)) == 0
    rep = json.loads((out / "report" / "synth.json").read_text())
    _check_report(rep)
    assert rep["total"]["DSP"] > 0 and rep["fits"]["fits"]
    t0 = time.monotonic()
    assert synth_main(_args(out)) == 0
    assert time.monotonic() - t0 < 10
    cells = _run_synth_ys(out)
    assert any(c.startswith("DSP48") for c in cells)


@pytest.mark.slow
def test_attention_matmul_synthesizes(tmp_path, monkeypatch):
    """mx_matmul has no memory image: it is read without `-defer` (Yosys 0.70 asserted in rtlil_bufnorm
    on `-defer` + `hierarchy -chparam` for it, so every attention design failed `masec synth`)."""
    out = _compile("tests/compiler/models/single_head.py", tmp_path / "head")
    monkeypatch.setenv("MASEC_CACHE", str(tmp_path / "cache"))
    build = read_build(out)
    build["instances"] = [i for i in build["instances"] if i["module"] == "mx_matmul"]
    assert len(build["instances"]) == 2
    (out / "masec_build.json").write_text(json.dumps(build))
    assert synth_main(_args(out)) == 0
    rep = json.loads((out / "report" / "synth.json").read_text())
    _check_report(rep)
    assert all(r["module"] == "mx_matmul" and r["LUT"] > 0 and r["DSP"] > 0 for r in rep["instances"])


def test_dependency_files_follow_instantiations_not_identifiers(tmp_path):
    """A kernel with a signal named like another module (mx_quantize's `top`) must not pull that module
    in: `masec synth` reads a kernel's files without -defer, and the top level's memories then fail."""
    from masec.synth import _dependency_files

    srcs = {"leaf": "module leaf #(parameter int W = 1) (input logic a);\nendmodule\n",
            "mid": "module mid (input logic a);\n  logic top;\n  leaf #(.W(2)) u_leaf (.a(a));\nendmodule\n",
            "other": "module other (input logic a);\n  leaf u_l(.a(a));\nendmodule\n",
            "top": "module top (input logic a);\n  mid u_mid (.a(a));\n  other u_o (.a(a));\nendmodule\n"}
    files = {}
    for name, text in srcs.items():
        (tmp_path / f"{name}.sv").write_text(text)
        files[name] = tmp_path / f"{name}.sv"
    order = [files[n] for n in ("leaf", "mid", "other", "top")]
    assert [p.stem for p in _dependency_files("mid", files, order)] == ["leaf", "mid"]
    assert [p.stem for p in _dependency_files("top", files, order)] == ["leaf", "mid", "other", "top"]
