"""RMSNorm / LayerNorm over the last axis -> ``mx_rmsnorm`` / ``mx_layernorm``; gamma (and beta)
MX-encoded into ROMs. A norm without affine parameters gets gamma = 1 (and beta = 0). An RMSNorm's
output may be a seed activation format (``mx_rmsnorm``'s ``Y_QFMT``; NVFP4's tensor scale its
``TensorFormat.ts_exp``, from ``calibrate_tensor_scales``)."""
from __future__ import annotations

import re

from masec.hw_templates.kernels import mx_norm
from masec.lowering.base import Lowering, MXValue, config_error, register
from masec.meta import KernelChoice, meta


def _mem(node, what: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', node.name)}_{what}.mem"


class _Norm(Lowering):
    kind = ""

    def _params(self, gm, node):
        """(eps, gamma, beta) from the canonical node ``rms_norm(x, w, eps)`` / ``layer_norm(x, w, b, eps)``."""
        if self.kind == "rmsnorm":
            _, w, eps = node.args
            return float(eps), self.const(gm, w).detach().float(), None
        _, w, b, eps = node.args
        return float(eps), self.const(gm, w).detach().float(), self.const(gm, b).detach().float()

    def choose(self, gm, node, config) -> KernelChoice:
        m = meta(node)
        eps, gamma, beta = self._params(gm, node)
        p = config.parallelism
        fw = m.formats["weight"].parse()
        out = m.formats["out"]
        try:
            instance = mx_norm.instance_config(
                self.kind, m.shape[-1], meta(node.args[0]).formats["out"].parse(), out.parse(), fw, p,
                eps=eps, gamma_mem=_mem(node, "gamma"), beta_mem=_mem(node, "beta"),
                fmt_beta=m.formats["bias"].parse() if beta is not None else None, y_ts_exp=out.ts_exp)
        except ValueError as exc:
            raise config_error(node, self.op, exc, (out.name,), p) from None
        return self.choice(node, instance, p)

    def _encoded(self, gm, node):
        m = meta(node)
        eps, gamma, beta = self._params(gm, node)
        ge = m.formats["weight"].parse().encode(gamma)
        be = m.formats["bias"].parse().encode(beta) if beta is not None else None
        return eps, ge, be

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        (x,) = inputs
        m = meta(node)
        eps, ge, be = self._encoded(gm, node)
        from masec.hw_templates.kernels.mx_quantize import output_format_params

        out = m.formats["out"]
        el, g_el = x.fmt.parse().element, m.formats["weight"].parse().element
        y_qfmt, el_out = output_format_params(out.parse())
        n = m.shape[-1]
        ymeta = None
        if self.kind == "rmsnorm":
            codes, scales, ymeta = mx_norm.rmsnorm_model_format(x.codes, x.scales, el, ge.codes, ge.scales, g_el, n,
                                                                eps=eps, y_qfmt=y_qfmt, el_out=el_out,
                                                                y_ts_exp=out.ts_exp or 0)
        else:
            codes, scales = mx_norm.layernorm_model(x.codes, x.scales, el, ge.codes, ge.scales, g_el, be.codes,
                                                    be.scales, m.formats["bias"].parse().element, el_out, n,
                                                    eps=eps, lanes=m.kernel.lanes_in)
        rows = x.codes.shape[0]
        return MXValue(codes.reshape(rows, -1, x.codes.shape[-1]), scales.reshape(rows, -1), out, m.shape,
                       None if ymeta is None else ymeta.reshape(rows, -1, ymeta.shape[-1]))

    def memories(self, gm, node) -> dict[str, list[str]]:
        m = meta(node)
        eps, ge, be = self._encoded(gm, node)
        k = m.kernel.params_dict
        mems = {k["GAMMA_MEM"]: mx_norm.pack_gamma_mem(ge.codes, ge.scales, m.formats["weight"].parse().element)
                .splitlines()}
        if be is not None:
            mems[k["BETA_MEM"]] = mx_norm.pack_beta_mem(be.codes, be.scales,
                                                        m.formats["bias"].parse().element).splitlines()
        return mems


@register
class RmsNormLowering(_Norm):
    op = "rms_norm"
    kernel = "mx_rmsnorm"
    kind = "rmsnorm"


@register
class LayerNormLowering(_Norm):
    op = "layer_norm"
    kernel = "mx_layernorm"
    kind = "layernorm"
