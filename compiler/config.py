"""The one compile configuration: defaults < CLI flags, validated before any pass runs.

It is written into the output folder (``masec_config.json``) so a build can be reproduced.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from masec.errors import MasecError

#: ``--format mx`` means this format.
DEFAULT_MX_FORMAT = "mxint8"
#: Formats the RTL kernels implement today (elements of the OCP MX family).
DEFAULT_PART = "xcu250-figd2104-2L-e"
DEFAULT_CLOCK_NS = 4.0


@dataclass(frozen=True)
class CompileConfig:
    model_file: str
    out: str
    format: str = DEFAULT_MX_FORMAT
    block_size: int = 32
    rounding: str = "even"
    model_name: str = "model"
    inputs_name: str = "example_inputs"
    parallelism: int = 4            # lanes per stream beat (divides the block size); without --budget
    budget: float | None = None     # --budget F: fraction of the part for passes/hw/fold.py (lanes per node)
    part: str = DEFAULT_PART
    clock_ns: float = DEFAULT_CLOCK_NS
    seed: int = 1
    force: bool = False
    precision_file: str = ""        # --precision FILE.toml (per-node formats); --format is the default
    debug: bool = False
    evaluate: bool = False          # --evaluate: the model file's evaluate() on float32 and hardware-exact
    eval_tokens: int = 0            # --eval-tokens N: passed to evaluate(n_tokens=N) when it takes it
    weight_rounding: str = ""       # --weight-rounding nearest|gptq; "" = the precision file's [options], else nearest
    calibration_batches: int = 0    # GPTQ calibration batches; 0 = the precision file's [options], else 16

    def validated(self) -> "CompileConfig":
        from masec.formats import FormatError, parse_format

        fmt = DEFAULT_MX_FORMAT if self.format == "mx" else self.format
        try:
            parsed = parse_format(fmt, block_size=self.block_size, rounding=self.rounding)
        except FormatError as exc:
            raise MasecError(f"--format {self.format!r}: {exc}") from None
        except ValueError as exc:
            raise MasecError(f"--format {self.format!r} / --block-size {self.block_size}: {exc}") from None
        from masec.formats.mx import MXFormat
        from masec.lowering.base import seed_activation

        # a seed format is checked port by port (assign_formats: where its kernels are built)
        seed = parsed.name in ("m2xfp4_w", "nvfp4", "bitmod_fp4", "bitmod_fp3") or seed_activation(parsed)
        if not isinstance(parsed, MXFormat) and not seed:
            raise MasecError(f"--format {self.format!r}: no hardware kernels for this format yet; masec builds OCP "
                             f"MX formats with E8M0 block scales (mxint<k>, mxfp_e<E>m<M>, mxfp8_e4m3, mxfp4 ...); "
                             f"{fmt} is available in masec.formats for software studies"
                             + ("; as a linear's weight it is built: --precision with [op.linear] weight = "
                                f"\"{parsed.name}\"" if parsed.name in ("m2xfp4_w", "nvfp4", "bitmod_fp4", "bitmod_fp3")
                                else ""))
        if self.budget is not None and not (isinstance(self.budget, (int, float)) and 0 < self.budget <= 1):
            raise MasecError(f"--budget {self.budget}: must be a fraction of the part's resources, 0 < F <= 1 "
                             f"(e.g. --budget 0.5)")
        b = self.block_size
        p = self.parallelism
        if p < 1 or p & (p - 1) or b % p:
            raise MasecError(f"--parallelism {p}: must be a power of two that divides the block size {b}")
        if not self.clock_ns > 0:
            raise MasecError(f"--clock {self.clock_ns}: the clock period must be a positive number of ns")
        from masec.parts import lookup_part

        try:
            lookup_part(self.part)
        except MasecError as exc:
            raise MasecError(f"--part: {exc}") from None
        cfg = CompileConfig(**{**asdict(self), "format": parsed.name})
        opts = cfg.precision().spec.options   # validates the --precision file before any pass runs
        from masec.passes.transform.gptq import CALIBRATION_BATCHES, check_mode

        wr = check_mode(self.weight_rounding or opts.get("weight_rounding") or "nearest")
        cb = self.calibration_batches or opts.get("calibration_batches") or CALIBRATION_BATCHES
        if cb < 1:
            raise MasecError(f"calibration batches {cb}: must be 1 or more")
        return CompileConfig(**{**asdict(cfg), "weight_rounding": wr, "calibration_batches": int(cb)})

    def precision(self):
        from masec.precision import Precision

        if self.precision_file:
            return Precision.load(self.precision_file, self.format, self.block_size)
        return Precision.uniform(self.format, self.block_size)

    def precision_label(self) -> str:
        if self.precision_file:
            return f"{Path(self.precision_file).name} (default {self.format}, block {self.block_size})"
        return f"{self.format}, block {self.block_size}"

    def tensor_format(self):
        from masec.meta import TensorFormat
        return TensorFormat(self.format, self.block_size, -1, self.rounding)

    def to_json(self, out_dir=None) -> str:
        """The resolved configuration; file paths relative to ``out_dir`` (deterministic, no absolute paths)."""
        import os

        d = asdict(self)
        if out_dir is not None:
            d["model_path"] = os.path.relpath(Path(self.model_file).resolve(), Path(out_dir).resolve())
            if self.precision_file:
                d["precision_path"] = os.path.relpath(Path(self.precision_file).resolve(), Path(out_dir).resolve())
        d.pop("force")
        d.pop("out")
        d.pop("debug")
        if self.budget is None:
            d.pop("budget")
        if not self.evaluate:
            d.pop("evaluate")
            d.pop("eval_tokens")
        if self.weight_rounding in ("", "nearest"):
            d.pop("weight_rounding")
            d.pop("calibration_batches")
        d["model_file"] = Path(self.model_file).name
        if self.precision_file:
            d["precision_file"] = Path(self.precision_file).name
            d["precision"] = self.precision().to_json()
        return json.dumps(d, indent=2, sort_keys=True) + "\n"
