"""ReLU -> ``mx_relu``: negative codes become 0, the block scale is kept (bit-exact, no rounding)."""
from __future__ import annotations

from masec.hw_templates.kernels import mx_relu
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


@register
class ReluLowering(Lowering):
    op = "relu"
    kernel = "mx_relu"

    def choose(self, gm, node, config) -> KernelChoice:
        m = meta(node)
        fmt = meta(node.args[0]).formats["out"]
        return self.choice(node, mx_relu.instance_config(m.shape, fmt.parse(), config.parallelism), config.parallelism)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        (x,) = inputs
        codes, scales = mx_relu.relu_model(x.codes, x.scales, x.fmt.parse().element)
        return MXValue(codes, scales, x.fmt, x.shape)
