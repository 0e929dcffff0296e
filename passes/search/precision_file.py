"""The precision file: which number format every tensor of a model gets (``precision.toml``).

``masec search`` writes it; ``masec compile --precision FILE`` reads it. Schema::

    [default]
    act = "mxint8"        # every activation tensor (model inputs, node outputs)
    weight = "mxfp4"      # every parameter tensor
    block_size = 32       # optional (default: the format's default block, 32 for MX)
    [op.softmax]          # by canonical op name
    act = "mxfp8_e4m3"
    [node."layers.0.attention.wq"]  # by node path (module path, or the fx node name of a function)
    weight = "mxint8"
    block_size = 16
    lanes = 8             # optional, [op] and [node] only: the node's lanes (elements per beat), fixed
                          # for `masec compile --budget` (passes/hw/fold.py); else --parallelism
    [options]             # optional: how the weights are rounded (passes/transform/gptq.py)
    weight_rounding = "gptq"      # "nearest" (default) or "gptq"
    calibration_batches = 16      # GPTQ: the first N batches of the model file's calibration_data

Precedence (later wins): ``[default]`` < ``[op.<op>]`` < ``[node."<path>"]``. Inside one section,
``act_block_size`` / ``weight_block_size`` (optional) beat ``block_size`` for their port; a section
that sets a block size but not the format keeps the format from an earlier section. Nothing set
at all resolves to ``mxint8`` with its default block of 32.

    spec = load_precision("out/search/precision.toml")
    spec.resolve("linear", "layers.0.attention.wq", "weight")    # ("mxint8", 16)
    spec.resolve("softmax", "softmax_1", "out")                   # ("mxfp8_e4m3", 32)
    text = dump_precision(spec)                                   # deterministic TOML

Every error is a :class:`PrecisionError` (a ``MasecError``) naming the file, the key and what to do.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

from masec.errors import MasecError

#: canonical op names an ``[op.<name>]`` section may use
def _ops() -> tuple[str, ...]:
    from masec.ops import OPS as CANONICAL

    return ("input",) + tuple(n for n, d in CANONICAL.items() if not d.layout)


OPS = _ops()   # "input" = the model inputs; then masec's canonical ops (masec.ops)
#: keys a section may hold
SECTION_KEYS = ("act", "weight", "block_size", "act_block_size", "weight_block_size", "lanes")
#: keys of ``[options]`` and their types (masec compile reads them; its flags win)
OPTION_KEYS = {"weight_rounding": str, "calibration_batches": int}
#: ports that mean "an activation tensor"; every other port (weight, bias, ...) is a parameter
ACT_PORTS = ("act", "out", "in", "input", "output")
FALLBACK_FORMAT = "mxint8"


class PrecisionError(MasecError):
    """A precision file that cannot be used; the message names the file, the key and the fix."""


@dataclass
class Section:
    act: str | None = None
    weight: str | None = None
    block_size: int | None = None
    act_block_size: int | None = None
    weight_block_size: int | None = None
    lanes: int | None = None          # hardware lanes of the node's kernel ([op] / [node] only)

    def items(self):
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def is_empty(self) -> bool:
        return not self.items()


@dataclass
class PrecisionSpec:
    default: Section = field(default_factory=Section)
    op: dict[str, Section] = field(default_factory=dict)
    node: dict[str, Section] = field(default_factory=dict)
    options: dict = field(default_factory=dict)     # [options]: weight_rounding, calibration_batches
    source: str = field(default="<precision>", compare=False)

    def resolve(self, op: str | None, node_path: str | None, port: str) -> tuple[str, int]:
        """``(format_name, block_size)`` of the tensor at ``port`` of node ``node_path`` (op ``op``).

        ``port``: ``"out"``/``"act"`` (and ``"in"``) for activations; ``"weight"``, ``"bias"`` or any
        other parameter port for parameters.
        """
        kind = "act" if port in ACT_PORTS else "weight"
        fmt, block = None, None
        for sec in (self.default, self.op.get(op) if op else None, self.node.get(node_path) if node_path else None):
            if sec is None:
                continue
            if getattr(sec, kind) is not None:
                fmt = getattr(sec, kind)
            b = getattr(sec, f"{kind}_block_size")
            b = sec.block_size if b is None else b
            if b is not None:
                block = b
        fmt = fmt or FALLBACK_FORMAT
        if block is None:
            block = _default_block(fmt)
        return fmt, block

    def resolve_lanes(self, op: str | None, node_path: str | None) -> int | None:
        """The ``lanes = N`` fixed for node ``node_path`` (op ``op``): ``[node]`` beats ``[op]``; None if unset."""
        lanes = None
        for sec in (self.op.get(op) if op else None, self.node.get(node_path) if node_path else None):
            if sec is not None and sec.lanes is not None:
                lanes = sec.lanes
        return lanes

    def validate(self) -> "PrecisionSpec":
        _check_section(self.default, self.source, "default")
        for name, sec in self.op.items():
            if name not in OPS:
                raise PrecisionError(f"{self.source}: [op.{name}]: unknown op `{name}`; use one of {', '.join(OPS)}")
            _check_section(sec, self.source, f"op.{name}")
        for name, sec in self.node.items():
            _check_section(sec, self.source, f'node."{name}"')
        return self


def _default_block(fmt: str) -> int:
    from masec.formats import parse_format

    return int(getattr(parse_format(fmt), "block_size", None) or getattr(parse_format(fmt), "group_size", 32) or 32)


def _check_section(sec: Section, source: str, where: str) -> None:
    from masec.formats import FormatError, parse_format

    for key in ("act", "weight"):
        val = getattr(sec, key)
        if val is None:
            continue
        if not isinstance(val, str):
            raise PrecisionError(f"{source}: [{where}] {key} = {val!r}: must be a format name string, "
                                 f'e.g. {key} = "mxint8"')
        try:
            parse_format(val)
        except FormatError as exc:
            raise PrecisionError(f"{source}: [{where}] {key} = {val!r}: {exc}") from None
    for key in ("block_size", "act_block_size", "weight_block_size"):
        val = getattr(sec, key)
        if val is None:
            continue
        if isinstance(val, bool) or not isinstance(val, int) or val < 2 or val & (val - 1):
            raise PrecisionError(f"{source}: [{where}] {key} = {val!r}: must be a power of two >= 2 "
                                 f"(e.g. 16, 32, 64)")
    if sec.lanes is not None:
        if where == "default":
            raise PrecisionError(f"{source}: [default] lanes = {sec.lanes!r}: lanes are set per [op.<op>] or "
                                 f'[node."<path>"]; the default is `masec compile --parallelism N`')
        if isinstance(sec.lanes, bool) or not isinstance(sec.lanes, int) or sec.lanes < 1 or \
                sec.lanes & (sec.lanes - 1):
            raise PrecisionError(f"{source}: [{where}] lanes = {sec.lanes!r}: must be a power of two >= 1 "
                                 f"(e.g. 1, 4, 16) that divides the node's block size")


def _section(table, source: str, where: str) -> Section:
    if not isinstance(table, dict):
        raise PrecisionError(f"{source}: `{where}` must be a table ([{where}]) holding "
                             f"{', '.join(SECTION_KEYS)}")
    unknown = sorted(set(table) - set(SECTION_KEYS))
    if unknown:
        raise PrecisionError(f"{source}: [{where}] unknown key `{unknown[0]}`; a section may hold only "
                             f"{', '.join(SECTION_KEYS)}")
    sec = Section(**table)
    _check_section(sec, source, where)
    return sec


def _options(table, source: str) -> dict:
    if not isinstance(table, dict):
        raise PrecisionError(f"{source}: `options` must be a table [options] holding {', '.join(OPTION_KEYS)}")
    for key, val in table.items():
        if key not in OPTION_KEYS:
            raise PrecisionError(f"{source}: [options] unknown key `{key}`; [options] may hold only "
                                 f"{', '.join(OPTION_KEYS)}")
        if isinstance(val, bool) or not isinstance(val, OPTION_KEYS[key]):
            raise PrecisionError(f"{source}: [options] {key} = {val!r}: must be a{'n integer' if OPTION_KEYS[key] is int else ' string'}")
    wr = table.get("weight_rounding")
    if wr is not None and wr not in ("nearest", "gptq"):
        raise PrecisionError(f'{source}: [options] weight_rounding = {wr!r}: use "nearest" or "gptq"')
    cb = table.get("calibration_batches")
    if cb is not None and cb < 1:
        raise PrecisionError(f"{source}: [options] calibration_batches = {cb}: must be 1 or more")
    return dict(table)


def parse_precision(text: str, source: str = "<precision>") -> PrecisionSpec:
    """Parse and validate precision-file text; ``source`` names it in error messages."""
    try:
        data = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise PrecisionError(f"{source}: not valid TOML: {exc}; fix the syntax (see docs/search.md)") from None
    unknown = sorted(set(data) - {"default", "op", "node", "options"})
    if unknown:
        raise PrecisionError(f"{source}: unknown top-level key `{unknown[0]}`; use [default], [op.<op>], "
                             f'[node."<path>"] and [options] sections only')
    spec = PrecisionSpec(source=source)
    spec.options = _options(data.get("options", {}), source)
    spec.default = _section(data.get("default", {}), source, "default")
    ops = data.get("op", {})
    if not isinstance(ops, dict):
        raise PrecisionError(f"{source}: `op` must be tables [op.<op>], e.g. [op.softmax]")
    for name, table in ops.items():
        if name not in OPS:
            raise PrecisionError(f"{source}: [op.{name}]: unknown op `{name}`; use one of {', '.join(OPS)}")
        spec.op[name] = _section(table, source, f"op.{name}")
    nodes = data.get("node", {})
    if not isinstance(nodes, dict):
        raise PrecisionError(f'{source}: `node` must be tables [node."<path>"], e.g. [node."layers.0.wq"]')
    for name, table in nodes.items():
        spec.node[name] = _section(table, source, f'node."{name}"')
    return spec


def load_precision(path) -> PrecisionSpec:
    """Read and validate ``path``; raise :class:`PrecisionError` naming the file, key and fix."""
    path = Path(path)
    if not path.is_file():
        raise PrecisionError(f"{path}: no such precision file; write one (docs/search.md) or run `masec search`")
    return parse_precision(path.read_text(encoding="utf-8"), source=str(path))


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _dump_section(header: str, sec: Section, comments: dict[str, str] | None = None) -> list[str]:
    lines = [header]
    for key, val in sec.items():
        v = _toml_str(val) if isinstance(val, str) else str(int(val))
        c = (comments or {}).get(key)
        lines.append(f"{key} = {v}" + (f"  # {c}" if c else ""))
    return lines


def dump_precision(spec: PrecisionSpec, header: str | None = None) -> str:
    """Deterministic TOML text of ``spec`` (sections sorted by name); parses back to an equal spec."""
    out: list[str] = []
    if header:
        out += [f"# {ln}" if ln else "#" for ln in header.splitlines()]
        out.append("")
    out += _dump_section("[default]", spec.default)
    for name in sorted(spec.op):
        if spec.op[name].is_empty():
            continue
        out.append("")
        out += _dump_section(f"[op.{name}]", spec.op[name])
    for name in sorted(spec.node):
        if spec.node[name].is_empty():
            continue
        out.append("")
        key = name if _BARE.match(name) else _toml_str(name)
        out += _dump_section(f"[node.{key}]", spec.node[name])
    if spec.options:
        out += ["", "[options]"]
        for key in sorted(spec.options):
            val = spec.options[key]
            out.append(f"{key} = {_toml_str(val) if isinstance(val, str) else int(val)}")
    return "\n".join(out) + "\n"
