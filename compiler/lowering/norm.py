"""RMSNorm / LayerNorm over the last axis -> ``mx_rmsnorm`` / ``mx_layernorm``; gamma (and beta)
MX-encoded into ROMs. A norm without affine parameters gets gamma = 1 (and beta = 0)."""
from __future__ import annotations

import re

import torch

from masec.errors import MasecError
from masec.hw_templates.kernels import mx_norm
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


def _mem(node, what: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', node.name)}_{what}.mem"


class _Norm(Lowering):
    kind = ""

    def tensor_args(self, node) -> list:
        return [node.args[0]]

    def _module(self, gm, node):
        if node.op != "call_module":
            raise MasecError(f"node `{node.name}`: use the nn.{'RMSNorm' if self.op == 'rms_norm' else 'LayerNorm'} "
                             f"module (functional norms are not supported)")
        mod = gm.get_submodule(node.target)
        n = meta(node).shape[-1]
        if tuple(mod.normalized_shape) != (n,):
            raise MasecError(f"node `{node.name}`: masec normalizes over the last axis only; normalized_shape "
                             f"{tuple(mod.normalized_shape)} != ({n},)")
        return mod

    def _eps(self, mod) -> float:
        return float(mod.eps) if mod.eps is not None else float(torch.finfo(torch.float32).eps)

    def _params(self, gm, node):
        mod = self._module(gm, node)
        n = meta(node).shape[-1]
        gamma = mod.weight.detach().float() if getattr(mod, "weight", None) is not None else torch.ones(n)
        beta = None
        if self.kind == "layernorm":
            beta = mod.bias.detach().float() if getattr(mod, "bias", None) is not None else torch.zeros(n)
        return mod, gamma, beta

    def choose(self, gm, node, config) -> KernelChoice:
        m = meta(node)
        mod, gamma, beta = self._params(gm, node)
        p = config.parallelism
        fw = m.formats["weight"].parse()
        instance = mx_norm.instance_config(
            self.kind, m.shape[-1], meta(node.args[0]).formats["out"].parse(), m.formats["out"].parse(), fw, p,
            eps=self._eps(mod), gamma_mem=_mem(node, "gamma"), beta_mem=_mem(node, "beta"),
            fmt_beta=m.formats["bias"].parse() if beta is not None else None)
        return self.choice(node, instance, p)

    def _encoded(self, gm, node):
        m = meta(node)
        mod, gamma, beta = self._params(gm, node)
        ge = m.formats["weight"].parse().encode(gamma)
        be = m.formats["bias"].parse().encode(beta) if beta is not None else None
        return mod, ge, be

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        (x,) = inputs
        m = meta(node)
        mod, ge, be = self._encoded(gm, node)
        el, el_out, g_el = x.fmt.parse().element, m.formats["out"].parse().element, m.formats["weight"].parse().element
        n = m.shape[-1]
        if self.kind == "rmsnorm":
            codes, scales = mx_norm.rmsnorm_model(x.codes, x.scales, el, ge.codes, ge.scales, g_el, el_out, n,
                                                  eps=self._eps(mod))
        else:
            codes, scales = mx_norm.layernorm_model(x.codes, x.scales, el, ge.codes, ge.scales, g_el, be.codes,
                                                    be.scales, m.formats["bias"].parse().element, el_out, n,
                                                    eps=self._eps(mod), lanes=m.kernel.lanes_in)
        return MXValue(codes.reshape(x.codes.shape[0], -1, x.codes.shape[-1]),
                       scales.reshape(x.codes.shape[0], -1), m.formats["out"], m.shape)

    def memories(self, gm, node) -> dict[str, list[str]]:
        m = meta(node)
        mod, ge, be = self._encoded(gm, node)
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
