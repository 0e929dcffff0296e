"""Per-node number formats: the ``--precision FILE.toml`` schema (``--format F`` is its shorthand).

```toml
[default]
act = "mxint8"        # every activation tensor (model inputs, node outputs)
weight = "mxfp4"      # every parameter tensor
block_size = 32       # optional
[op.softmax]          # by canonical op name
act = "mxfp8_e4m3"
[node."layers.0.attention.wq"]  # by module path, or by the node name shown in the report
weight = "mxint8"
```

Later keys win: default < op < node. ``resolve(op, names, port)`` answers one port's format.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from masec.errors import MasecError

_KEYS = {"act", "weight", "block_size"}


@dataclass(frozen=True)
class Precision:
    default: dict = field(default_factory=dict)
    ops: dict = field(default_factory=dict)       # op -> {act, weight, block_size}
    nodes: dict = field(default_factory=dict)     # module path or node name -> {...}
    origin: str = "--format"

    @classmethod
    def uniform(cls, fmt: str, block_size: int) -> "Precision":
        return cls({"act": fmt, "weight": fmt, "block_size": block_size})

    @classmethod
    def load(cls, path, fallback_format: str, fallback_block: int) -> "Precision":
        path = Path(path)
        if not path.is_file():
            raise MasecError(f"--precision {path}: no such file; write a TOML file with a [default] table "
                             f"(see README, 'Mixed precision')")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise MasecError(f"--precision {path}: not valid TOML: {exc}") from None
        unknown = set(data) - {"default", "op", "node"}
        if unknown:
            raise MasecError(f"--precision {path}: unknown table(s) {sorted(unknown)}; use [default], "
                             f"[op.<name>] and [node.\"<module path>\"]")

        def table(d, where):
            if not isinstance(d, dict):
                raise MasecError(f"--precision {path}: {where} must be a table")
            bad = set(d) - _KEYS
            if bad:
                raise MasecError(f"--precision {path}: {where} has unknown key(s) {sorted(bad)}; "
                                 f"allowed: act, weight, block_size")
            for k in ("act", "weight"):
                if k in d and not isinstance(d[k], str):
                    raise MasecError(f"--precision {path}: {where}.{k} must be a format name string")
            if "block_size" in d and (not isinstance(d["block_size"], int) or d["block_size"] < 1
                                      or d["block_size"] & (d["block_size"] - 1)):
                raise MasecError(f"--precision {path}: {where}.block_size must be a power of two")
            return dict(d)

        default = {"act": fallback_format, "weight": fallback_format, "block_size": fallback_block}
        default.update(table(data.get("default", {}), "[default]"))
        ops = {k: table(v, f"[op.{k}]") for k, v in data.get("op", {}).items()}
        nodes = {k: table(v, f'[node."{k}"]') for k, v in data.get("node", {}).items()}
        return cls(default, ops, nodes, str(path))

    def resolve(self, op: str, names: tuple[str, ...], port: str) -> tuple[str, int]:
        """``(format name, block size)`` of ``port`` ("act" or "weight") of a node."""
        fmt, block = self.default["act" if port == "act" else "weight"], self.default.get("block_size", 32)
        for table in [self.ops.get(op, {})] + [self.nodes[n] for n in names if n in self.nodes]:
            fmt = table.get(port, fmt)
            block = table.get("block_size", block)
        return fmt, block

    def unused_nodes(self, seen: set[str]) -> list[str]:
        return sorted(k for k in self.nodes if k not in seen)

    def to_json(self) -> dict:
        return {"default": self.default, "op": self.ops, "node": self.nodes}
