"""How a graph op becomes a hardware kernel instance, and what that instance computes.

A :class:`Lowering` per canonical op ties the graph to the kernel library: it chooses the
kernel and its parameters for a node (:meth:`choose`), runs the kernel's bit-exact model on the
node's encoded inputs (:meth:`reference`), writes the node's parameter memories
(:meth:`memories`) and names the kernel's stream ports. Lowerings register themselves in
:data:`LOWERINGS`; the ops listed there are exactly the ops masec can compile.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch

from masec.meta import KernelChoice, TensorFormat, meta


def seed_activation(f) -> bool:
    """True for a parsed format streamed as a seed activation (``nvfp4``, ``m2xfp4_a``, ``anda<M>``):
    the codes and scale bus mx_quantize's ``QFMT`` modes emit (docs/formats.md)."""
    from masec.formats.anda import AndaFormat
    from masec.formats.m2xfp import M2XFPActivationFormat
    from masec.formats.nvfp4 import NVFP4Format

    return isinstance(f, (AndaFormat, M2XFPActivationFormat, NVFP4Format))


def exact_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, e)`` int64 with ``x = m * 2^e`` exactly for finite float32 ``x`` (|m| < 2^24)."""
    mant, ex = torch.frexp(x.to(torch.float32))
    return (mant * 2.0 ** 24).to(torch.int64), ex.to(torch.int64) - 24


@dataclass(frozen=True)
class MXValue:
    """A tensor as the hardware holds it: element codes and one scale code per block, blocked on the
    last axis. MX: E8M0 scales. Seed activation formats (:func:`seed_activation`): the codes and scale
    bus of mx_quantize's ``QFMT`` modes (NVFP4: E2M1 codes, UE4M3 scales, tensor scale
    ``2^fmt.ts_exp``; Anda: ``sign << M | k`` codes, S; M2XFP: FP4 codes, E8M0 scales and ``meta``,
    the 2-bit metadata of every subgroup of 8, ``[rows, nblocks, B / 8]``)."""
    codes: torch.Tensor      # int64 [rows, nblocks, B]
    scales: torch.Tensor     # int64 [rows, nblocks]
    fmt: TensorFormat
    shape: tuple[int, ...]   # logical shape
    meta: torch.Tensor | None = None   # int64 [rows, nblocks, B / 8]: M2XFP subgroup metadata

    @classmethod
    def from_float(cls, x: torch.Tensor, fmt: TensorFormat) -> "MXValue":
        """Quantize ``x``: MX as masec.formats encodes it; a seed activation format exactly as
        mx_quantize's model quantizes the float32 values (what the producer kernel would emit)."""
        x = x.detach().to(torch.float32)
        rows = prod(x.shape[:-1]) if x.dim() > 1 else 1
        f = fmt.parse()
        if seed_activation(f):
            from masec.hw_templates.kernels import mx_quantize

            qfmt, elem = mx_quantize.output_format_params(f)
            b, n = fmt.block_size, x.shape[-1]
            nb = -(-n // b)
            flat = torch.nn.functional.pad(x.reshape(rows, n), (0, nb * b - n)).reshape(rows, nb, b)
            m, e = exact_parts(flat)
            codes, scales, meta = mx_quantize.quantize_blocks_format(m, e, qfmt, elem, fmt.ts_exp or 0)
            return cls(codes.to(torch.int64), scales.to(torch.int64), fmt, tuple(x.shape),
                       None if meta is None else meta.to(torch.int64))
        enc = f.encode(x)
        codes = enc.codes.to(torch.int64).reshape(rows, -1, fmt.block_size)
        scales = enc.scales.to(torch.int64).reshape(rows, -1)
        return cls(codes, scales, fmt, tuple(x.shape))

    def to_float(self) -> torch.Tensor:
        """Decode to float (the values the hardware holds)."""
        f = self.fmt.parse()
        if seed_activation(f):
            vals = _seed_values(self, f)
        else:
            vals = f.element.decode_codes(self.codes) * torch.pow(2.0, (self.scales - 127).to(torch.float64)).unsqueeze(-1)
        n = self.shape[-1]
        return vals.reshape(self.codes.shape[0], -1)[:, :n].reshape(self.shape).to(torch.float32)

    @property
    def rows(self) -> int:
        return self.codes.shape[0]


def _seed_values(v: MXValue, f) -> torch.Tensor:
    """float64 values ``[rows, nblocks, B]`` of a seed-activation MXValue (the format definitions of
    docs/formats.md, written out on the stream's codes)."""
    from masec.formats.anda import AndaFormat
    from masec.formats.element import FP4_E2M1, FP6_E2M3, FP8_E4M3
    from masec.formats.nvfp4 import NVFP4Format

    c, s = v.codes, v.scales
    if isinstance(f, AndaFormat):
        k = (c & ((1 << f.mbits) - 1)).to(torch.float64)
        mag = k * torch.pow(2.0, (s - 14 - f.mbits).to(torch.float64)).unsqueeze(-1)
        return torch.where((c >> f.mbits) & 1 == 1, -mag, mag)
    fp4 = FP4_E2M1.value_table().to(torch.float64)
    if isinstance(f, NVFP4Format):
        sb = FP8_E4M3.value_table().to(torch.float64)[s]
        return fp4[c] * sb.unsqueeze(-1) * 2.0 ** (v.fmt.ts_exp or 0)
    # M2XFP activations: the subgroup's first largest FP4 magnitude is refined to E2M3 code 4c + m - 1
    c4 = c & 7
    sg = c4.reshape(*c4.shape[:-1], -1, 8)
    top = sg.argmax(-1, keepdim=True)
    ct = sg.gather(-1, top)
    c6 = (4 * ct + v.meta.unsqueeze(-1) - 1).clamp(min=0)
    mag = fp4[sg].scatter(-1, top, FP6_E2M3.value_table().to(torch.float64)[c6]).reshape(c4.shape)
    mag = mag * torch.pow(2.0, (s - 127).to(torch.float64)).unsqueeze(-1)
    return torch.where(c >= 8, -mag, mag)


class Lowering:
    """Base class: subclasses set ``op``, ``kernel`` and the stream port names."""

    op: str = ""
    kernel: str = ""
    in_ports: tuple[str, ...] = ("s_x",)   # kernel input stream per tensor argument, in order
    out_port: str = "m_y"
    buffering: str = "row"                 # "tensor": reads a whole input before its first output

    def tensor_args(self, node) -> list:
        """The node's stream inputs, in the order of ``in_ports`` (from the op's declaration)."""
        from masec.ops import OPS

        return [node.args[i] for i in OPS[self.op].streams]

    @staticmethod
    def const(gm, node):
        """The tensor behind a ``get_attr`` argument (a parameter or folded constant), or None."""
        if node is None:
            return None
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj

    def choose(self, gm, node, config) -> KernelChoice:
        raise NotImplementedError(f"{type(self).__name__} must choose a kernel")

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        raise NotImplementedError(f"{type(self).__name__} must give the bit-exact model")

    def choice(self, node, instance: tuple[dict, dict, str], lanes: int, ideal_cycles: int | None = None) -> KernelChoice:
        """A KernelChoice from a kernel's ``instance_config`` result ``(jinja_ctx, sv_params, module)``.

        ``ideal_cycles`` defaults to one beat per cycle over the node's output tensor.
        """
        ctx, params, module = instance
        m = meta(node)
        if ideal_cycles is None:
            ideal_cycles = beats_of(m.shape, m.formats["out"], lanes)
        return KernelChoice(self.kernel, module, tuple(sorted(ctx.items())), tuple(sorted(params.items())),
                            lanes, lanes, ideal_cycles)

    def render(self, choice: KernelChoice) -> list:
        """The SV modules this instance needs (dependencies first), as ``Rendered`` objects."""
        from masec.hw_templates.manifest import dependency_closure, kernel
        from masec.hw_templates.render import render

        deps = [render(dep) for dep in dependency_closure(kernel(choice.kernel).deps)]
        return deps + [render(choice.kernel, choice.module, **choice.ctx_dict)]

    def memories(self, gm, node) -> dict[str, list[str]]:
        """Parameter memory files of this node: file name -> hex lines. None by default."""
        return {}


LOWERINGS: dict[str, Lowering] = {}


def register(cls):
    inst = cls()
    LOWERINGS[inst.op] = inst
    return cls


def supported_ops() -> set[str]:
    from masec import lowering  # noqa: F401  (imports every lowering module)
    return set(LOWERINGS)


def lowering_for(node) -> Lowering:
    supported_ops()
    return LOWERINGS[meta(node).op]


def config_error(node, op: str, exc: ValueError, formats, lanes: int):
    """The MasecError for a configuration ``node``'s kernel refused (its ValueError ``exc``), with the
    fix when an M2XFP activation among ``formats`` has fewer than 8 lanes (its 8-lane subgroups)."""
    from masec.errors import MasecError

    hint = ""
    if "m2xfp4_a" in formats and lanes % 8:
        m = meta(node)
        hint = f"; give it 8 lanes or more (--parallelism 8, or lanes = 8 under [node.\"{m.path or node.name}\"])"
    return MasecError(f"node `{node.name}` ({op}): {exc}{hint}")


def rows_of(shape) -> int:
    return prod(shape[:-1]) if len(shape) > 1 else 1


def beats_of(shape, fmt: TensorFormat, lanes: int) -> int:
    n = shape[-1]
    nblocks = -(-n // fmt.block_size)
    return rows_of(shape) * nblocks * (fmt.block_size // lanes)
