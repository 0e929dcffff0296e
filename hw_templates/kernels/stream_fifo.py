"""Valid/ready FIFO: infrastructure kernel on graph edges (reconvergent paths need depth).

Bit-exact model: the identity on the beat sequence.

Pipelining: ``PIPE`` (0..1, block RAM only) puts a plain register behind the block RAM's read
register (the DP16KD clock-to-out through the output buffer's muxes limited RAM_STYLE 1 to
108 MHz on ECP5, docs/kernels/streams_infra.md); the output buffer grows by one entry so the
stream keeps 1 beat/cycle, and the latency of the stream does not change (:func:`latency` is 0):
an empty FIFO bypasses the RAM, a FIFO holding beats has its head prefetched. LUT-RAM FIFOs
(RAM_STYLE 0) meet 150 MHz without it and ignore ``PIPE``.
"""
from __future__ import annotations

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

#: Largest PIPE the template has cuts for: ``pipe_depth`` gives 1 for any clock faster than 100 MHz
#: (the block-RAM FIFO meets 106.5 MHz at PIPE 0).
MAX_PIPE = 1


def latency(params: dict) -> int:
    """Cycles ``PIPE`` adds to a beat's way through the FIFO over ``PIPE = 0``: none (the RAM path's
    extra read cycle is hidden by the bypass of an empty FIFO and by prefetching a full one)."""
    check_pipe(params.get("PIPE", 0), MAX_PIPE, "stream_fifo")
    return 0


SPEC = KernelSpec(
    name="stream_fifo",
    template="stream_fifo.sv.j2",
    doc="FIFO of DEPTH entries, WIDTH bits each; full throughput, first-word fall-through; "
        "LUTRAM (RAM_STYLE 0) or block RAM behind an output buffer of 2 + PIPE entries (RAM_STYLE 1; "
        "PIPE 1 registers the RAM's read data once more, same stream latency).",
    params=(ParamSpec("WIDTH", "bits per entry ({scale, data} for an MX stream)", 8),
            ParamSpec("DEPTH", "number of entries, >= 1", 2),
            ParamSpec("RAM_STYLE", "0: distributed RAM, async read; 1: block RAM, registered read", 0),
            ParamSpec("PIPE", "1: plain register behind the block RAM read (RAM_STYLE 1 only)", 0)),
    ports=(PortSpec("s_x", "in", "plain"), PortSpec("m_y", "out", "plain")),
    model=f"{__name__}:model",
    examples=({"label": "W16 D4", "ctx": {}, "params": {"WIDTH": 16, "DEPTH": 4}},
              {"label": "W264 D32", "ctx": {}, "params": {"WIDTH": 264, "DEPTH": 32}},
              {"label": "W40 D256 block", "ctx": {}, "params": {"WIDTH": 40, "DEPTH": 256, "RAM_STYLE": 1}},
              {"label": "W72 D1024 block", "ctx": {}, "params": {"WIDTH": 72, "DEPTH": 1024, "RAM_STYLE": 1}},
              {"label": "W40 D256 block PIPE1", "ctx": {},
               "params": {"WIDTH": 40, "DEPTH": 256, "RAM_STYLE": 1, "PIPE": 1}},
              {"label": "W72 D1024 block PIPE1", "ctx": {},
               "params": {"WIDTH": 72, "DEPTH": 1024, "RAM_STYLE": 1, "PIPE": 1}}),
    extra={"latency": latency, "max_pipe": MAX_PIPE},
)


def model(beats: list[int]) -> list[int]:
    """A FIFO passes its beats through unchanged and in order."""
    return list(beats)
