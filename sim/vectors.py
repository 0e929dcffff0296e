"""Test-vector files shared by the pytest side and the cocotb side of a stream test.

A vector file is JSON (integers may be arbitrarily wide)::

    {"seed": 7, "gap_prob": 0.3, "stall_prob": 0.3, "timeout_cycles": 10000,
     "ideal_cycles": 0,   # optional: the kernel's ideal cycle count (default: largest beat count)
     "inputs":  {"s_x": {"fields": ["data", "scale"], "beats": [[d0, s0], [d1, s1], ...]}},
     "outputs": {"m_y": {"fields": ["data", "scale"], "beats": [...],
                         "lanes": {"data": [P, W]},            # optional: split data into lanes in reports
                         "notes": ["row 0 block 0 ...", ...]}}} # optional: per-beat context for reports

Stream ``s_x`` drives ``s_x_<field>_i`` / ``s_x_valid_i`` and reads ``s_x_ready_o``; stream
``m_y`` reads ``m_y_<field>_o`` / ``m_y_valid_o`` and drives ``m_y_ready_i``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StreamVectors:
    fields: tuple[str, ...]
    beats: list[list[int]]
    lanes: dict[str, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] | None = None

    def to_json(self) -> dict:
        out = {"fields": list(self.fields), "beats": [list(map(int, b)) for b in self.beats]}
        if self.lanes:
            out["lanes"] = {k: list(v) for k, v in self.lanes.items()}
        if self.notes is not None:
            out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_json(cls, d: dict) -> "StreamVectors":
        return cls(tuple(d["fields"]), [list(b) for b in d["beats"]],
                   {k: tuple(v) for k, v in d.get("lanes", {}).items()}, d.get("notes"))


@dataclass
class VectorFile:
    inputs: dict[str, StreamVectors]
    outputs: dict[str, StreamVectors]
    seed: int = 1
    gap_prob: float = 0.3
    stall_prob: float = 0.3
    timeout_cycles: int = 0  # 0: derived from the beat counts
    ideal_cycles: int = 0    # 0: the largest beat count of any stream; kernels that compute longer say so
    #: internal streams to monitor (localization, ``masec sim --debug``): in topological order,
    #: {"signal": "e12_p", "label": "node `x` (linear, layers.0.attention.wq)", "beats": [bus, ...],
    #:  "lanes": P, "width": W}
    taps: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        d = {"seed": self.seed, "gap_prob": self.gap_prob, "stall_prob": self.stall_prob,
             "timeout_cycles": self.timeout_cycles, "ideal_cycles": self.ideal_cycles,
             "inputs": {k: v.to_json() for k, v in sorted(self.inputs.items())},
             "outputs": {k: v.to_json() for k, v in sorted(self.outputs.items())}}
        if self.taps:
            d["taps"] = self.taps
        return d

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def read(cls, path: Path) -> "VectorFile":
        d = json.loads(Path(path).read_text())
        return cls({k: StreamVectors.from_json(v) for k, v in d["inputs"].items()},
                   {k: StreamVectors.from_json(v) for k, v in d["outputs"].items()},
                   d.get("seed", 1), d.get("gap_prob", 0.3), d.get("stall_prob", 0.3),
                   d.get("timeout_cycles", 0), d.get("ideal_cycles", 0), d.get("taps", []))


def pack_lanes(values, width: int) -> int:
    """Pack lane values (lane 0 in the least significant bits) into one integer."""
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * width)
    return word


def unpack_lanes(word: int, lanes: int, width: int) -> list[int]:
    mask = (1 << width) - 1
    return [(int(word) >> (i * width)) & mask for i in range(lanes)]
