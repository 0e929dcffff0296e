"""Valid/ready FIFO: infrastructure kernel on graph edges (reconvergent paths need depth).

Bit-exact model: the identity on the beat sequence.
"""
from __future__ import annotations

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec

SPEC = KernelSpec(
    name="stream_fifo",
    template="stream_fifo.sv.j2",
    doc="FIFO of DEPTH entries, WIDTH bits each; full throughput, first-word fall-through.",
    params=(ParamSpec("WIDTH", "bits per entry ({scale, data} for an MX stream)", 8),
            ParamSpec("DEPTH", "number of entries, >= 1", 2)),
    ports=(PortSpec("s_x", "in", "plain"), PortSpec("m_y", "out", "plain")),
    model=f"{__name__}:model",
    examples=({"label": "W16 D4", "ctx": {}, "params": {"WIDTH": 16, "DEPTH": 4}},
              {"label": "W264 D32", "ctx": {}, "params": {"WIDTH": 264, "DEPTH": 32}}),
)


def model(beats: list[int]) -> list[int]:
    """A FIFO passes its beats through unchanged and in order."""
    return list(beats)
