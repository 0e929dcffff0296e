"""softmax over the last axis -> ``mx_softmax`` (online softmax, base-2 exp; docs/kernels/mx_softmax.md)."""
from __future__ import annotations

from masec.errors import MasecError
from masec.hw_templates.kernels import mx_softmax
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


@register
class SoftmaxLowering(Lowering):
    op = "softmax"
    kernel = "mx_softmax"

    def tensor_args(self, node) -> list:
        return [node.args[0]]

    def _check_dim(self, gm, node) -> None:
        rank = len(meta(node).shape)
        if node.op == "call_module":
            dim = gm.get_submodule(node.target).dim
        else:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if dim is None or dim not in (-1, rank - 1):
            raise MasecError(f"softmax over dim={dim}: masec streams rows, so softmax must run over the last "
                             f"axis (dim=-1)")

    def choose(self, gm, node, config) -> KernelChoice:
        self._check_dim(gm, node)
        m = meta(node)
        p = config.parallelism
        return self.choice(node, mx_softmax.instance_config(m.shape[-1], meta(node.args[0]).formats["out"].parse(),
                                                            m.formats["out"].parse(), p), p)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        (x,) = inputs
        m = meta(node)
        codes, scales = mx_softmax.softmax_model(x.codes, x.scales, x.fmt.parse().element,
                                                 m.formats["out"].parse().element, m.shape[-1], m.kernel.lanes_in)
        return MXValue(codes.reshape(x.codes.shape), scales.reshape(x.scales.shape), m.formats["out"], m.shape)
