"""Bit layout of MX blocks in .mem files and on streams.

One block of B elements of ``element_bits`` each and one scale code of ``scale_bits`` (8) is one
word of ``scale_bits + B * element_bits`` bits::

    {scale, code[B-1], ..., code[1], code[0]}      (code 0 in the least significant bits)

i.e. ``word = scale << (B * element_bits) | sum_i code[i] << (i * element_bits)``.
A .mem file holds one word per line as zero-padded lower-case hex of ceil(width / 4) digits,
blocks in row-major order of ``codes[..., nblocks, B]``.
"""
from __future__ import annotations

import torch

from masec.formats.element import check_code_range
from masec.formats.errors import FormatError


def block_word_width(element_bits: int, block_size: int, scale_bits: int = 8) -> int:
    """Bits in one packed block word."""
    return scale_bits + block_size * element_bits


def pack_mx_block_bytes(
    codes: torch.Tensor, scales: torch.Tensor, element_bits: int, scale_bits: int = 8
) -> torch.Tensor:
    """Little-endian bytes of every block word: uint8 ``[N, ceil(width / 8)]``.

    ``codes`` is ``[..., nblocks, B]`` and ``scales`` ``[..., nblocks]``; blocks are flattened in
    row-major order.
    """
    codes = torch.as_tensor(codes).to(torch.int64)
    scales = torch.as_tensor(scales).to(torch.int64)
    if codes.dim() < 1 or codes.shape[:-1] != scales.shape:
        raise FormatError(f"codes {tuple(codes.shape)} and scales {tuple(scales.shape)} do not match")
    check_code_range(codes, element_bits, "element code")
    check_code_range(scales, scale_bits, "scale code")
    block = codes.shape[-1]
    c = codes.reshape(-1, block)
    s = scales.reshape(-1, 1)
    shifts = torch.arange(element_bits, dtype=torch.int64)
    bits = ((c.unsqueeze(-1) >> shifts) & 1).reshape(c.shape[0], block * element_bits)
    sbits = (s >> torch.arange(scale_bits, dtype=torch.int64)) & 1
    allbits = torch.cat([bits, sbits], dim=1)
    width = allbits.shape[1]
    nbytes = -(-width // 8)
    allbits = torch.nn.functional.pad(allbits, (0, nbytes * 8 - width))
    weights = torch.tensor([1 << k for k in range(8)], dtype=torch.int64)
    return (allbits.view(-1, nbytes, 8) * weights).sum(-1).to(torch.uint8)


def pack_mx_block_words(
    codes: torch.Tensor, scales: torch.Tensor, element_bits: int, scale_bits: int = 8
) -> list[int]:
    """One Python int per block: ``{scale, code[B-1], ..., code[0]}`` (see module docstring)."""
    raw = pack_mx_block_bytes(codes, scales, element_bits, scale_bits).numpy()
    return [int.from_bytes(row.tobytes(), "little") for row in raw]


def unpack_mx_block_words(
    words: list[int], element_bits: int, block_size: int, scale_bits: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_mx_block_words`: ``(codes int32 [N, B], scales int32 [N])``."""
    width = block_word_width(element_bits, block_size, scale_bits)
    nbytes = -(-width // 8)
    for w in words:
        if not 0 <= w < (1 << width):
            raise FormatError(f"word {w:#x} wider than {width} bits")
    raw = torch.tensor(
        [list(int(w).to_bytes(nbytes, "little")) for w in words], dtype=torch.int64
    ).reshape(len(words), nbytes)
    bits = ((raw.unsqueeze(-1) >> torch.arange(8)) & 1).reshape(len(words), nbytes * 8)[:, :width]
    cbits = bits[:, : block_size * element_bits].reshape(len(words), block_size, element_bits)
    codes = (cbits << torch.arange(element_bits)).sum(-1)
    sbits = bits[:, block_size * element_bits :]
    scales = (sbits << torch.arange(scale_bits)).sum(-1)
    return codes.to(torch.int32), scales.to(torch.int32)


def words_to_mem(words: list[int], width: int) -> str:
    """.mem text: one zero-padded hex word per line (ceil(width / 4) digits), trailing newline."""
    digits = -(-width // 4)
    for w in words:
        if not 0 <= w < (1 << width):
            raise FormatError(f"word {w:#x} wider than {width} bits")
    return "".join(f"{w:0{digits}x}\n" for w in words)


def mem_to_words(text: str) -> list[int]:
    """Parse .mem text (hex words, one per line; blank lines and ``//`` comments ignored)."""
    words = []
    for line in text.splitlines():
        line = line.split("//", 1)[0].strip()
        if line:
            try:
                words.append(int(line, 16))
            except ValueError as err:
                raise FormatError(f"bad .mem line {line!r}") from err
    return words
