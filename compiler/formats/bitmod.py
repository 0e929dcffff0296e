"""BitMoD (HPCA'25): per-group mixture of 4 data types, weight-only (FORMATS.md §7).

A group is ``group_size`` (128) consecutive elements along ``axis``. Each group picks one of four
grids (2-bit type id, candidate order 0 ``er_pos``, 1 ``er_neg``, 2 ``ea_pos``, 3 ``ea_neg``):
the FP4 (or FP3) grid with its redundant -0 code replaced by one special value. In code units
(those of ``quant_weight.py``; FP4 values are twice the paper's):

=====  ==============================================  =================  ==================
base   magnitudes                                      ER special          EA special
=====  ==============================================  =================  ==================
FP4    0, 1, 2, 3, 4, 6, 8, 12 (= 2 x 0, 0.5, ..., 6)  +10 / -10 (qmax 12)  +16 / -16 (qmax 16)
FP3    0, 1, 2, 4                                      +3 / -3 (qmax 4)     +6 / -6 (qmax 6)
=====  ==============================================  =================  ==================

Per group and candidate type: scale s = fp16(amax / qmax) (correctly rounded), clamped to
[fp16(1e-5), 1e4]; each w / s (exact quotient) goes to the nearest grid value, an exact midpoint
to the lower value; value = grid * s (exact in float32). The type with the least sum of squared
errors (float64) wins, the first candidate on ties. A NaN/Inf in a group makes the group NaN.

Codes are sign-magnitude with the base magnitudes in ascending order (FP4: E2M1 codes); the -0
code (1 << (bits-1)) holds the special value. Encoded: codes ``[..., ngroups, G]``, scales the
FP16 bit patterns ``[..., ngroups]`` (int32), ``meta["type_id"]`` ``[..., ngroups]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from masec.formats.base import Encoded, NumberFormat
from masec.formats.blocking import Blocking, as_float32, check_block_size, from_blocks, row_chunks, to_blocks
from masec.formats.element import check_code_range
from masec.formats.errors import FormatError

TYPE_NAMES = ("er_pos", "er_neg", "ea_pos", "ea_neg")
_BASE = {4: (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0), 3: (0.0, 1.0, 2.0, 4.0)}
_SPECIAL = {4: (10.0, -10.0, 16.0, -16.0), 3: (3.0, -3.0, 6.0, -6.0)}
_FP16_NAN = 0x7E00
_SCALE_MIN = float(torch.tensor(1e-5).to(torch.float16))
_SCALE_MAX = 1e4


def type_table(bits: int, type_id: int) -> torch.Tensor:
    """float64 values of every code (2^bits entries) of one BitMoD type, in code units."""
    base = torch.tensor(_BASE[bits], dtype=torch.float64)
    return torch.cat([base, torch.tensor([_SPECIAL[bits][type_id]], dtype=torch.float64), -base[1:]])


@dataclass(frozen=True)
class BitMoDFormat(NumberFormat):
    """BitMoD ``bitmod_fp4`` / ``bitmod_fp3`` (see module docstring)."""

    bits: int = 4
    group_size: int = 128
    axis: int = -1

    def __post_init__(self) -> None:
        if self.bits not in _BASE:
            raise FormatError(f"BitMoD base must be FP4 or FP3 (bits 4 or 3), got {self.bits}")
        check_block_size(self.group_size)

    @property
    def name(self) -> str:
        return f"bitmod_fp{self.bits}"

    @property
    def bits_per_element(self) -> float:
        """bits + (16-bit FP16 scale + 2-bit type id) / group."""
        return self.bits + 18 / self.group_size

    def _search(self, blocks: torch.Tensor):
        """Returns (type id [N], fp16 scale [N] float64, codes int32 [N, G], values float64 [N, G], bad [N]).

        Walks the groups in cache-sized row chunks (see blocking.CHUNK_ELEMENTS).
        """
        parts = [self._search_chunk(blocks[i:j]) for i, j in row_chunks(blocks.shape[0], blocks.shape[1])]
        if not parts:
            return self._search_chunk(blocks)
        return tuple(torch.cat(p) for p in zip(*parts))

    def _search_chunk(self, blocks: torch.Tensor):
        w = blocks.to(torch.float64)
        amax = blocks.abs().amax(-1).to(torch.float64) if blocks.shape[0] else torch.zeros(0, dtype=torch.float64)
        bad = ~torch.isfinite(blocks).all(-1)
        best = None
        for t in range(4):
            table = type_table(self.bits, t)
            qmax = float(table.abs().max())
            s = (amax / qmax).to(torch.float16).clamp(_SCALE_MIN, _SCALE_MAX).to(torch.float64)
            grid, order = table.sort()
            mids = (grid[1:] + grid[:-1]) / 2
            idx = torch.bucketize(w / s.unsqueeze(-1), mids, right=False)  # midpoint -> lower
            q = grid[idx] * s.unsqueeze(-1)
            code = order[idx].to(torch.int32)
            err = (w - q).square_().sum(-1)
            if best is None:
                best = (err, torch.zeros_like(amax, dtype=torch.int64), s, code, q)
            else:
                take = err < best[0]
                t2 = take.unsqueeze(-1)
                best = (torch.where(take, err, best[0]), torch.where(take, t, best[1]),
                        torch.where(take, s, best[2]), torch.where(t2, code, best[3]),
                        torch.where(t2, q, best[4]))
        _, tid, s, code, q = best
        return tid, s, code, q, bad

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float32(x)
        blocks, b = to_blocks(x, self.axis, self.group_size)
        *_, q, bad = self._search(blocks)
        out = q.to(torch.float32).add_(0.0)
        out[bad] = float("nan")
        return from_blocks(out, b, shape=tuple(x.shape))

    def encode(self, x: torch.Tensor) -> Encoded:
        x = as_float32(x)
        blocks, b = to_blocks(x, self.axis, self.group_size)
        tid, s, code, _, bad = self._search(blocks)
        scales = s.to(torch.float16).view(torch.int16).to(torch.int32) & 0xFFFF
        tid = tid.to(torch.int32)
        code[bad], scales[bad], tid[bad] = 0, _FP16_NAN, 0
        lead = b.blocked_shape[:-1]
        return Encoded(self.name, code.view(b.blocked_shape), scales.view(lead), tuple(x.shape), b.axis,
                       self.bits, self.group_size, 16, {"type_id": tid.view(lead)})

    def decode(self, enc: Encoded) -> torch.Tensor:
        self._check_encoded(enc)
        b = Blocking(tuple(enc.shape) if enc.shape else (1,), enc.axis, self.group_size)
        codes = enc.codes.reshape(-1, self.group_size).to(torch.int64)
        scales = enc.scales.reshape(-1).to(torch.int64)
        tid = enc.meta["type_id"].reshape(-1).to(torch.int64)
        check_code_range(codes, self.bits, "BitMoD code")
        check_code_range(scales, 16, "FP16 scale")
        check_code_range(tid, 2, "BitMoD type id")
        tables = torch.stack([type_table(self.bits, t) for t in range(4)])  # [4, 2^bits]
        vals = tables[tid.unsqueeze(-1), codes]
        s = torch.where(scales >= 1 << 15, scales - (1 << 16), scales).to(torch.int16).view(torch.float16)
        out = (vals * s.to(torch.float64).unsqueeze(-1)).to(torch.float32).add_(0.0)
        return from_blocks(out, b, shape=tuple(enc.shape))
