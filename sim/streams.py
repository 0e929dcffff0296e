"""cocotb valid/ready stream driver and monitor with random gaps and backpressure.

Both sample the handshake in the ReadOnly phase of a cycle (after combinational settling) and
act at the next rising edge, so they are correct for kernels whose ``ready`` depends on ``valid``.
The monitor also checks the producer's side of the contract (docs/streams.md): once ``valid`` is
high and ``ready`` low, ``valid`` and every data field stay stable until the transfer.
"""
from __future__ import annotations

import random

from cocotb.triggers import ReadOnly, RisingEdge


class StreamProtocolError(AssertionError):
    pass


class StreamSource:
    """Drives ``<prefix>_<field>_i`` and ``<prefix>_valid_i``; reads ``<prefix>_ready_o``."""

    def __init__(self, dut, prefix: str, fields, clk, rng: random.Random, gap_prob: float):
        self.prefix, self.fields, self.clk, self.rng, self.gap_prob = prefix, tuple(fields), clk, rng, gap_prob
        self.valid = getattr(dut, f"{prefix}_valid_i")
        self.ready = getattr(dut, f"{prefix}_ready_o")
        self.sigs = [getattr(dut, f"{prefix}_{f}_i") for f in self.fields]
        self.valid.value = 0
        self.sent = 0

    async def run(self, beats) -> None:
        i = 0
        while i < len(beats):
            if self.gap_prob and self.rng.random() < self.gap_prob:
                self.valid.value = 0
                await RisingEdge(self.clk)
                continue
            for sig, v in zip(self.sigs, beats[i]):
                sig.value = int(v)
            self.valid.value = 1
            # hold the beat until it is taken
            while True:
                await ReadOnly()
                taken = int(self.ready.value) == 1
                await RisingEdge(self.clk)
                if taken:
                    break
            i += 1
            self.sent = i
        self.valid.value = 0


class StreamSink:
    """Drives ``<prefix>_ready_i`` with random backpressure and collects beats."""

    def __init__(self, dut, prefix: str, fields, clk, rng: random.Random, stall_prob: float):
        self.prefix, self.fields, self.clk, self.rng, self.stall_prob = prefix, tuple(fields), clk, rng, stall_prob
        self.valid = getattr(dut, f"{prefix}_valid_o")
        self.ready = getattr(dut, f"{prefix}_ready_i")
        self.sigs = [getattr(dut, f"{prefix}_{f}_o") for f in self.fields]
        self.ready.value = 0
        self.beats: list[list[int]] = []
        self.cycle_of_beat: list[int] = []
        self.cycle = 0

    def _read(self) -> list[int]:
        vals = []
        for s in self.sigs:
            v = s.value
            if not v.is_resolvable:
                raise StreamProtocolError(f"{self.prefix}: X/Z on {s._name} while valid is high (value {v})")
            vals.append(int(v))
        return vals

    async def run(self, count: int, on_beat=None) -> None:
        pending = None  # beat offered but not taken in the previous cycle
        while len(self.beats) < count:
            self.ready.value = 0 if (self.stall_prob and self.rng.random() < self.stall_prob) else 1
            await ReadOnly()
            self.cycle += 1
            valid = int(self.valid.value) == 1 if self.valid.value.is_resolvable else None
            if pending is not None:
                if valid is not True:
                    raise StreamProtocolError(f"{self.prefix}: valid dropped before beat {len(self.beats)} was taken")
                now = self._read()
                if now != pending:
                    raise StreamProtocolError(
                        f"{self.prefix}: data changed under backpressure at beat {len(self.beats)}: {pending} -> {now}")
            if valid is None:
                raise StreamProtocolError(f"{self.prefix}: valid is X/Z")
            taken = valid and int(self.ready.value) == 1
            if valid:
                data = self._read()
                pending = None if taken else data
                if taken:
                    self.beats.append(data)
                    self.cycle_of_beat.append(self.cycle)
                    if on_beat is not None:
                        on_beat(len(self.beats) - 1, data)
            await RisingEdge(self.clk)
        self.ready.value = 0

    async def expect_idle(self, cycles: int) -> None:
        """Fail if the kernel offers a beat beyond the expected count within ``cycles`` cycles."""
        self.ready.value = 1
        for _ in range(cycles):
            await ReadOnly()
            if self.valid.value.is_resolvable and int(self.valid.value) == 1:
                raise StreamProtocolError(f"{self.prefix}: extra beat after the expected {len(self.beats)}")
            await RisingEdge(self.clk)
        self.ready.value = 0
