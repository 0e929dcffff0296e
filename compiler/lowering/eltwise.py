"""add / mul of two tensors -> ``mx_add`` / ``mx_mul`` (residual connections, the SwiGLU gate).

Both operands stream in lockstep with the same shape and lanes; the exact sum/product goes
through the shared MX output quantizer to the node's format.
"""
from __future__ import annotations

from masec.errors import MasecError
from masec.hw_templates.kernels import mx_eltwise
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


class _Eltwise(Lowering):
    in_ports = ("s_x", "s_y")
    out_port = "m_z"

    def choose(self, gm, node, config) -> KernelChoice:
        m = meta(node)
        a, b = self.tensor_args(node)
        if meta(a).shape != meta(b).shape:
            raise MasecError(f"{self.op} of shapes {meta(a).shape} and {meta(b).shape}: broadcasting is not "
                             f"supported; both operands must have the node's shape {m.shape}")
        p = config.parallelism
        return self.choice(node, mx_eltwise.instance_config(
            m.shape, meta(a).formats["out"].parse(), meta(b).formats["out"].parse(), m.formats["out"].parse(),
            p, op=self.op), p)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        x, y = inputs
        out = meta(node).formats["out"]
        fn = mx_eltwise.add_model if self.op == "add" else mx_eltwise.mul_model
        codes, scales = fn(x.codes, x.scales, x.fmt.parse().element, y.codes, y.scales, y.fmt.parse().element,
                           out.parse().element)
        return MXValue(codes, scales, out, meta(node).shape)


@register
class AddLowering(_Eltwise):
    op = "add"
    kernel = "mx_add"


@register
class MulLowering(_Eltwise):
    op = "mul"
    kernel = "mx_mul"
