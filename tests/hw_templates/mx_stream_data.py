"""Random MX test data with block-scale extremes, shared by the stream-infrastructure, cast, RoPE
and embedding kernel tests."""
from __future__ import annotations

import random
from fractions import Fraction

import torch

EXTREME_SCALES = (0, 1, 2, 3, 125, 126, 127, 128, 129, 251, 252, 253, 254)


def signed_code(element, mag: int, negative: bool) -> int:
    """Bit pattern of magnitude code ``mag`` with a sign (int: two's complement)."""
    bits = element.bits
    if element.kind == "int":
        return (-mag if negative else mag) & ((1 << bits) - 1)
    return mag | ((1 << (bits - 1)) if negative and mag else 0)


def random_mx(rng: random.Random, element, lead: int, nblocks: int, block: int, row_len: int | None = None,
              scale_range=(0, 254)) -> tuple[torch.Tensor, torch.Tensor]:
    """``codes [lead, nblocks, block]``, ``scales [lead, nblocks]`` of valid (finite) codes.

    Block kinds: random codes; all zero; all max magnitude; one max-magnitude element among small
    ones. Scales: extremes (0..3, 251..254, around 127) and uniform ones within ``scale_range``.
    Int elements occasionally carry the code -2^(bits-1) (decodable, never produced by quantization).
    Elements at or beyond ``row_len`` in each row are zero (padding).
    """
    maxc = element.max_code
    lo, hi = scale_range
    codes, scales = [], []
    for _ in range(lead):
        row_c, row_s = [], []
        for _ in range(nblocks):
            kind = rng.random()
            if kind < 0.1:
                blk = [0] * block
            elif kind < 0.2:
                blk = [signed_code(element, maxc, rng.random() < 0.5) for _ in range(block)]
            elif kind < 0.3:
                blk = [signed_code(element, rng.randrange(0, 4), rng.random() < 0.5) for _ in range(block)]
                blk[rng.randrange(block)] = signed_code(element, maxc, rng.random() < 0.5)
            else:
                blk = [signed_code(element, rng.randrange(maxc + 1), rng.random() < 0.5) for _ in range(block)]
                if element.kind == "int" and rng.random() < 0.2:
                    blk[rng.randrange(block)] = 1 << (element.bits - 1)
            row_c.append(blk)
            ext = [s for s in EXTREME_SCALES if lo <= s <= hi]
            row_s.append(rng.choice(ext) if (ext and rng.random() < 0.4) else rng.randint(lo, hi))
        if row_len is not None:
            for j in range(row_len, nblocks * block):
                row_c[j // block][j % block] = 0
        codes.append(row_c)
        scales.append(row_s)
    return torch.tensor(codes, dtype=torch.int64), torch.tensor(scales, dtype=torch.int64)


def exact_values(codes, scales, element) -> list[list[Fraction]]:
    """Exact Fraction value of every element, per block (flattened over the leading axes)."""
    c = torch.as_tensor(codes).reshape(-1, codes.shape[-1]).tolist()
    s = torch.as_tensor(scales).reshape(-1).tolist()
    return [[element.code_value(int(x)) * Fraction(2) ** (int(sc) - 127) for x in blk] for blk, sc in zip(c, s)]
