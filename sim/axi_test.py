"""cocotb test of a compiled design's AXI wrapper ``<top>_axi`` (docs/board.md), with cocotbext-axi.

:func:`run_axi_test` builds ``rtl/<top>_axi.sv`` and the design's sources with Verilator (through
:mod:`masec.sim.runner`) and runs the cocotb tests below on it. They read the wrapper's facts from
``masec_build.json`` (``axi``) and the reference beats from ``tb/vectors.json``, both named by
environment variables (``MASEC_AXI_BUILD``, ``MASEC_VECTORS``, ``MASEC_SEED``)::

    res = run_axi_test(out, tmp / "axi_build", seed=7)
    assert res.ok, res.message

* ``registers`` - every constant register reads what masec_build.json says; CONTROL/STATUS reset values.
* ``stream_flow`` - two inferences back to back through AxiStreamSource/Sink with random input gaps
  and output backpressure (seeded pause generators); every output beat compared exactly (TDATA =
  scale | lanes << 8 on an MX stream), TLAST only on each tensor's last beat (one frame = one
  tensor); then IN_COUNT, DONE_COUNT, beat counters, busy while an output is held back.
* ``control`` - enable 0 stops the streams; an input frame with an early TLAST sets the input's
  TLAST error (STATUS bit 1) without breaking the framing, write-1-to-clear clears it; soft reset
  zeroes the counters.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from masec.sim.vectors import VectorFile


def _pauses(rng: random.Random, prob: float):
    while True:
        yield rng.random() < prob


def _tdata(s: dict, beat: list[int]) -> int:
    """The TDATA word of one reference beat ([data] or [data, scale]) on stream ``s``."""
    return (beat[0] << 8 | beat[1]) if s["mx"] else beat[0]


class _Bench:
    def __init__(self, dut):
        from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink,
                                   AxiStreamSource)

        self.Frame = AxiStreamFrame
        self.dut = dut
        self.build = json.loads(Path(os.environ["MASEC_AXI_BUILD"]).read_text())["axi"]
        self.vec = VectorFile.read(os.environ["MASEC_VECTORS"])
        self.seed = int(os.environ.get("MASEC_SEED", self.vec.seed))
        self.rng = random.Random(self.seed)
        dut._log.info("masec axi test: seed %d (replay: MASEC_SEED=%d)", self.seed, self.seed)
        self.regs = {r["name"]: r for r in self.build["registers"]}
        self.ins = [s for s in self.build["streams"] if s["direction"] == "in"]
        self.outs = [s for s in self.build["streams"] if s["direction"] == "out"]
        cocotb.start_soon(Clock(dut.aclk, 10, unit="ns").start())
        # one "byte" per beat: a frame's tdata is the list of TDATA words, whatever the width
        self.src = {s["name"]: AxiStreamSource(AxiStreamBus.from_prefix(dut, s["name"]), dut.aclk, dut.aresetn,
                                               reset_active_level=False, byte_lanes=1) for s in self.ins}
        self.sink = {s["name"]: AxiStreamSink(AxiStreamBus.from_prefix(dut, s["name"]), dut.aclk, dut.aresetn,
                                              reset_active_level=False, byte_lanes=1) for s in self.outs}
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.aclk, dut.aresetn,
                                  reset_active_level=False)

    async def reset(self):
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, 4)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 2)

    async def read(self, name: str) -> int:
        return await self.axil.read_dword(int(self.regs[name]["addr"], 16))

    async def write(self, name: str, value: int) -> None:
        await self.axil.write_dword(int(self.regs[name]["addr"], 16), value)

    def expected(self, s: dict) -> list[int]:
        return [_tdata(s, b) for b in self.vec.outputs[s["core"]].beats]

    def inputs(self, s: dict) -> list[int]:
        return [_tdata(s, b) for b in self.vec.inputs[s["core"]].beats]

    def random_flow(self, gap: float, stall: float) -> None:
        for src in self.src.values():
            src.set_pause_generator(_pauses(random.Random(self.rng.random()), gap))
        for snk in self.sink.values():
            snk.set_pause_generator(_pauses(random.Random(self.rng.random()), stall))

    async def send_all(self, frames_per_input=None) -> None:
        for s in self.ins:
            for frame in (frames_per_input or {}).get(s["name"], [self.inputs(s)]):
                await self.src[s["name"]].send(self.Frame(frame))

    async def check_outputs(self, label: str) -> None:
        timeout = 40 * max(s["beats"] for s in self.build["streams"]) + 20000
        for s in self.outs:
            exp = self.expected(s)
            frame = await with_timeout(self.sink[s["name"]].recv(), timeout * 10, "ns")
            got = list(frame.tdata)
            if got != exp:
                if len(got) != len(exp):
                    raise AssertionError(f"{label}: {s['name']}: a frame (TLAST to TLAST) of {len(got)} beats, "
                                         f"expected one tensor of {len(exp)} beats")
                i = next(k for k in range(len(exp)) if got[k] != exp[k])
                raise AssertionError(f"{label}: {s['name']} ({s['node']}) beat {i} of {len(exp)}: expected TDATA "
                                     f"0x{exp[i]:x}, got 0x{got[i]:x} (seed {self.seed})")


@cocotb.test()
async def registers(dut):
    tb = _Bench(dut)
    await tb.reset()
    for r in tb.build["registers"]:
        got = await tb.axil.read_dword(int(r["addr"], 16))
        want = r.get("value", r.get("reset"))
        assert got == want, f"register {r['name']} at {r['addr']}: read 0x{got:x}, expected 0x{want:x}"
    assert await tb.read("STATUS") == 0b100, "STATUS after reset: enabled, not busy, no error"
    # a write to a read-only register changes nothing
    await tb.write("ID", 0)
    assert await tb.read("ID") == tb.regs["ID"]["value"]


@cocotb.test()
async def stream_flow(dut):
    tb = _Bench(dut)
    await tb.reset()
    tb.random_flow(tb.vec.gap_prob, tb.vec.stall_prob)
    runs = 2
    for k in range(runs):
        await tb.send_all()
    for k in range(runs):
        await tb.check_outputs(f"inference {k}")
    assert await tb.read("IN_COUNT") == runs
    assert await tb.read("DONE_COUNT") == runs
    assert await tb.read("STATUS") == 0b100
    for s in tb.build["streams"]:
        assert await tb.read(f"{s['name'].upper()}_COUNT") == runs * s["beats"], s["name"]
    # busy while the outputs are held back
    for snk in tb.sink.values():
        snk.clear_pause_generator()
        snk.pause = True
    await tb.send_all()
    for _ in range(100000):
        if await tb.read("IN_COUNT") == runs + 1:
            break
    else:
        raise AssertionError("the inputs of the third inference were not taken")
    assert (await tb.read("STATUS")) & 1, "STATUS.busy while an inference's outputs are held back"
    tb.random_flow(tb.vec.gap_prob, tb.vec.stall_prob)
    await tb.check_outputs("inference 2")
    await ClockCycles(dut.aclk, 4)
    assert await tb.read("DONE_COUNT") == runs + 1
    assert await tb.read("STATUS") == 0b100


@cocotb.test()
async def control(dut):
    tb = _Bench(dut)
    await tb.reset()
    s0 = tb.ins[0]
    # enable 0: nothing moves
    await tb.write("CONTROL", 0)
    assert await tb.read("CONTROL") == 0 and await tb.read("STATUS") == 0
    await tb.send_all()
    await ClockCycles(dut.aclk, 200)
    assert await tb.read(f"{s0['name'].upper()}_COUNT") == 0, "beats moved while CONTROL.enable = 0"
    await tb.write("CONTROL", 1)
    await tb.check_outputs("after enable")
    # an input tensor sent as two frames: TLAST early. The wrapper frames by count: the output is
    # still right, and the input's TLAST error flag is set (and STATUS.error).
    tb.random_flow(tb.vec.gap_prob, tb.vec.stall_prob)
    beats = tb.inputs(s0)
    cut = max(1, len(beats) // 3)
    split = {s0["name"]: [beats[:cut], beats[cut:]]} if len(beats) > 1 else {}
    await tb.send_all(split)
    await tb.check_outputs("early TLAST")
    flags = f"{s0['name'].upper()}_FLAGS"
    if split:
        assert await tb.read(flags) == 1, "TLAST error flag after an early TLAST"
        assert await tb.read("STATUS") == 0b110, "STATUS.error after an early TLAST"
        await tb.write(flags, 1)
        assert await tb.read(flags) == 0 and await tb.read("STATUS") == 0b100, "write 1 clears the TLAST error"
    # a good tensor after the bad one leaves the flag clear
    await tb.send_all()
    await tb.check_outputs("after the error")
    assert await tb.read(flags) == 0
    assert await tb.read("DONE_COUNT") == 3
    # soft reset: counters to zero, enable stays
    await tb.write("CONTROL", 0b11)
    assert await tb.read("DONE_COUNT") == 0 and await tb.read("IN_COUNT") == 0
    assert await tb.read(f"{s0['name'].upper()}_COUNT") == 0
    assert await tb.read("CONTROL") == 1
    await tb.send_all()
    await tb.check_outputs("after soft reset")
    assert await tb.read("DONE_COUNT") == 1


def run_axi_test(out: Path, build_dir: Path, seed: int | None = None, testcase: list[str] | None = None,
                 vectors: Path | None = None):
    """Build ``<top>_axi`` of the compiled folder ``out`` and run this module's tests; a SimResult.
    ``vectors`` replaces ``out/tb/vectors.json`` (the reference beats)."""
    from masec.errors import MasecError
    from masec.sim.runner import SimResult, _failures, build

    out, build_dir = Path(out).resolve(), Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    info = json.loads((out / "masec_build.json").read_text())
    top = info["axi"]["top"]
    for mem in info["memories"]:  # $readmemh resolves names against the simulation's folder
        shutil.copyfile(out / mem, build_dir / Path(mem).name)
    try:
        runner = build([out / s for s in info["sources"]] + [out / info["axi"]["source"]], top, build_dir)
    except (SystemExit, RuntimeError) as exc:
        raise MasecError(f"Verilator build of {top} failed (log: {build_dir / 'build.log'})") from exc
    env = {"MASEC_AXI_BUILD": str(out / "masec_build.json"), "MASEC_VECTORS": str(Path(vectors).resolve() if vectors else out / "tb" / "vectors.json")}
    if seed is not None:
        env["MASEC_SEED"] = str(seed)
    xml = build_dir / "results.xml"
    if xml.exists():
        xml.unlink()
    try:
        runner.test(hdl_toplevel=top, test_module="masec.sim.axi_test", build_dir=str(build_dir),
                    test_dir=str(build_dir), extra_env=env, testcase=testcase, results_xml=str(xml),
                    log_file=str(build_dir / "sim.log"))
    except SystemExit:
        pass
    failures = _failures(xml) if xml.exists() else [f"simulation produced no results (log: {build_dir / 'sim.log'})"]
    ran = len(list(ET.parse(xml).getroot().iter("testcase"))) if xml.exists() else 0
    if not failures and ran < len(testcase or ("registers", "stream_flow", "control")):
        failures = [f"only {ran} cocotb test(s) ran (log: {build_dir / 'sim.log'})"]
    return SimResult(not failures, "; ".join(failures), [], build_dir)
