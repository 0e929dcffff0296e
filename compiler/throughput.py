"""Rows (tokens) per second: cycles turned into time at a clock.

A dataflow design takes a new set of inputs every *bottleneck* cycles once it streams back to back
(every kernel runs at one beat per cycle; the slowest sets the rate) and answers one set in its
*latency*. At a clock of f MHz:

* inferences/s = f * 1e6 / bottleneck cycles;  rows/s = inferences/s * rows per inference
  (for an LLM the rows are tokens: one inference processes the whole prompt window);
* latency = latency cycles / f, in microseconds.

``masec compile`` reports it from the cycle model at ``--clock``, ``masec sim`` from the cycles it
measured, and ``masec synth`` on an ECP5 part again at the post-route Fmax.

    throughput(bottleneck_cycles=512, latency_cycles=2100, clock_mhz=250.0, rows=32)
    # {"clock_mhz": 250.0, "inferences_per_s": 488281.2, "rows_per_s": 15625000.0, "latency_us": 8.4, ...}
"""
from __future__ import annotations


def throughput(bottleneck_cycles: int, latency_cycles: int, clock_mhz: float, rows: int) -> dict:
    per_s = clock_mhz * 1e6 / bottleneck_cycles if bottleneck_cycles else 0.0
    return {"clock_mhz": round(clock_mhz, 3), "bottleneck_cycles": int(bottleneck_cycles),
            "latency_cycles": int(latency_cycles), "rows_per_inference": int(rows),
            "inferences_per_s": round(per_s, 1), "rows_per_s": round(per_s * rows, 1),
            "latency_us": round(latency_cycles / clock_mhz, 3) if clock_mhz else 0.0}


def rows_per_inference(shape, token_ids: bool = False) -> int:
    """Rows of an input tensor: the product of all but its last dimension; of a tensor of token ids
    (an integer input), the product of all its dimensions (one row per token)."""
    shape = [int(d) for d in shape] or [1]
    n = 1
    for d in (shape if token_ids or len(shape) == 1 else shape[:-1]):
        n *= d
    return n


def describe(t: dict, what: str) -> str:
    """One line for a report: '... at 250 MHz: 15,625,000 rows/s (488,281 inferences/s), latency 8.4 us'."""
    return (f"{what} at {t['clock_mhz']:g} MHz: {t['rows_per_s']:,.0f} rows/s "
            f"({t['inferences_per_s']:,.0f} inferences/s of {t['rows_per_inference']} rows, one every "
            f"{t['bottleneck_cycles']:,} cycles), latency {t['latency_us']:,.2f} us ({t['latency_cycles']:,} cycles)")
