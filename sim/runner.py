"""Build a design with Verilator through cocotb's runner and run the generic stream test.

``run_stream_test`` is what kernel tests, ``masec sim`` and the generated testbench call::

    res = run_stream_test(sources=[...], toplevel="mx_linear", vectors=vf, build_dir=tmp / "b")
    assert res.ok, res.message
"""
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from masec.errors import MasecError
from masec.sim.vectors import VectorFile
from masec.toolchain import VERILATOR_MAKEFLAGS, use_verilator, verilator_binary, verilator_env

#: Verilator flags for every simulation build: assertions on, stream checks compiled in.
SIM_BUILD_ARGS = ("--assert", "-DMASEC_ASSERT", "-Wno-fatal", *VERILATOR_MAKEFLAGS)


@dataclass
class SimResult:
    ok: bool
    message: str
    runs: list[dict] = field(default_factory=list)  # one dict per cocotb test (cycles, ideal, seed ...)
    build_dir: Path | None = None

    def run(self, name: str) -> dict:
        return next(r for r in self.runs if r["test"] == name)


def build(sources, toplevel: str, build_dir: Path, parameters: dict | None = None,
          waves: bool = False, includes=(), public: bool = False):
    """Compile ``sources`` with Verilator into ``build_dir`` (incremental); return the cocotb runner."""
    use_verilator()
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    parameters = {k: _gvalue(v) for k, v in (parameters or {}).items()}
    args = list(SIM_BUILD_ARGS)
    if waves:
        args += ["--trace-fst", "--trace-structs"]
    if public:   # internal signals visible to cocotb (localization taps)
        args += ["--public-flat-rw"]
    runner.build(sources=[str(s) for s in sources], hdl_toplevel=toplevel, build_dir=str(build_dir),
                 parameters=parameters, build_args=args, includes=[str(i) for i in includes],
                 waves=waves, log_file=str(Path(build_dir) / "build.log"))
    return runner


def run_stream_test(sources, toplevel: str, vectors: VectorFile, build_dir: Path,
                    parameters: dict | None = None, waves: bool = False, seed: int | None = None,
                    testcase: list[str] | None = None, includes=(), public: bool = False) -> SimResult:
    """Build and run :mod:`masec.sim.stream_test` on ``toplevel`` with ``vectors``."""
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        runner = build(sources, toplevel, build_dir, parameters, waves, includes, public)
    except (SystemExit, RuntimeError) as exc:  # cocotb's runner exits or raises on a failed build
        log = (build_dir / "build.log")
        tail = log.read_text()[-4000:] if log.exists() else ""
        raise MasecError(f"Verilator build of {toplevel} failed (log: {log}):\n{tail}") from exc
    vec_path = build_dir / "vectors.json"
    vectors.write(vec_path)
    res_path = build_dir / "results.jsonl"
    if res_path.exists():
        res_path.unlink()
    env = {"MASEC_VECTORS": str(vec_path), "MASEC_RESULTS": str(res_path)}
    if seed is not None:
        env["MASEC_SEED"] = str(seed)
    xml = build_dir / "results.xml"
    try:
        runner.test(hdl_toplevel=toplevel, test_module="masec.sim.stream_test", build_dir=str(build_dir),
                    test_dir=str(build_dir), extra_env=env, waves=waves, testcase=testcase,
                    results_xml=str(xml), log_file=str(build_dir / "sim.log"))
    except SystemExit:  # the simulator exits non-zero when a test fails; results.xml says which
        pass
    runs = [json.loads(line) for line in res_path.read_text().splitlines()] if res_path.exists() else []
    failures = _failures(xml) if xml.exists() else [f"simulation produced no results (log: {build_dir / 'sim.log'})"]
    ok = not failures and bool(runs) and all(r["ok"] for r in runs)
    return SimResult(ok, "; ".join(failures) or ("" if runs else "no test ran"), runs, build_dir)


def _failures(xml_path: Path) -> list[str]:
    out = []
    root = ET.parse(xml_path).getroot()
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            for el in case.findall(tag):
                out.append(f"{case.get('name')}: {el.get('message') or el.text or tag}")
    return out


def lint(sources, toplevel: str, workdir: Path | None = None, parameters: dict | None = None) -> str:
    """``verilator --lint-only -Wall`` on ``sources``; raise :class:`MasecError` with its output on any warning.

    ``parameters`` override the top module's SV parameters (``-G``), so a configuration is linted as built.
    """
    gparams = [f"-G{k}={_gvalue(v)}" for k, v in sorted((parameters or {}).items())]
    cmd = [verilator_binary(), "--lint-only", "-Wall", "--top-module", toplevel, *gparams, *map(str, sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=verilator_env(), cwd=workdir)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "%Warning" in out or "%Error" in out:
        raise MasecError(f"lint of {toplevel} failed:\n{out}")
    return out


def _gvalue(v) -> str:
    """A ``-G`` value: strings get the double quotes Verilator needs (once), numbers as integers."""
    if isinstance(v, str):
        return v if len(v) >= 2 and v[0] == v[-1] == '"' else f'"{v}"'
    return str(int(v))
