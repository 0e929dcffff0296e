"""Stream fork: one input stream delivered to N output streams (fan-out, e.g. residual branches).

Each output has its own ready; a per-output 'taken' bit makes sure every input beat reaches every
output exactly once, whatever the order in which the consumers accept it. Ports: ``s_x`` in,
``m_y0`` .. ``m_y<N-1>`` out (N is a Jinja context value because it sets the port count).

Bit-exact model: every output carries the input beat sequence unchanged.
"""
from __future__ import annotations

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec


def _ports(n: int) -> tuple[PortSpec, ...]:
    return (PortSpec("s_x", "in", "mx", "input stream"),
            *(PortSpec(f"m_y{i}", "out", "mx", f"copy {i} of the input stream") for i in range(n)))


SPEC = KernelSpec(
    name="stream_fork",
    template="stream_fork.sv.j2",
    doc="1 -> N stream fork; each output has its own ready, every beat reaches every output once; "
        "full throughput.",
    params=(ParamSpec("DATA_W", "bits of the data field (P*W for an MX stream)", 8),
            ParamSpec("SCALE_W", "bits of the scale field (MX renders only; E8M0 = 8)", 8)),
    ports=_ports(2),
    model=f"{__name__}:model",
    examples=(
        {"label": "N2 mx P1xW8", "ctx": {"n_outputs": 2, "mx": True}, "params": {"DATA_W": 8}},
        {"label": "N2 mx P8xW8", "ctx": {"n_outputs": 2, "mx": True}, "params": {"DATA_W": 64}},
        {"label": "N3 mx P32xW8", "ctx": {"n_outputs": 3, "mx": True}, "params": {"DATA_W": 256}},
    ),
    extra={"jinja_ctx": {"n_outputs": "number of outputs (port count), default 2",
                         "mx": "bool: carry a scale field (default True)"}},
)


def module_name(n_outputs: int, mx: bool = True) -> str:
    return f"stream_fork_n{n_outputs}_{'mx' if mx else 'plain'}"


def instance_config(n_outputs: int, data_w: int, mx: bool = True, scale_w: int = 8):
    """``(jinja_ctx, sv_params, module_name)`` of a fork of ``n_outputs`` outputs of ``data_w``-bit data."""
    if n_outputs < 1:
        raise ValueError(f"stream_fork needs n_outputs >= 1, got {n_outputs}")
    if data_w < 1:
        raise ValueError(f"stream_fork needs data_w >= 1, got {data_w}")
    params = {"DATA_W": int(data_w)}
    if mx:
        params["SCALE_W"] = int(scale_w)
    return {"n_outputs": int(n_outputs), "mx": bool(mx)}, params, module_name(n_outputs, mx)


def model(beats: list, n_outputs: int = 2) -> list[list]:
    """Output ``i`` of the fork carries the input beats unchanged and in order, for every ``i``."""
    return [list(beats) for _ in range(n_outputs)]
