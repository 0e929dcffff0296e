"""GELU (erf and tanh forms) / SiLU -> ``mx_gelu`` / ``mx_gelu_tanh`` / ``mx_silu`` (table-based,
bit-exactly modeled; see docs/kernels/)."""
from __future__ import annotations

from masec.hw_templates.kernels import mx_act
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


class _Activation(Lowering):
    def tensor_args(self, node) -> list:
        return [node.args[0]]

    def choose(self, gm, node, config) -> KernelChoice:
        m = meta(node)
        p = config.parallelism
        return self.choice(node, mx_act.instance_config(m.shape, meta(node.args[0]).formats["out"].parse(),
                                                        m.formats["out"].parse(), p, func=self.op), p)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        (x,) = inputs
        out = meta(node).formats["out"]
        codes, scales = mx_act.act_model(self.op, x.codes, x.scales, x.fmt.parse().element, out.parse().element)
        return MXValue(codes, scales, out, meta(node).shape)


@register
class GeluLowering(_Activation):
    op = "gelu"
    kernel = "mx_gelu"


@register
class SiluLowering(_Activation):
    op = "silu"
    kernel = "mx_silu"


@register
class GeluTanhLowering(_Activation):
    op = "gelu_tanh"
    kernel = "mx_gelu_tanh"
