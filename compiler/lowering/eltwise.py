"""add / mul of two tensors -> ``mx_add`` / ``mx_mul`` (residual connections, the SwiGLU gate).

Both operands stream in lockstep with the same shape and lanes; the exact sum/product goes
through the shared MX output quantizer to the node's format. A mul's result may be a seed
activation format (``mx_mul``'s ``OUT_QFMT``; NVFP4's tensor scale its ``TensorFormat.ts_exp``, from
``calibrate_tensor_scales``); an add's is MX.
"""
from __future__ import annotations

from masec.errors import MasecError
from masec.hw_templates.kernels import mx_eltwise
from masec.lowering.base import Lowering, MXValue, config_error, register
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
        out = m.formats["out"]
        try:
            instance = mx_eltwise.instance_config(
                m.shape, meta(a).formats["out"].parse(), meta(b).formats["out"].parse(), out.parse(), p, op=self.op,
                y_ts_exp=out.ts_exp)
        except ValueError as exc:
            raise config_error(node, self.op, exc, (out.name,), p) from None
        return self.choice(node, instance, p)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        from masec.hw_templates.kernels.mx_quantize import output_format_params

        x, y = inputs
        out = meta(node).formats["out"]
        qfmt, el_out = output_format_params(out.parse())
        if self.op == "mul":
            codes, scales, ymeta = mx_eltwise.mul_model_format(x.codes, x.scales, x.fmt.parse().element, y.codes,
                                                               y.scales, y.fmt.parse().element, el_out, qfmt,
                                                               out.ts_exp or 0)
            return MXValue(codes, scales, out, meta(node).shape, ymeta)
        codes, scales = mx_eltwise.add_model(x.codes, x.scales, x.fmt.parse().element, y.codes, y.scales,
                                             y.fmt.parse().element, el_out)
        return MXValue(codes, scales, out, meta(node).shape)


@register
class AddLowering(_Eltwise):
    op = "add"
    kernel = "mx_add"


@register
class MulLowering(_Eltwise):
    op = "mul"
    kernel = "mx_mul"
