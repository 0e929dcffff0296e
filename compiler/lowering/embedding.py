"""embedding -> ``mx_embedding``: token ids (a plain integer stream) in, MX rows of the table out.

Canonical node ``embedding(ids, weight)``. The table is encoded once in the node's format (the
kernel streams the table's own codes, so the output format is the weight format) into a ROM;
the bit-exact model is the lookup.
"""
from __future__ import annotations

import re

import torch

from masec.hw_templates.kernels import mx_embedding
from masec.lowering.base import Lowering, MXValue, register
from masec.meta import KernelChoice, meta


def _mem(node) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', node.name)}_table.mem"


@register
class EmbeddingLowering(Lowering):
    op = "embedding"
    kernel = "mx_embedding"

    def _encoded(self, gm, node):
        w = self.const(gm, node.args[1]).detach().to(torch.float32)
        fmt = meta(node).formats["out"].parse()
        return w, fmt, fmt.encode(w)

    def choose(self, gm, node, config) -> KernelChoice:
        w, fmt, _ = self._encoded(gm, node)
        p = config.parallelism
        ids = meta(node.args[0]).shape
        n_tok = 1
        for d in ids:
            n_tok *= d
        beats = n_tok * (-(-w.shape[1] // fmt.block_size)) * (fmt.block_size // p)
        choice = self.choice(node, mx_embedding.instance_config(w.shape[0], w.shape[1], fmt, p, mem_file=_mem(node)),
                             p, beats)
        from dataclasses import replace
        return replace(choice, lanes_in=1)

    def reference(self, gm, node, inputs) -> MXValue:
        (ids,) = inputs
        w, fmt, enc = self._encoded(gm, node)
        if int(ids.values.min()) < 0 or int(ids.values.max()) >= w.shape[0]:
            from masec.errors import MasecError
            raise MasecError(f"node `{node.name}` (embedding): token ids must be in [0, {w.shape[0]}), got "
                             f"{int(ids.values.min())}..{int(ids.values.max())}")
        codes, scales = mx_embedding.embedding_model(ids.values.reshape(-1), enc.codes, enc.scales)
        return MXValue(codes.reshape(-1, codes.shape[-2], codes.shape[-1]), scales.reshape(-1, scales.shape[-1]),
                       meta(node).formats["out"], meta(node).shape)

    def memories(self, gm, node) -> dict[str, list[str]]:
        w, fmt, enc = self._encoded(gm, node)
        k = meta(node).kernel.params_dict
        return {_mem(node): mx_embedding.rom_mem_text(enc.codes, enc.scales, fmt.element.bits, k["P"]).splitlines()}
