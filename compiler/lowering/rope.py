"""rope (interleaved pairs) -> ``mx_rope``; the RoPE tables become a fixed-point ROM.

Canonical node ``rope(x, cos, sin)`` with constant tables broadcast over ``x[..., ::2]``. The
lowering finds the position axis (the one axis along which the tables vary), checks that the
tables are the standard ``cos/sin(pos * base^(-2i/head_dim))`` from position 0 (and recovers
``base``), and streams rows of ``prod(x.shape[pos_axis+1:])`` elements, one position per row,
wrapping every ``seq_len`` rows (so ``[B, T, H, D]`` and ``[B, H, T, D]`` layouts both work).
Tables that are not standard RoPE are refused rather than approximated.
"""
from __future__ import annotations

import math
import re
from math import prod

import torch

from masec.errors import MasecError
from masec.hw_templates.kernels import mx_rope
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


def _mem(node) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', node.name)}_rope.mem"


@register
class RopeLowering(Lowering):
    op = "rope"
    kernel = "mx_rope"

    def geometry(self, gm, node) -> dict:
        x, cos, sin = node.args
        shape = meta(x).shape
        hd = shape[-1]
        half = (*shape[:-1], hd // 2)
        c = torch.broadcast_to(self.const(gm, cos).double(), half)
        s = torch.broadcast_to(self.const(gm, sin).double(), half)
        varying = [ax for ax in range(len(shape) - 1)
                   if shape[ax] > 1 and not torch.equal(c, c.narrow(ax, 0, 1).expand_as(c))]
        if len(varying) > 1:
            raise MasecError(f"node `{node.name}` (rope): the cos table varies along axes {varying}; masec "
                             f"needs one position axis")
        ax = varying[0] if varying else len(shape) - 2
        seq = shape[ax]
        idx = [0] * (len(shape) - 1)
        tab_c = torch.stack([c[tuple(idx[:ax] + [p] + idx[ax + 1:])] for p in range(seq)])   # [seq, hd/2]
        tab_s = torch.stack([s[tuple(idx[:ax] + [p] + idx[ax + 1:])] for p in range(seq)])
        base = mx_rope.DEFAULT_BASE
        if seq > 1 and hd > 2:
            theta1 = math.atan2(float(tab_s[1, 1]), float(tab_c[1, 1]))
            if theta1 > 0:
                base = round(theta1 ** (-hd / 2.0), 3)
        pos = torch.arange(seq, dtype=torch.float64)[:, None]
        theta = base ** (-2.0 * torch.arange(hd // 2, dtype=torch.float64) / hd)
        ang = pos * theta
        err = max((tab_c - torch.cos(ang)).abs().max().item(), (tab_s - torch.sin(ang)).abs().max().item())
        if err > 1e-3:
            raise MasecError(f"node `{node.name}` (rope): the cos/sin tables are not standard RoPE from position 0 "
                             f"(max deviation {err:.2e} from cos/sin(pos * {base:g}^(-2i/{hd}))); masec's RoPE "
                             f"kernel computes that table")
        return {"pos_axis": ax, "seq_len": seq, "dim": prod(shape[ax + 1:]), "head_dim": hd, "base": base,
                "rows": prod(shape[:ax + 1])}

    def choose(self, gm, node, config) -> KernelChoice:
        g = self.geometry(gm, node)
        m = meta(node)
        p = config.parallelism
        fin, fout = meta(node.args[0]).formats["out"].parse(), m.formats["out"].parse()
        if g["dim"] % fin.block_size:
            raise MasecError(f"node `{node.name}` (rope): rows of {g['dim']} elements are not whole blocks of "
                             f"{fin.block_size}")
        try:
            inst = mx_rope.instance_config(fin, fout, p, g["dim"], g["head_dim"], g["seq_len"], pos_start=0,
                                           seq_len=g["seq_len"], mem_file=_mem(node))
        except ValueError as exc:
            raise MasecError(f"node `{node.name}` (rope): {exc}") from None
        return self.choice(node, inst, p)

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        (x,) = inputs
        g = self.geometry(gm, node)
        out = meta(node).formats["out"]
        b = x.fmt.block_size
        codes = x.codes.reshape(g["rows"], g["dim"] // b, b)
        scales = x.scales.reshape(g["rows"], g["dim"] // b)
        oc, os_ = mx_rope.rope_model(codes, scales, x.fmt.parse().element, out.parse().element, g["head_dim"],
                                     pos_start=0, seq_len=g["seq_len"], base=g["base"])
        return MXValue(oc.reshape(x.codes.shape), os_.reshape(x.scales.shape), out, meta(node).shape)

    def memories(self, gm, node) -> dict[str, list[str]]:
        g = self.geometry(gm, node)
        k = meta(node).kernel.params_dict
        text = mx_rope.rope_mem_text(g["seq_len"], g["head_dim"], k["P"], base=g["base"])
        return {_mem(node): text.splitlines()}
