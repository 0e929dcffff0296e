"""The typed record every fx node carries at ``node.meta["masec"]``.

Passes fill it in stages (frontend: ``op``, ``source``; shape propagation: ``shape``/``dtype``;
format annotation: ``formats``; folding: ``folding``; kernel selection: ``kernel``). Records are frozen dataclasses;
a pass replaces a record with :func:`dataclasses.replace`, it never mutates one in place.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

KEY = "masec"


@dataclass(frozen=True)
class TensorFormat:
    """The number format of one tensor port: a masec.formats name plus blocking.

    ``ts_exp``: an NVFP4 activation's FP32 tensor scale, a compile-time power of two 2^ts_exp
    (calibrated on the example inputs by ``calibrate_tensor_scales``); None for every other format."""
    name: str              # e.g. "mxint8"
    block_size: int = 32
    axis: int = -1
    rounding: str = "even"
    ts_exp: int | None = None

    def parse(self):
        from masec.formats import parse_format
        return parse_format(self.name, block_size=self.block_size, rounding=self.rounding, axis=self.axis)


@dataclass(frozen=True)
class KernelChoice:
    """The hardware kernel implementing a node and how it is instantiated."""
    kernel: str                    # registry name, e.g. "mx_linear"
    module: str                    # rendered SV module name
    ctx: tuple = ()                # Jinja context, as sorted (key, value) pairs
    params: tuple = ()             # SV parameters, as sorted (key, value) pairs
    lanes_in: int = 1
    lanes_out: int = 1
    ideal_cycles: int = 0          # cycles to process one set of example inputs at full rate

    @property
    def ctx_dict(self) -> dict:
        return dict(self.ctx)

    @property
    def params_dict(self) -> dict:
        return dict(self.params)


@dataclass(frozen=True)
class Folding:
    """How parallel a node's kernel is: its lanes (elements per stream beat), and why.

    ``origin``: ``"parallelism"`` (the global ``--parallelism``, no ``--budget``), ``"override"``
    (``lanes = N`` in the precision file) or ``"budget"`` (chosen by ``passes.hw.fold`` under
    ``--budget``). ``legal`` lists the lane counts this node's kernel accepts.
    """
    lanes: int
    origin: str = "parallelism"
    legal: tuple[int, ...] = ()


@dataclass(frozen=True)
class NodeMeta:
    op: str                                   # canonical op ("input", "linear", "relu", "output", ...)
    source: str = ""                          # user's source line, when known
    path: str = ""                            # module path of the user module that made it ("layers.0.attention.wq")
    shape: tuple[int, ...] | None = None      # output shape
    dtype: str | None = None
    formats: dict = field(default_factory=dict)   # port -> TensorFormat ("out", "weight", "bias", "in0" ...)
    kernel: KernelChoice | None = None
    folding: Folding | None = None            # lanes of this node (passes.hw.fold), None = global

    def with_(self, **kw) -> "NodeMeta":
        return replace(self, **kw)

    def to_json(self) -> dict:
        d = asdict(self)
        d["formats"] = {k: asdict(v) for k, v in sorted(self.formats.items())}
        return d


def meta(node) -> NodeMeta:
    try:
        return node.meta[KEY]
    except KeyError:
        raise KeyError(f"node {node.name} has no masec metadata (did the frontend run?)") from None


def set_meta(node, record: NodeMeta) -> None:
    node.meta[KEY] = record
