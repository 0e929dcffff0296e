"""The testbench's mismatch message names the first differing lane, or the bits above the lanes."""
from masec.sim.stream_test import _describe_mismatch


class _Stream:
    fields = ["data", "scale"]
    lanes = {"data": (2, 4)}     # two 4-bit lanes; an M2XFP stream carries metadata bits above them
    notes = ["row 0"]


def test_first_differing_lane_is_named():
    msg = _describe_mismatch("y", _Stream, 0, [0x24, 7], [0x23, 7])
    assert "first differing lane 0 (element 0 of the stream): expected 0x3, got 0x4" in msg
    assert "context: row 0" in msg and "scale" not in msg


def test_bits_above_the_lanes():
    msg = _describe_mismatch("y", _Stream, 0, [0x123, 7], [0x223, 8])
    assert "lanes equal, bits above the 2 x 4-bit lanes differ: expected 0x2, got 0x1" in msg
    assert "scale: expected 0x8, got 0x7" in msg
