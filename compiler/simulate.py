"""``masec sim OUT``: build a compiled design with Verilator and run its cocotb testbench.

The testbench streams the reference inputs with random gaps (seeded), applies random output
backpressure, compares every output element exactly, then reruns at full rate to count cycles.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from masec.errors import MasecError
from masec.sim.runner import SimResult, run_stream_test
from masec.sim.vectors import VectorFile
from masec.toolchain import fst_headers_present


@dataclass
class SimSummary:
    result: SimResult
    vectors: VectorFile
    seed: int


def simulate(out: Path, seed: int | None = None, waves: bool = False, build_dir: Path | None = None) -> SimSummary:
    out = Path(out)
    build_file = out / "masec_build.json"
    if not build_file.exists():
        raise MasecError(f"{out}: not a masec output folder (no masec_build.json); "
                         f"create one with `masec compile model.py --out {out}`")
    build = json.loads(build_file.read_text())
    vectors = VectorFile.read(out / "tb" / "vectors.json")
    if seed is not None:
        vectors.seed = seed
    if waves and not fst_headers_present():
        raise MasecError("--waves: Verilator's FST writer needs the lz4 headers; install them "
                         "(Debian/Ubuntu: apt-get install liblz4-dev, or `make install-system`) and rerun")
    bdir = Path(build_dir) if build_dir else out / "sim_build"
    bdir.mkdir(parents=True, exist_ok=True)
    for mem in build["memories"]:  # $readmemh resolves names against the simulation's folder
        shutil.copyfile(out / mem, bdir / Path(mem).name)
    res = run_stream_test([out / s for s in build["sources"]], build["top"], vectors, bdir, waves=waves)
    return SimSummary(res, vectors, vectors.seed)
