"""The compile driver: model file -> verified-RTL output folder.

Pipeline: load + torch.export + canonicalize + normalize (frontend) -> shape_prop ->
assign_formats -> calibrate_tensor_scales -> [gptq] -> fold -> select_kernels -> build_ir -> insert_forks -> insert_retiles -> set_pipeline ->
size_fifos -> set_fifo_pipeline -> check_ir ->
bit-exact reference run over the IR -> print (top.sv, vectors, scripts, report) -> write.
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
from masec.errors import MasecError
from masec.frontend import export, load_model_file, normalize
from masec.hwir import run_reference
from masec.parts import lookup_part
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.hw.build_ir import build_ir
from masec.passes.hw.fold import fold
from masec.passes.hw.insert_retiles import insert_retiles
from masec.passes.hw.pipeline import set_fifo_pipeline, set_pipeline
from masec.passes.hw.streams import insert_forks, size_fifos
from masec.passes.manager import PassManager
from masec.passes.transform.assign_formats import assign_formats
from masec.passes.transform.calibrate_tensor_scales import calibrate_tensor_scales
from masec.passes.transform.gptq import gptq
from masec.passes.transform.select_kernels import select_kernels


@dataclass
class CompileResult:
    out: Path
    gm: object
    ir: object
    rows: list[dict]     # the report table
    accuracy: list[dict]  # per output: hardware-exact vs float32
    evaluation: dict | None = None   # --evaluate: the model's metric, float32 vs hardware-exact


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MasecError(f"--out {out}: exists and is not a folder; pick another path")
    if out.exists() and any(out.iterdir()) and not force:
        raise MasecError(f"--out {out}: folder exists and is not empty; pass --force to replace it "
                         f"or choose another --out")


def frontend(config: CompileConfig):
    """Load, export and canonicalize the model; every node gets its NodeMeta (op, source, path)."""
    from masec.passes.transform.canonicalize import canonicalize

    model, inputs = load_model_file(config.model_file, config.model_name, config.inputs_name)
    gm = export(model, inputs, config.model_file)
    try:
        canonicalize(gm, inputs)
    except MasecError as exc:
        raise type(exc)(f"{config.model_file}: {exc}") from None
    normalize(gm, config.model_file)
    return gm, inputs


def lower(config: CompileConfig, progress: Callable[[str], None] | None = None):
    """Model file -> (canonical graph, hardware IR, reference values, example inputs); writes nothing."""
    say = progress or (lambda _msg: None)
    say("export")
    gm, inputs = frontend(config)
    ir_box = {}
    pm = (PassManager()
          .add("shape_prop", lambda g, c: shape_prop(g, inputs))
          .add("assign_formats", assign_formats)
          .add("calibrate_tensor_scales", lambda g, c: calibrate_tensor_scales(g, inputs)))
    if config.weight_rounding == "gptq":      # --weight-rounding gptq: linear weights rounded by GPTQ
        pm.add("gptq", gptq)
    (pm.add("fold", fold)
          .add("select_kernels", select_kernels)
          .add("build_ir", lambda g, c: ir_box.setdefault("ir", build_ir(g, c)))
          .add("insert_forks", lambda g, c: insert_forks(ir_box["ir"]))
          .add("insert_retiles", lambda g, c: insert_retiles(ir_box["ir"]))
          .add("set_pipeline", lambda g, c: set_pipeline(ir_box["ir"], c.clock_ns, lookup_part(c.part).family))
          .add("size_fifos", lambda g, c: size_fifos(ir_box["ir"]))
          .add("set_fifo_pipeline", lambda g, c: set_fifo_pipeline(ir_box["ir"], c.clock_ns,
                                                                   lookup_part(c.part).family))
          .add("check_ir", lambda g, c: ir_box["ir"].check()))
    pm.run(gm, config, progress=say)
    ir = ir_box["ir"]
    say("reference")
    values = run_reference(ir, inputs)
    return gm, ir, values, inputs


def compile_model(config: CompileConfig, progress: Callable[[str], None] | None = None) -> CompileResult:
    config = config.validated()
    out = Path(config.out)
    check_out_dir(out, config.force)
    say = progress or (lambda _msg: None)
    gm, ir, values, inputs = lower(config, say)
    evaluation = None
    if config.evaluate:
        from masec.evaluate import evaluate_design
        from masec.frontend import load_model_namespace

        say("evaluate (float32 and hardware-exact)")
        module = load_model_namespace(config.model_file, config.model_name, config.inputs_name)[2]
        evaluation = evaluate_design(module, gm, ir, config.eval_tokens or None,
                                     progress=lambda k: say(f"evaluate: hardware-exact window {k}"))

    say("write")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.masec-", dir=out.parent))
    try:
        rows, acc = emit.write_tree(tmp, gm, ir, values, inputs, config, evaluation)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CompileResult(out, gm, ir, rows, acc, evaluation)


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
