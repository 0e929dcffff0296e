"""matmul of two activation streams -> ``mx_matmul`` (Q K^T with ``trans_b``, scores x V).

Canonical node ``matmul(a, b, trans_b)``; leading axes (batch, heads) are looped: the kernel
loads one B matrix (all of it: ``buffering = "tensor"``), then streams the ``M`` rows of A that
use it, then the next B. ``a`` is ``[..., M, K]``, ``b`` ``[..., N, K]`` (trans_b) or
``[..., K, N]``; the result ``[..., M, N]`` is quantized to the node's format. Either operand may be a
seed activation format (nvfp4, m2xfp4_a, anda<M>): the kernel decodes it (``AFMT``/``BFMT``; an
NVFP4 operand's tensor scale is its ``TensorFormat.ts_exp``), the model reads it through
:func:`mx_matmul.operand_terms`.
"""
from __future__ import annotations

from math import prod

import torch

from masec.errors import MasecError
from masec.hw_templates.kernels import mx_matmul
from masec.lowering.base import Lowering, MXValue, config_error, register
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
        ta, tb = meta(a).formats["out"], meta(b).formats["out"]
        fa, fb, fo = ta.parse(), tb.parse(), meta(node).formats["out"].parse()
        try:
            inst = mx_matmul.instance_config(m_dim, k_dim, n_dim, fa, fb, fo, trans_b, p, p, p,
                                             a_ts_exp=ta.ts_exp if ta.name == "nvfp4" else None,
                                             b_ts_exp=tb.ts_exp if tb.name == "nvfp4" else None)
        except ValueError as exc:
            raise config_error(node, "matmul", exc, (ta.name, tb.name), p) from None
        cycles = batch * mx_matmul.ideal_cycles(m_dim, k_dim, n_dim, p, inst[1]["BB"], trans_b, p)
        return self.choice(node, inst, p, cycles)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        a, b = inputs
        batch, m_dim, k_dim, n_dim, trans_b = self._dims(node)
        out = meta(node).formats["out"]
        eo = out.parse().element
        rb = n_dim if trans_b else k_dim

        def per_batch(v: MXValue, rows: int):
            t = mx_matmul.operand_terms(v.fmt.parse(), v.codes, v.scales, v.meta, v.fmt.ts_exp)
            sig = None if t.sig is None else t.sig.reshape(batch, rows, -1)
            return (t.codes.reshape(batch, rows, *t.codes.shape[1:]), t.exps.reshape(batch, rows, -1), t.elem, sig)

        ac, as_, ea, asig = per_batch(a, m_dim)
        bc, bs, eb, bsig = per_batch(b, rb)
        codes, scales = [], []
        for i in range(batch):
            c, s = mx_matmul.matmul_model(ac[i], as_[i], ea, bc[i], bs[i], eb, eo, out.block_size, trans_b,
                                          k_dim, n_dim, a_sig=None if asig is None else asig[i],
                                          b_sig=None if bsig is None else bsig[i])
            codes.append(torch.as_tensor(c, dtype=torch.int64))
            scales.append(torch.as_tensor(s, dtype=torch.int64))
        codes = torch.cat(codes).reshape(batch * m_dim, -1, out.block_size)
        scales = torch.cat(scales).reshape(batch * m_dim, -1)
        return MXValue(codes, scales, out, meta(node).shape)
