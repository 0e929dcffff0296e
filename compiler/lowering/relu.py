"""ReLU -> ``mx_relu``: negative codes become 0, the block scale is kept (bit-exact, no rounding);
also on NVFP4, Anda and M2XFP activation streams, see :func:`_code_format`."""
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
        return self.choice(node, mx_relu.instance_config(m.shape, _code_format(fmt), config.parallelism),
                           config.parallelism)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        (x,) = inputs
        if x.meta is not None:   # M2XFP activations (M2X = 1)
            codes, scales, meta_ = mx_relu.relu_model_m2xfp(x.codes, x.scales, x.meta)
            return MXValue(codes, scales, x.fmt, x.shape, meta_)
        codes, scales = mx_relu.relu_model(x.codes, x.scales, _code_format(x.fmt).element)
        return MXValue(codes, scales, x.fmt, x.shape)


def _code_format(fmt):
    """What mx_relu is given for a stream: MX formats and ``m2xfp4_a`` (``M2X = 1``) as they are; an
    NVFP4 or Anda stream (sign-magnitude codes under one block scale) as the MX format of the same code
    element (mx_quantize.output_format_params), whose relu is the same operation: a code with the sign
    bit set becomes 0, the scale bus passes unchanged (docs/kernels/mx_relu.md)."""
    from masec.formats.m2xfp import M2XFPActivationFormat
    from masec.formats.mx import MXFormat
    from masec.hw_templates.kernels.mx_quantize import output_format_params
    from masec.lowering.base import seed_activation

    f = fmt.parse()
    if seed_activation(f) and not isinstance(f, M2XFPActivationFormat):
        return MXFormat(output_format_params(f)[1], fmt.block_size)
    return f
