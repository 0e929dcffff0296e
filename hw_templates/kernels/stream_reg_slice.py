"""Register slice (skid buffer): cuts the combinational valid, data and ready paths of a stream.

Full throughput (one beat per cycle), one cycle of latency, two beat registers.

Bit-exact model: the identity on the beat sequence.
"""
from __future__ import annotations

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec

SPEC = KernelSpec(
    name="stream_reg_slice",
    template="stream_reg_slice.sv.j2",
    doc="Full-throughput register slice (skid buffer); registers valid, data and ready.",
    params=(ParamSpec("DATA_W", "bits of the data field (P*W for an MX stream)", 8),
            ParamSpec("SCALE_W", "bits of the scale field (MX renders only; E8M0 = 8)", 8)),
    ports=(PortSpec("s_x", "in", "mx", "input stream"), PortSpec("m_y", "out", "mx", "output stream")),
    model=f"{__name__}:model",
    examples=(
        {"label": "mx P1xW8", "ctx": {"mx": True}, "params": {"DATA_W": 8}},
        {"label": "mx P8xW8", "ctx": {"mx": True}, "params": {"DATA_W": 64}},
        {"label": "mx P32xW8", "ctx": {"mx": True}, "params": {"DATA_W": 256}},
    ),
    extra={"jinja_ctx": {"mx": "bool: carry a scale field (default True)"}},
)


def module_name(mx: bool = True) -> str:
    return f"stream_reg_slice_{'mx' if mx else 'plain'}"


def instance_config(data_w: int, mx: bool = True, scale_w: int = 8):
    """``(jinja_ctx, sv_params, module_name)`` of a register slice for ``data_w``-bit data."""
    if data_w < 1:
        raise ValueError(f"stream_reg_slice needs data_w >= 1, got {data_w}")
    params = {"DATA_W": int(data_w)}
    if mx:
        params["SCALE_W"] = int(scale_w)
    return {"mx": bool(mx)}, params, module_name(mx)


def model(beats: list) -> list:
    """A register slice passes its beats through unchanged and in order."""
    return list(beats)
