"""Constant source (``stream_rom``): streams a constant tensor's beats from a ROM, one tensor per
inference, wrapping after the last beat (docs/kernels/stream_rom.md).

Used by the compiler for a constant operand of an element-wise op (GPT-2's learned position
embeddings ``x + wpe(arange(T))``, a constant scale vector): the constant is encoded in the
operand's MX format, packed one ``{scale[7:0], code[P-1], ..., code[0]}`` word per beat (the same
layout as ``mx_embedding``'s ROM and as an MX stream's bus) and written to a ``$readmemh`` file.

    words = beat_words(codes, scales, element_bits, lanes)       # codes [rows, nblocks, B]
    (out / "c.mem").write_text(rom_mem_text(words, width))
    ctx, params, module = instance_config(width, len(words), mem_file="c.mem")
    model(words, n)   # the first n beats the kernel offers: words, repeated

Bit-exact model: the encoded constant's beats, repeated.
"""
from __future__ import annotations

import functools

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec


def beat_words(codes, scales, element_bits: int, lanes: int) -> list[int]:
    """ROM words of an MX tensor (``codes [rows, nblocks, B]``, ``scales [rows, nblocks]``): one
    ``{scale, code[P-1..0]}`` word per beat, in stream order (``mx_embedding.pack_rom``)."""
    from masec.hw_templates.kernels.mx_embedding import pack_rom

    return pack_rom(codes, scales, element_bits, lanes)


def rom_mem_text(words: list[int], width: int) -> str:
    """``$readmemh`` text of ``words`` (one zero-padded hex word per line)."""
    from masec.formats import words_to_mem

    return words_to_mem(list(words), width)


def model(words: list[int], n_beats: int | None = None) -> list[int]:
    """The first ``n_beats`` beats the kernel offers (default: one tensor): ``words`` repeated."""
    words = list(words)
    n = len(words) if n_beats is None else n_beats
    return [words[i % len(words)] for i in range(n)]


def instance_config(width: int, depth: int, mem_file: str = "") -> tuple[dict, dict, str]:
    """``(jinja_ctx, sv_params, module_name)`` of a source of ``depth`` beats of ``width`` bits."""
    if width < 1 or depth < 1:
        raise ValueError(f"width ({width}) and depth ({depth}) must be >= 1")
    return {}, {"WIDTH": int(width), "DEPTH": int(depth), "MEM_FILE": str(mem_file)}, "stream_rom"


def example_mem(width: int, depth: int, seed: int = 1) -> str:
    """A deterministic pseudo-random image (LCG words) for lint and the resource table."""
    x, words = seed, []
    for _ in range(depth):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        words.append((x >> 8) & ((1 << width) - 1) if width <= 56 else x % (1 << width))
    return rom_mem_text(words, width)


def _example(label, width, depth):
    return {"label": label, "ctx": {}, "params": {"WIDTH": width, "DEPTH": depth, "MEM_FILE": "rom.mem"},
            "files": {"rom.mem": functools.partial(example_mem, width, depth)}}


SPEC = KernelSpec(
    name="stream_rom",
    template="stream_rom.sv.j2",
    doc="Constant source: streams DEPTH beats of WIDTH bits from a ROM ($readmemh MEM_FILE), one tensor "
        "per inference, wrapping after the last beat; valid from the first cycle after reset, 1 beat/cycle.",
    params=(ParamSpec("WIDTH", "bits per beat word ({scale, data} for an MX stream)", 8),
            ParamSpec("DEPTH", "beats per tensor (ROM words), >= 1", 1),
            ParamSpec("MEM_FILE", "ROM image (rom_mem_text), read with $readmemh", "")),
    ports=(PortSpec("m_y", "out", "plain", "the constant's beats, repeated"),),
    model=f"{__name__}:model",
    examples=(_example("W40 D64", 40, 64), _example("W264 D1", 264, 1), _example("W72 D512", 72, 512)),
)
