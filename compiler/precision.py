"""Per-node formats for the compiler: ``--precision FILE.toml``, with ``--format F`` as its shorthand.

The schema, its parser, validation and writer live in one place,
:mod:`masec.passes.search.precision_file` (``masec search`` writes the files the compiler reads):

```toml
[default]
act = "mxint8"        # every activation tensor (model inputs, node outputs)
weight = "mxfp4"      # every parameter tensor
block_size = 32       # optional (act_block_size / weight_block_size per port)
[op.softmax]          # by canonical op name
act = "mxfp8_e4m3"
[node."layers.0.attention.wq"]  # by module path, or by the node name shown in the report
weight = "mxint8"
```

Later keys win: default < op < node. What the file leaves open comes from ``--format`` and
``--block-size``. This module adapts the spec to the compiler: a node is known by its module path
and its node name, and both may have a ``[node."..."]`` section (the node name wins).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from masec.errors import MasecError


@dataclass(frozen=True)
class Precision:
    spec: object            # masec.passes.search.precision_file.PrecisionSpec
    origin: str = "--format"

    @classmethod
    def uniform(cls, fmt: str, block_size: int) -> "Precision":
        from masec.passes.search.precision_file import PrecisionSpec, Section

        return cls(PrecisionSpec(default=Section(act=fmt, weight=fmt, block_size=block_size)))

    @classmethod
    def load(cls, path, fallback_format: str, fallback_block: int) -> "Precision":
        from masec.passes.search.precision_file import load_precision

        path = Path(path)
        if not path.is_file():
            raise MasecError(f"--precision {path}: no such file; write a TOML file with a [default] table "
                             f"(README, 'Mixed precision'), or let `masec search` write one")
        try:
            spec = load_precision(path)
        except MasecError as exc:
            raise MasecError(f"--precision: {exc}") from None
        d = spec.default
        spec.default = replace(d, act=d.act or fallback_format, weight=d.weight or fallback_format,
                               block_size=d.block_size if d.block_size is not None else fallback_block)
        return cls(spec, str(path))

    def resolve(self, op: str, names: tuple[str, ...], port: str) -> tuple[str, int]:
        """``(format name, block size)`` of ``port`` ("act" or "weight") of a node known by ``names``
        (module path, node name); the last name with its own ``[node]`` section wins."""
        path = None
        for n in names:
            if n in self.spec.node:
                path = n
        return self.spec.resolve(op, path, "act" if port == "act" else "weight")

    def to_json(self) -> dict:
        s = self.spec
        return {"default": dict(s.default.items()), "op": {k: dict(v.items()) for k, v in sorted(s.op.items())},
                "node": {k: dict(v.items()) for k, v in sorted(s.node.items())}}
