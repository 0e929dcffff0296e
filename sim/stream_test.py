"""The generic cocotb stream test: drive input beats, compare output beats exactly.

Every kernel test and every compiled model's testbench runs this module. It reads the vector
file named by ``MASEC_VECTORS`` (see :mod:`masec.sim.vectors`), and runs two tests:

* ``random_flow`` - random input gaps and random output backpressure (seed from the file,
  printed), every output beat compared exactly; the first mismatch is reported with its beat,
  lane, both values and the beat's note.
* ``full_rate`` - no gaps, no backpressure; measures cycles from the first input beat to the
  last output beat, beside the ideal (the file's ``ideal_cycles``, else the largest beat count).

Results (cycles, beats, pass/fail) are appended as JSON lines to ``MASEC_RESULTS`` if set.
"""
from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from masec.sim.streams import StreamSink, StreamSource
from masec.sim.vectors import VectorFile, unpack_lanes


def _describe_mismatch(name, sv, index, got, exp) -> str:
    parts = [f"stream {name}: beat {index} differs"]
    for f, g, e in zip(sv.fields, got, exp):
        if g == e:
            continue
        if f in sv.lanes:
            lanes, width = sv.lanes[f]
            gl, el = unpack_lanes(g, lanes, width), unpack_lanes(e, lanes, width)
            first = next((i for i in range(lanes) if gl[i] != el[i]), None)
            if first is None:   # the lanes agree: the bits beyond them differ (e.g. M2XFP metadata)
                parts.append(f"{f}: lanes equal, bits above the {lanes} x {width}-bit lanes differ: expected "
                             f"0x{e >> (lanes * width):x}, got 0x{g >> (lanes * width):x}")
            else:
                parts.append(f"{f}: first differing lane {first} (element {index * lanes + first} of the stream): "
                             f"expected 0x{el[first]:x}, got 0x{gl[first]:x}; expected lanes {el}, got {gl}")
        else:
            parts.append(f"{f}: expected 0x{e:x}, got 0x{g:x}")
    if sv.notes:
        parts.append(f"context: {sv.notes[index]}")
    return "; ".join(parts)


async def _run(dut, gap_prob: float, stall_prob: float, label: str) -> dict:
    vec = VectorFile.read(os.environ["MASEC_VECTORS"])
    seed = int(os.environ.get("MASEC_SEED", vec.seed))
    rng = random.Random(seed)
    dut._log.info("masec %s: seed %d (replay: MASEC_SEED=%d), gap_prob %.2f, stall_prob %.2f",
                  label, seed, seed, gap_prob, stall_prob)
    clk = dut.clk_i
    cocotb.start_soon(Clock(clk, 10, unit="ns").start())
    sources = {k: StreamSource(dut, k, v.fields, clk, random.Random(rng.random()), gap_prob)
               for k, v in vec.inputs.items()}
    sinks = {k: StreamSink(dut, k, v.fields, clk, random.Random(rng.random()), stall_prob)
             for k, v in vec.outputs.items()}
    dut.rst_ni.value = 0
    await ClockCycles(clk, 3)
    dut.rst_ni.value = 1
    await RisingEdge(clk)

    errors: list[str] = []

    def checker(name):
        sv = vec.outputs[name]

        def check(i, data):
            if not errors and data != sv.beats[i]:
                errors.append(_describe_mismatch(name, sv, i, data, sv.beats[i]))
        return check

    taps = [_Tap(dut, t, clk) for t in vec.taps]
    for tap in taps:
        cocotb.start_soon(tap.run())

    def first_tap_mismatch() -> str:
        bad = [t for t in taps if t.mismatch]
        if not bad:
            return ""
        return "; first internal stream that differs (topological order): " + bad[0].mismatch

    n_in = max([len(v.beats) for v in vec.inputs.values()] or [0])
    n_out = max([len(v.beats) for v in vec.outputs.values()] or [0])
    ideal = vec.ideal_cycles or max(n_in, n_out)
    timeout = vec.timeout_cycles or (20 * ideal + 2000)
    for k, src in sources.items():
        cocotb.start_soon(src.run(vec.inputs[k].beats))
    tasks = [cocotb.start_soon(s.run(len(vec.outputs[k].beats), checker(k))) for k, s in sinks.items()]
    try:
        for t in tasks:
            await with_timeout(t, timeout * 10, "ns")
            if errors:
                break
    except Exception as exc:  # a timeout: say which internal stream went wrong first, if monitored
        if taps:
            raise AssertionError(f"{type(exc).__name__}: {exc}{first_tap_mismatch()}") from None
        raise
    if errors and taps:
        await ClockCycles(clk, 1)
        errors[0] += first_tap_mismatch()
    cycles = max([s.cycle_of_beat[-1] for s in sinks.values() if s.cycle_of_beat] or [0])
    result = {"test": label, "seed": seed, "ok": not errors, "cycles": cycles, "ideal_cycles": ideal,
              "input_beats": n_in, "output_beats": n_out,
              "output_elements": sum(len(v.beats) * v.lanes.get("data", (1, 0))[0] for v in vec.outputs.values())}
    if os.environ.get("MASEC_RESULTS"):
        with open(os.environ["MASEC_RESULTS"], "a") as fh:
            fh.write(json.dumps(result) + "\n")
    assert not errors, errors[0]
    for s in sinks.values():
        await s.expect_idle(32)
    dut._log.info("masec %s: %d output beats in %d cycles (ideal %d): PASS", label, n_out, cycles, ideal)
    return result


class _Tap:
    """Passive monitor of one internal edge (``<signal>_valid/_ready/_bus``): compares every
    transferred beat with the reference and remembers the first difference."""

    def __init__(self, dut, tap: dict, clk):
        self.tap, self.clk = tap, clk
        sig = tap["signal"]
        self.valid = getattr(dut, f"{sig}_valid")
        self.ready = getattr(dut, f"{sig}_ready")
        self.bus = getattr(dut, f"{sig}_bus")
        self.mismatch = ""
        self.count = 0

    async def run(self):
        from cocotb.triggers import ReadOnly

        beats, lanes, width = self.tap["beats"], self.tap["lanes"], self.tap["width"]
        while self.count < len(beats) and not self.mismatch:
            await RisingEdge(self.clk)
            await ReadOnly()
            if int(self.valid.value) and int(self.ready.value):
                got, exp = int(self.bus.value), beats[self.count]
                if got != exp:
                    data_bits = lanes * width
                    gl = unpack_lanes(got & ((1 << data_bits) - 1), lanes, width)
                    el = unpack_lanes(exp & ((1 << data_bits) - 1), lanes, width)
                    lane = next((i for i in range(lanes) if gl[i] != el[i]), None)
                    where = (f"element {self.count * lanes + lane} of the stream (beat {self.count}, lane {lane}): "
                             f"expected code 0x{el[lane]:x}, got 0x{gl[lane]:x}" if lane is not None else
                             f"beat {self.count}: scale expected 0x{exp >> data_bits:x}, got 0x{got >> data_bits:x}")
                    self.mismatch = f"{self.tap['label']}, {where}"
                self.count += 1


@cocotb.test()
async def random_flow(dut):
    vec = VectorFile.read(os.environ["MASEC_VECTORS"])
    await _run(dut, vec.gap_prob, vec.stall_prob, "random_flow")


@cocotb.test()
async def full_rate(dut):
    await _run(dut, 0.0, 0.0, "full_rate")
