"""softmax over the last axis -> ``mx_softmax`` (online softmax, base-2 exp; docs/kernels/mx_softmax.md).

Canonical node ``softmax(x, scale, causal, key_mask)``: attention's constant score scale and its
causal / padding masks were folded in by ``canonicalize``; the kernel applies them exactly (the
scale as its fixed-point ``x log2 e`` multiplier, masks as dropped columns).
"""
from __future__ import annotations

from masec.hw_templates.kernels import mx_softmax
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


@register
class SoftmaxLowering(Lowering):
    op = "softmax"
    kernel = "mx_softmax"

    def _args(self, gm, node):
        _, scale, causal, key_mask = node.args
        m = meta(node)
        rows = m.shape[-2] if causal and len(m.shape) > 1 else 1
        km = self.const(gm, key_mask)
        return float(scale), bool(causal), rows, (None if km is None else [bool(v) for v in km.reshape(-1).tolist()])

    def choose(self, gm, node, config) -> KernelChoice:
        m = meta(node)
        p = config.parallelism
        scale, causal, rows, km = self._args(gm, node)
        return self.choice(node, mx_softmax.instance_config(
            m.shape[-1], meta(node.args[0]).formats["out"].parse(), m.formats["out"].parse(), p,
            causal=causal, rows=rows, offset=0, scale=scale, key_mask=km), p)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        (x,) = inputs
        m = meta(node)
        scale, causal, rows, km = self._args(gm, node)
        codes, scales = mx_softmax.softmax_model(x.codes, x.scales, x.fmt.parse().element,
                                                 m.formats["out"].parse().element, m.shape[-1], m.kernel.lanes_in,
                                                 causal=causal, rows=rows, offset=0, scale=scale, key_mask=km)
        return MXValue(codes.reshape(x.codes.shape), scales.reshape(x.scales.shape), m.formats["out"], m.shape)
