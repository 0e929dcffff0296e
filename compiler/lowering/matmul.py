"""matmul of two activation streams -> ``mx_matmul`` (Q K^T with ``trans_b``, scores x V).

Canonical node ``matmul(a, b, trans_b)``; leading axes (batch, heads) are looped: the kernel
loads one B matrix (all of it: ``buffering = "tensor"``), then streams the ``M`` rows of A that
use it, then the next B. ``a`` is ``[..., M, K]``, ``b`` ``[..., N, K]`` (trans_b) or
``[..., K, N]``; the result ``[..., M, N]`` is quantized to the node's format.
"""
from __future__ import annotations

from math import prod

import torch

from masec.errors import MasecError
from masec.hw_templates.kernels import mx_matmul
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


@register
class MatmulLowering(Lowering):
    op = "matmul"
    kernel = "mx_matmul"
    in_ports = ("s_a", "s_b")
    buffering = "tensor"

    def _dims(self, node):
        a, b, trans_b = node.args
        sa, sb = meta(a).shape, meta(b).shape
        if len(sa) < 2 or sa[:-2] != sb[:-2]:
            raise MasecError(f"matmul of shapes {sa} and {sb}: masec needs the same leading (batch/head) axes on "
                             f"both operands (broadcasting is not supported)")
        m_dim, k_dim = sa[-2], sa[-1]
        n_dim = sb[-2] if trans_b else sb[-1]
        return prod(sa[:-2]), m_dim, k_dim, n_dim, bool(trans_b)

    def choose(self, gm, node, config) -> KernelChoice:
        batch, m_dim, k_dim, n_dim, trans_b = self._dims(node)
        a, b, _ = node.args
        p = config.parallelism
        fa, fb, fo = (meta(a).formats["out"].parse(), meta(b).formats["out"].parse(),
                      meta(node).formats["out"].parse())
        try:
            inst = mx_matmul.instance_config(m_dim, k_dim, n_dim, fa, fb, fo, trans_b, p, p, p)
        except ValueError as exc:
            raise MasecError(str(exc)) from None
        cycles = batch * mx_matmul.ideal_cycles(m_dim, k_dim, n_dim, p, fb.block_size, trans_b, p)
        return self.choice(node, inst, p, cycles)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        a, b = inputs
        batch, m_dim, k_dim, n_dim, trans_b = self._dims(node)
        out = meta(node).formats["out"]
        ea, eb, eo = a.fmt.parse().element, b.fmt.parse().element, out.parse().element
        ac = a.codes.reshape(batch, m_dim, *a.codes.shape[1:])
        as_ = a.scales.reshape(batch, m_dim, -1)
        rb = n_dim if trans_b else k_dim
        bc = b.codes.reshape(batch, rb, *b.codes.shape[1:])
        bs = b.scales.reshape(batch, rb, -1)
        codes, scales = [], []
        for i in range(batch):
            c, s = mx_matmul.matmul_model(ac[i], as_[i], ea, bc[i], bs[i], eb, eo, out.block_size, trans_b,
                                          k_dim, n_dim)
            codes.append(torch.as_tensor(c, dtype=torch.int64))
            scales.append(torch.as_tensor(s, dtype=torch.int64))
        codes = torch.cat(codes).reshape(batch * m_dim, -1, out.block_size)
        scales = torch.cat(scales).reshape(batch * m_dim, -1)
        return MXValue(codes, scales, out, meta(node).shape)
