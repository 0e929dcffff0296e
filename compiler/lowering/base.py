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


@dataclass(frozen=True)
class MXValue:
    """A tensor as the hardware holds it: MX element codes and E8M0 scales, blocked on the last axis."""
    codes: torch.Tensor      # int64 [rows, nblocks, B]
    scales: torch.Tensor     # int64 [rows, nblocks]
    fmt: TensorFormat
    shape: tuple[int, ...]   # logical shape

    @classmethod
    def from_float(cls, x: torch.Tensor, fmt: TensorFormat) -> "MXValue":
        enc = fmt.parse().encode(x.detach().to(torch.float32))
        rows = prod(x.shape[:-1]) if x.dim() > 1 else 1
        codes = enc.codes.to(torch.int64).reshape(rows, -1, fmt.block_size)
        scales = enc.scales.to(torch.int64).reshape(rows, -1)
        return cls(codes, scales, fmt, tuple(x.shape))

    def to_float(self) -> torch.Tensor:
        """Decode to float (the values the hardware holds)."""
        f = self.fmt.parse()
        vals = f.element.decode_codes(self.codes) * torch.pow(2.0, (self.scales - 127).to(torch.float64)).unsqueeze(-1)
        n = self.shape[-1]
        return vals.reshape(self.codes.shape[0], -1)[:, :n].reshape(self.shape).to(torch.float32)

    @property
    def rows(self) -> int:
        return self.codes.shape[0]


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


def rows_of(shape) -> int:
    return prod(shape[:-1]) if len(shape) > 1 else 1


def beats_of(shape, fmt: TensorFormat, lanes: int) -> int:
    n = shape[-1]
    nblocks = -(-n // fmt.block_size)
    return rows_of(shape) * nblocks * (fmt.block_size // lanes)
