"""Embedding lookup (``mx_embedding``): token-id plain stream -> MX stream of the embedding rows.

The table is an MX tensor ``codes [vocab, nblocks, B]``, ``scales [vocab, nblocks]`` (masec.formats
``encode`` of the float ``[vocab, dim]`` weight, blocks along ``dim``). It is stored in a ROM with one
word per output beat (:func:`pack_rom`), so the kernel reads one word per cycle and never shifts::

    word = {scale[7:0], code[P-1], ..., code[0]}      (code 0 in the least significant bits)
    token t, beat j (j = block * B/P + lane group) at address t * RB + j,  RB = nblocks * B / P

With ``P == B`` this is exactly masec.formats' block packing (``pack_mx_block_words``); with
``P < B`` every beat word repeats its block's scale (8 bits per P codes).

Usage by the compiler::

    enc = fmt.encode(weight)                       # [vocab, dim] -> codes [vocab, nblk, B]
    (out / "emb.mem").write_text(rom_mem_text(enc.codes, enc.scales, fmt.element.bits, lanes))
    ctx, params, module = instance_config(vocab, dim, fmt, lanes, mem_file="emb.mem")
    codes_out, scales_out = embedding_model(ids, enc.codes, enc.scales)
"""
from __future__ import annotations

import functools

import torch

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec


def pack_rom(codes, scales, element_bits: int, lanes: int) -> list[int]:
    """ROM words of an MX table: one ``{scale, code[P-1..0]}`` word per output beat, rows in order.

    ``codes [vocab, nblocks, B]`` (unsigned bit patterns), ``scales [vocab, nblocks]`` (E8M0 codes).
    """
    from masec.formats import pack_mx_block_words

    codes = torch.as_tensor(codes).to(torch.int64)
    scales = torch.as_tensor(scales).to(torch.int64)
    block = codes.shape[-1]
    if lanes < 1 or block % lanes:
        raise ValueError(f"lanes {lanes} must divide the block size {block}")
    sub = codes.reshape(*codes.shape[:-1], block // lanes, lanes)
    sub_scales = scales.unsqueeze(-1).expand(*scales.shape, block // lanes)
    return pack_mx_block_words(sub, sub_scales, element_bits)


def rom_mem_text(codes, scales, element_bits: int, lanes: int) -> str:
    """``$readmemh`` text of :func:`pack_rom` (one zero-padded hex word per line)."""
    from masec.formats import words_to_mem

    return words_to_mem(pack_rom(codes, scales, element_bits, lanes), lanes * element_bits + 8)


def embedding_model(ids, codes, scales) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit-exact model: the rows of the table selected by ``ids`` (any shape).

    Returns ``(codes [*ids.shape, nblocks, B], scales [*ids.shape, nblocks])`` as int64. Ids must be
    in ``[0, vocab)`` (the RTL asserts it).
    """
    ids = torch.as_tensor(ids).to(torch.int64)
    codes = torch.as_tensor(codes).to(torch.int64)
    scales = torch.as_tensor(scales).to(torch.int64)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= codes.shape[0]):
        raise ValueError(f"token ids must lie in [0, {codes.shape[0]})")
    return codes[ids], scales[ids]


def embedding_reference(ids, weight, fmt) -> torch.Tensor:
    """Float reference: the MX-quantized rows of the float ``weight [vocab, dim]`` (masec.formats)."""
    return fmt.quantize(torch.as_tensor(weight))[torch.as_tensor(ids).to(torch.int64)]


def id_width(vocab: int) -> int:
    return max(1, (vocab - 1).bit_length())


def instance_config(vocab: int, dim: int, fmt, lanes: int, mem_file: str = "", block: int | None = None):
    """``(jinja_ctx, sv_params, module_name)`` of an embedding of ``vocab`` rows of ``dim`` elements.

    ``fmt`` is an MXFormat (or a name; block size ``block``, default 32); ``mem_file`` the ``.mem``
    image (path as the simulator/synthesis tool will see it) written with :func:`rom_mem_text`.
    """
    if isinstance(fmt, str):
        from masec.formats import parse_format

        fmt = parse_format(fmt, block_size=block or 32)
    b = int(fmt.block_size)
    if lanes < 1 or b % lanes:
        raise ValueError(f"lanes {lanes} must divide the block size {b}")
    if vocab < 1 or dim < 1:
        raise ValueError("vocab and dim must be >= 1")
    params = {"VOCAB": int(vocab), "DIM": int(dim), "B": b, "P": int(lanes), "W": int(fmt.element.bits),
              "ID_W": id_width(vocab), "MEM_FILE": str(mem_file)}
    return {}, params, "mx_embedding"


def example_mem(vocab: int, dim: int, block: int, bits: int, lanes: int, seed: int = 1) -> str:
    """A deterministic pseudo-random table image (LCG codes and scales) for the resource table."""
    nblk = -(-dim // block)
    x, words = seed, []
    for _ in range(vocab * nblk * (block // lanes)):
        word = 0
        for _ in range(lanes + 1):
            x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            word = (word << 8) | (x >> 56)
        words.append(word & ((1 << (lanes * bits + 8)) - 1))
    digits = -(-(lanes * bits + 8) // 4)
    return "".join(f"{w:0{digits}x}\n" for w in words)


def _example(label, vocab, dim, block, bits, lanes):
    return {"label": label, "ctx": {},
            "params": {"VOCAB": vocab, "DIM": dim, "B": block, "P": lanes, "W": bits, "ID_W": id_width(vocab),
                       "MEM_FILE": "emb.mem"},
            "files": {"emb.mem": functools.partial(example_mem, vocab, dim, block, bits, lanes)}}


SPEC = KernelSpec(
    name="mx_embedding",
    template="mx_embedding.sv.j2",
    doc="Embedding lookup: one token id per input beat -> the MX row (ceil(DIM/B)*B/P beats of P lanes) "
        "from a ROM ($readmemh MEM_FILE, one {scale, P codes} word per beat); 1 beat/cycle, latency 2.",
    params=(ParamSpec("VOCAB", "table rows", 16),
            ParamSpec("DIM", "elements per row", 32),
            ParamSpec("B", "MX block size", 32),
            ParamSpec("P", "lanes per output beat; divides B", 4),
            ParamSpec("W", "element code width", 8),
            ParamSpec("ID_W", "token id width, 2^ID_W >= VOCAB", 4),
            ParamSpec("MEM_FILE", "ROM image (pack_rom / rom_mem_text), read with $readmemh", "")),
    ports=(PortSpec("s_x", "in", "plain", "token ids, one per beat"),
           PortSpec("m_y", "out", "mx", "embedding rows, P lanes of W-bit codes + scale")),
    ops=("embedding",),
    model=f"{__name__}:embedding_model",
    examples=(
        _example("mxfp8 V64 D64 P4", 64, 64, 32, 8, 4),
        _example("mxint8 V512 D128 P8", 512, 128, 32, 8, 8),
        _example("mxfp4 V1024 D256 P32", 1024, 256, 32, 4, 32),
    ),
)
