"""The compile driver: model file -> verified-RTL output folder.

Pipeline: load + trace + normalize (frontend) -> shape_prop -> annotate_formats ->
select_kernels -> bit-exact reference run -> design (top.sv wiring) -> render -> write.
Everything is written into a temporary sibling folder and moved into place only when complete,
so a failed compile leaves nothing behind and never touches an existing folder without --force.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from masec import emit
from masec.config import CompileConfig
from masec.design import build_design
from masec.errors import MasecError
from masec.frontend import load_model_file, normalize, trace
from masec.lowering import supported_ops
from masec.reference import run_reference
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.manager import PassManager
from masec.passes.transform.annotate_formats import annotate_formats
from masec.passes.transform.select_kernels import select_kernels


@dataclass
class CompileResult:
    out: Path
    gm: object
    design: object
    rows: list[dict]     # the report table
    accuracy: list[dict]  # per output: hardware-exact vs float32


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MasecError(f"--out {out}: exists and is not a folder; pick another path")
    if out.exists() and any(out.iterdir()) and not force:
        raise MasecError(f"--out {out}: folder exists and is not empty; pass --force to replace it "
                         f"or choose another --out")


def frontend(config: CompileConfig):
    model, inputs = load_model_file(config.model_file, config.model_name, config.inputs_name)
    gm = trace(model, config.model_file)
    normalize(gm, supported_ops(), config.model_file)
    return gm, inputs


def compile_model(config: CompileConfig, progress: Callable[[str], None] | None = None) -> CompileResult:
    config = config.validated()
    out = Path(config.out)
    check_out_dir(out, config.force)
    say = progress or (lambda _msg: None)

    say("trace")
    gm, inputs = frontend(config)
    pm = (PassManager()
          .add("shape_prop", lambda g, c: shape_prop(g, inputs))
          .add("annotate_formats", annotate_formats)
          .add("select_kernels", select_kernels))
    pm.run(gm, config, progress=say)
    say("reference")
    values = run_reference(gm, inputs)
    say("design")
    design = build_design(gm, config)

    say("write")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.masec-", dir=out.parent))
    try:
        rows, acc = emit.write_tree(tmp, gm, design, values, inputs, config)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CompileResult(out, gm, design, rows, acc)


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        trash = out.parent / f".{out.name}.masec-old"
        if trash.exists():
            shutil.rmtree(trash)
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash)
    else:
        tmp.rename(out)
