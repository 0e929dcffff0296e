"""Valid/ready FIFO: infrastructure kernel on graph edges (reconvergent paths need depth).

Bit-exact model: the identity on the beat sequence.
"""
from __future__ import annotations

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec

SPEC = KernelSpec(
    name="stream_fifo",
    template="stream_fifo.sv.j2",
    doc="FIFO of DEPTH entries, WIDTH bits each; full throughput, first-word fall-through; "
        "LUTRAM (RAM_STYLE 0) or block RAM behind a two-entry output buffer (RAM_STYLE 1).",
    params=(ParamSpec("WIDTH", "bits per entry ({scale, data} for an MX stream)", 8),
            ParamSpec("DEPTH", "number of entries, >= 1", 2),
            ParamSpec("RAM_STYLE", "0: distributed RAM, async read; 1: block RAM, registered read", 0)),
    ports=(PortSpec("s_x", "in", "plain"), PortSpec("m_y", "out", "plain")),
    model=f"{__name__}:model",
    examples=({"label": "W16 D4", "ctx": {}, "params": {"WIDTH": 16, "DEPTH": 4}},
              {"label": "W264 D32", "ctx": {}, "params": {"WIDTH": 264, "DEPTH": 32}},
              {"label": "W40 D256 block", "ctx": {}, "params": {"WIDTH": 40, "DEPTH": 256, "RAM_STYLE": 1}},
              {"label": "W72 D1024 block", "ctx": {}, "params": {"WIDTH": 72, "DEPTH": 1024, "RAM_STYLE": 1}}),
)


def model(beats: list[int]) -> list[int]:
    """A FIFO passes its beats through unchanged and in order."""
    return list(beats)
