"""Every emitted Vivado script runs under tclsh with Vivado's commands stubbed: the stubs record
each call, and the tests check the recorded calls (order, part, clock, OOC, files that exist).
A Vivado command the stubs do not know fails the run, so a typo cannot pass as a recorded call."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from masec.backend import compile_model
from masec.config import CompileConfig

ROOT = Path(__file__).parents[2]
MLP = ROOT / "examples" / "mlp" / "model.py"
SEP = "\x1f"

pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh not installed (make install-system)")

# Vivado commands used by the scripts; each records its call and returns a handle the next call can take.
STUBS = r"""
set __log [open $::env(MASEC_TCL_LOG) w]
proc __rec {name args} { puts $::__log [join [concat [list $name] $args] "\x1f"]; flush $::__log }
foreach cmd {read_verilog read_xdc add_files synth_design report_utilization opt_design place_design
             route_design report_timing_summary write_checkpoint create_project set_property
             update_compile_order close_project} {
  proc $cmd args "__rec $cmd {*}\$args; return {}"
}
proc get_filesets {name} { __rec get_filesets $name; return "fileset:$name" }
proc get_files args { __rec get_files {*}$args; return "files:[lindex $args end]" }
namespace eval ipx {}
foreach cmd {package_project infer_bus_interfaces associate_bus_interfaces create_xgui_files update_checksums
             check_integrity save_core} {
  proc ipx::$cmd args "__rec ipx::$cmd {*}\$args; return {}"
}
proc ipx::current_core {} { __rec ipx::current_core; return core0 }
proc ipx::get_bus_interfaces {name args} { __rec ipx::get_bus_interfaces $name {*}$args; return "busif:$name" }
proc ipx::get_bus_parameters {name args} {
  __rec ipx::get_bus_parameters $name {*}$args
  if {[info exists ::__params($name)]} { return "param:$name" } else { return {} }
}
proc ipx::add_bus_parameter {name obj} { __rec ipx::add_bus_parameter $name $obj; set ::__params($name) 1; return "param:$name" }
proc ipx::get_memory_maps {name args} { __rec ipx::get_memory_maps $name {*}$args; return {} }
proc ipx::add_memory_map {name obj} { __rec ipx::add_memory_map $name $obj; return "mm:$name" }
proc ipx::get_address_blocks args { __rec ipx::get_address_blocks {*}$args; return {} }
proc ipx::add_address_block {name obj} { __rec ipx::add_address_block $name $obj; return "blk:$name" }
proc unknown args { error "not a stubbed Vivado command: [lindex $args 0]" }
set argv $::env(MASEC_TCL_ARGV)
set argc [llength $argv]
source $::env(MASEC_TCL_SCRIPT)
"""


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    o = tmp_path_factory.mktemp("tcl") / "mlp"
    compile_model(CompileConfig(model_file=str(MLP), out=str(o), format="mxint8", part="xczu3eg", clock_ns=5.0))
    return o


def run_tcl(out: Path, script: str, *argv: str) -> tuple[list[list[str]], subprocess.CompletedProcess]:
    """Run ``script`` (relative to ``out``) under tclsh from ``out``, as Vivado would; the recorded calls."""
    prelude = out.parent / "stubs.tcl"
    prelude.write_text(STUBS)
    log = out.parent / f"{Path(script).stem}.calls"
    env = {"MASEC_TCL_LOG": str(log), "MASEC_TCL_SCRIPT": script, "MASEC_TCL_ARGV": " ".join(argv),
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["tclsh", str(prelude)], cwd=out, capture_output=True, text=True, env=env)
    calls = [line.split(SEP) for line in log.read_text().splitlines()] if log.exists() else []
    return calls, proc


def _index(calls, name, pred=lambda c: True) -> list[int]:
    return [i for i, c in enumerate(calls) if c[0] == name and pred(c)]


def _flag(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


def _build(out):
    return json.loads((out / "masec_build.json").read_text())


@pytest.mark.parametrize("top", ["", "top_axi"])
def test_build_tcl_reads_everything_then_synthesizes_out_of_context(out, top):
    calls, proc = run_tcl(out, "vivado/build.tcl", *([top] if top else []))
    assert proc.returncode == 0, proc.stderr
    build = _build(out)
    names = [c[0] for c in calls]
    (syn,) = _index(calls, "synth_design")
    # sources: every file the design has (and the AXI wrapper), each existing, all read before synthesis
    read = [c[-1] for c in calls if c[0] == "read_verilog"]
    assert all(c[1] == "-sv" for c in calls if c[0] == "read_verilog")
    assert read == build["sources"] + [build["axi"]["source"]]
    assert all((out / f).is_file() for f in read)
    assert max(_index(calls, "read_verilog")) < syn
    mems = [c[-1] for c in calls if c[0] == "add_files"]
    assert mems == build["memories"] and mems and all((out / f).is_file() for f in mems)
    assert max(_index(calls, "add_files")) < syn
    # the clock: --clock 5.0 on the top's clock port
    (xdc,) = [c for c in calls if c[0] == "read_xdc"]
    assert names.index("read_xdc") < syn
    port = "aclk" if top else "clk_i"
    text = (out / xdc[1]).read_text()
    assert re.search(rf"^create_clock -name clk -period 5.0 \[get_ports {port}\]$", text, re.M), text
    # OOC by default, the part's full name, the chosen top
    sd = calls[syn]
    assert "out_of_context" == _flag(sd, "-mode")
    assert _flag(sd, "-part") == "xczu3eg-sbva484-1-e"
    assert _flag(sd, "-top") == (top or build["top"])
    # after synthesis: implementation, reports, a checkpoint last
    order = [names.index(n) for n in ("synth_design", "opt_design", "place_design", "route_design")]
    assert order == sorted(order)
    assert names[-1] == "write_checkpoint" and calls[-1][-1] == f"vivado/out/{top or build['top']}.dcp"
    assert any(c[0] == "report_timing_summary" for c in calls[syn:])


def test_build_tcl_refuses_an_unknown_top(out):
    calls, proc = run_tcl(out, "vivado/build.tcl", "mystery")
    assert proc.returncode != 0 and "top must be top or top_axi" in proc.stderr
    assert not _index(calls, "synth_design")


def test_package_ip_packages_the_axi_top_with_its_interfaces(out):
    calls, proc = run_tcl(out, "vivado/package_ip.tcl")
    assert proc.returncode == 0, proc.stderr
    build = _build(out)
    axi = build["axi"]
    names = [c[0] for c in calls]
    (cp,) = [c for c in calls if c[0] == "create_project"]
    assert _flag(cp, "-part") == "xczu3eg-sbva484-1-e"
    # files: every source, the wrapper, every memory image, the wrapper's clock constraint; all exist
    added = [f for c in calls if c[0] == "add_files" for f in c[-1].split()]
    assert added == build["sources"] + [axi["source"]] + build["memories"] + [f"vivado/{axi['top']}.xdc"]
    assert all((out / f).is_file() for f in added)
    assert "create_clock -name clk -period 5.0 [get_ports aclk]" in (out / f"vivado/{axi['top']}.xdc").read_text()
    assert ["set_property", "top", "top_axi", "fileset:sources_1"] in calls
    # packaging after the files; the IP names the AXI top
    (pp,) = _index(calls, "ipx::package_project")
    assert max(_index(calls, "add_files")) < pp and _flag(calls[pp], "-root_dir") == "vivado/ip"
    assert ["set_property", "name", "top_axi", "core0"] in calls
    # bus interfaces inferred, then each associated with aclk; aresetn active low
    inferred = {c[1] for c in calls if c[0] == "ipx::infer_bus_interfaces"}
    assert {"xilinx.com:interface:axis_rtl:1.0", "xilinx.com:interface:aximm_rtl:1.0",
            "xilinx.com:signal:clock_rtl:1.0", "xilinx.com:signal:reset_rtl:1.0"} <= inferred
    assoc = [c for c in calls if c[0] == "ipx::associate_bus_interfaces"]
    busifs = {_flag(c, "-busif") for c in assoc if "-busif" in c}
    assert busifs == {"s_axi", *(s["name"] for s in axi["streams"])}
    assert all(_flag(c, "-clock") == "aclk" for c in assoc)
    assert any("-reset" in c and _flag(c, "-reset") == "aresetn" for c in assoc)
    assert ["set_property", "value", "ACTIVE_LOW", "param:POLARITY"] in calls
    assert min(names.index("ipx::infer_bus_interfaces"), names.index("ipx::associate_bus_interfaces")) > pp
    # the register block: 2**addr_bits bytes behind s_axi
    assert ["set_property", "range", str(2 ** axi["addr_bits"]), "blk:regs"] in calls
    assert ["ipx::add_memory_map", "s_axi", "core0"] in calls
    # saved at the end
    tail = names[names.index("ipx::create_xgui_files"):]
    assert tail == ["ipx::create_xgui_files", "ipx::update_checksums", "ipx::check_integrity", "ipx::save_core",
                    "close_project"]


def test_an_unstubbed_command_fails_the_run(out, tmp_path):
    """The harness itself: a script calling something Vivado-like that is not stubbed does not pass."""
    (out / "vivado" / "typo.tcl").write_text("read_verilog -sv rtl/top.sv\nsynth_desgin -top top\n")
    calls, proc = run_tcl(out, "vivado/typo.tcl")
    (out / "vivado" / "typo.tcl").unlink()
    assert proc.returncode != 0 and "not a stubbed Vivado command: synth_desgin" in proc.stderr
    assert calls == [["read_verilog", "-sv", "rtl/top.sv"]]


def test_makefile_ip_target_runs_package_ip(out):
    proc = subprocess.run(["make", "-n", "ip", "vivado"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "vivado -mode batch -source vivado/package_ip.tcl" in proc.stdout
    assert "vivado -mode batch -source vivado/build.tcl -tclargs top" in proc.stdout


def test_no_vivado_scripts_for_a_lattice_part(tmp_path):
    o = tmp_path / "ecp5"
    compile_model(CompileConfig(model_file=str(MLP), out=str(o), format="mxint8", part="lfe5u-85f"))
    assert not list((o / "vivado").glob("*"))
    proc = subprocess.run(["make", "ip"], cwd=o, capture_output=True, text=True)
    assert proc.returncode != 0 and "not an AMD/Xilinx part" in proc.stdout
