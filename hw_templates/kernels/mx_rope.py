"""Rotary position embedding on MX q/k rows (``mx_rope``), LLaMA / llama2.c interleaved pairs.

Row ``r`` of the stream has position ``pos = pos_start + (r mod seq_len)``. Element ``j`` of a row
belongs to head ``j // head_dim``; the pair ``(x[2i], x[2i+1])`` of a head (``i = (j mod head_dim)/2``)
is rotated by ``pos * theta_i``, ``theta_i = base^(-2i/head_dim)``::

    y[2i] = x[2i] cos - x[2i+1] sin,     y[2i+1] = x[2i] sin + x[2i+1] cos

Arithmetic (the RTL, bit for bit):

* table: ``C = round_half_even(cos(pos*theta_i) * 2^F)``, ``S`` likewise, ``F = cs_bits - 2``, as
  ``cs_bits``-bit two's complement (float64 ``math.cos``/``math.sin`` of the float64 angle);
* input codes become fixed-point integers ``X`` with one exponent per block
  (fp: ``X = +-(hidden.mant << (max(ef, 1) - 1))``, ``EF = 1 - bias - mbits + scale - 127``;
  int: ``X = code``, ``EF = -mbits + scale - 127``);
* ``m[2i] = Xa*C - Xb*S``, ``m[2i+1] = Xa*S + Xb*C`` exactly, ``e = EF - F``;
* the shared quantizer (``mx_quantize.quantize_blocks``) rounds ``m * 2^e`` to the output format.

So the only approximation before the output rounding is the table: ``|C/2^F - cos| <= 2^-(F+1)``,
and the pre-rounding value differs from the float rotation by at most ``(|a| + |b|) * 2^-(F+1)``.

Pipelining: the SV parameter ``PIPE`` (0..3) registers the decoded beat with its cos/sin word
(PIPE >= 1, the multipliers' inputs) and the four products of every pair (PIPE >= 2), as elastic
stages (1 beat/cycle under any backpressure), and is passed on to the quantizer. Values do not
change; :func:`latency` gives the cycles added over PIPE 0, ``masec.passes.hw.pipeline.pipe_depth``
the PIPE for a clock period.

Usage by the compiler::

    (out / "rope.mem").write_text(rope_mem_text(max_pos, head_dim, lanes))
    ctx, params, module = instance_config(fmt_in, fmt_out, lanes, dim, head_dim, max_pos,
                                          pos_start=0, seq_len=seq, mem_file="rope.mem")
    codes, scales = rope_model(enc.codes, enc.scales, fmt_in.element, fmt_out.element, head_dim)
"""
from __future__ import annotations

import functools
import math

import torch

from masec.hw_templates.kernels import mx_quantize
from masec.hw_templates.kernels.mx_cast import in_element_sv_params
from masec.hw_templates.kernels.mx_quantize import element_sv_params, quantize_blocks
from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

E8M0_BIAS = 127
DEFAULT_CS_BITS = 16
DEFAULT_BASE = 10000.0


# ------------------------------------------------------------------------------------ table
@functools.lru_cache(maxsize=16)
def _table(max_pos: int, head_dim: int, cs_bits: int, base: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    f = cs_bits - 2
    half = head_dim // 2
    thetas = [base ** (-2.0 * i / head_dim) for i in range(half)]
    cos_q, sin_q = [], []
    for pos in range(max_pos):
        for th in thetas:
            ang = pos * th
            cos_q.append(round(math.cos(ang) * (1 << f)))  # Python round: ties to even
            sin_q.append(round(math.sin(ang) * (1 << f)))
    return tuple(cos_q), tuple(sin_q)


def rope_table(max_pos: int, head_dim: int, cs_bits: int = DEFAULT_CS_BITS, base: float = DEFAULT_BASE):
    """Fixed-point ``(cos, sin)``, int64 ``[max_pos, head_dim/2]``, ``cs_bits - 2`` fraction bits."""
    if head_dim % 2:
        raise ValueError(f"head_dim {head_dim} must be even")
    if not 3 <= cs_bits <= 30:
        raise ValueError(f"cs_bits {cs_bits} must be 3..30")
    c, s = _table(int(max_pos), int(head_dim), int(cs_bits), float(base))
    shape = (max_pos, head_dim // 2)
    return torch.tensor(c, dtype=torch.int64).reshape(shape), torch.tensor(s, dtype=torch.int64).reshape(shape)


def rope_rom_words(max_pos: int, head_dim: int, lanes: int, cs_bits: int = DEFAULT_CS_BITS,
                   base: float = DEFAULT_BASE) -> list[int]:
    """ROM words: address ``pos * head_dim/lanes + g`` holds the ``lanes/2`` pairs of lane group ``g``;
    pair ``k`` at bits ``[2k*cs_bits, 2(k+1)*cs_bits)`` = ``{sin, cos}`` (cos low)."""
    if lanes < 2 or lanes % 2 or head_dim % lanes:
        raise ValueError(f"lanes {lanes} must be even and divide head_dim {head_dim}")
    c, s = rope_table(max_pos, head_dim, cs_bits, base)
    mask = (1 << cs_bits) - 1
    words = []
    for pos in range(max_pos):
        for g in range(head_dim // lanes):
            w = 0
            for k in range(lanes // 2):
                i = g * lanes // 2 + k
                w |= ((int(c[pos, i]) & mask) | ((int(s[pos, i]) & mask) << cs_bits)) << (2 * k * cs_bits)
            words.append(w)
    return words


def rope_mem_text(max_pos: int, head_dim: int, lanes: int, cs_bits: int = DEFAULT_CS_BITS,
                  base: float = DEFAULT_BASE) -> str:
    """``$readmemh`` image of :func:`rope_rom_words`."""
    digits = -(-(lanes * cs_bits) // 4)
    return "".join(f"{w:0{digits}x}\n" for w in rope_rom_words(max_pos, head_dim, lanes, cs_bits, base))


# ------------------------------------------------------------------------------------ model
def fixed_point_decode(codes, scales, element) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes as fixed-point integers with one exponent per block: value = ``X * 2^EF``.

    Returns ``(X [..., nblocks, B], EF [..., nblocks])`` int64.
    """
    c = torch.as_tensor(codes).to(torch.int64)
    s = torch.as_tensor(scales).to(torch.int64) - E8M0_BIAS
    bits, mb = int(element.bits), int(element.mbits)
    if element.kind == "int":
        return torch.where(c >= (1 << (bits - 1)), c - (1 << bits), c), s - mb
    eb = bits - 1 - mb
    ef = (c >> mb) & ((1 << eb) - 1)
    mant = c & ((1 << mb) - 1)
    mag = torch.where(ef != 0, (mant + (1 << mb)) << (ef - 1).clamp(min=0), mant)
    x = torch.where(((c >> (bits - 1)) & 1) == 1, -mag, mag)
    return x, s + 1 - int(element.bias) - mb


def _positions(rows: int, pos_start: int, seq_len: int | None) -> torch.Tensor:
    r = torch.arange(rows, dtype=torch.int64)
    return pos_start + (r % seq_len if seq_len else r)


def rope_model(codes, scales, in_element, out_element, head_dim: int, pos_start: int = 0,
               seq_len: int | None = None, cs_bits: int = DEFAULT_CS_BITS, base: float = DEFAULT_BASE,
               max_pos: int | None = None):
    """Bit-exact model of ``mx_rope``.

    Args:
        codes: ``[..., rows, nblocks, B]`` input codes; a row is ``nblocks * B`` elements (DIM plus
            zero padding); the rows of all leading axes, flattened in order, are consecutive positions.
        scales: ``[..., rows, nblocks]`` E8M0 scales.
        in_element, out_element: masec.formats ``ElementFormat`` of input and output.
        head_dim: elements per head (even); heads follow each other along the row.
        pos_start, seq_len: row ``r`` has position ``pos_start + (r mod seq_len)`` (``None``: no wrap).
        cs_bits, base: table width and RoPE base; ``max_pos`` is the table size (only checked).

    Returns:
        ``(codes, scales)`` of the output format, same shapes, int64.
    """
    x, ef = fixed_point_decode(codes, scales, in_element)
    shape = x.shape
    nb, b = shape[-2], shape[-1]
    x = x.reshape(-1, nb * b)
    ef = ef.reshape(-1, nb)
    rows, row_len = x.shape
    pos = _positions(rows, pos_start, seq_len)
    top = int(pos.max()) + 1 if rows else 0
    if max_pos is not None and top > max_pos:
        raise ValueError(f"positions up to {top - 1} exceed the table of {max_pos}")
    c_tab, s_tab = rope_table(max(top, 1), head_dim, cs_bits, base)
    pair = (torch.arange(row_len // 2) * 2 % head_dim) // 2          # theta index of each pair
    c = c_tab[pos][:, pair]
    s = s_tab[pos][:, pair]
    xa, xb = x[:, 0::2], x[:, 1::2]
    m = torch.empty_like(x)
    m[:, 0::2] = xa * c - xb * s
    m[:, 1::2] = xa * s + xb * c
    e = (ef - (cs_bits - 2)).repeat_interleave(b, dim=1)
    oc, os_ = quantize_blocks(m.reshape(rows, nb, b), e.reshape(rows, nb, b), out_element)
    return oc.reshape(shape), os_.reshape(shape[:-1])


def rope_exact_values(codes, scales, in_element, head_dim: int, pos_start: int = 0,
                      seq_len: int | None = None, cs_bits: int = DEFAULT_CS_BITS,
                      base: float = DEFAULT_BASE) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact pre-quantization values ``m * 2^e`` the RTL hands to the quantizer: ``(m, e)``
    int64 ``[rows, row_len]`` (rows flattened)."""
    x, ef = fixed_point_decode(codes, scales, in_element)
    nb, b = x.shape[-2], x.shape[-1]
    x = x.reshape(-1, nb * b)
    ef = ef.reshape(-1, nb)
    pos = _positions(x.shape[0], pos_start, seq_len)
    c_tab, s_tab = rope_table(int(pos.max()) + 1, head_dim, cs_bits, base)
    pair = (torch.arange(x.shape[1] // 2) * 2 % head_dim) // 2
    c, s = c_tab[pos][:, pair], s_tab[pos][:, pair]
    m = torch.empty_like(x)
    m[:, 0::2] = x[:, 0::2] * c - x[:, 1::2] * s
    m[:, 1::2] = x[:, 0::2] * s + x[:, 1::2] * c
    return m, (ef - (cs_bits - 2)).repeat_interleave(b, dim=1)


def rope_reference(x: torch.Tensor, head_dim: int, pos_start: int = 0, seq_len: int | None = None,
                   base: float = DEFAULT_BASE) -> torch.Tensor:
    """Float64 RoPE of ``x [..., rows, dim]`` (rows flattened = positions), interleaved pairs."""
    x = torch.as_tensor(x, dtype=torch.float64)
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    pos = _positions(x.shape[0], pos_start, seq_len).to(torch.float64)
    i = (torch.arange(shape[-1] // 2) * 2 % head_dim).to(torch.float64)
    theta = torch.tensor([base ** (-float(v) / head_dim) for v in i.tolist()], dtype=torch.float64)
    ang = pos[:, None] * theta[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    a, b = x[:, 0::2], x[:, 1::2]
    y = torch.empty_like(x)
    y[:, 0::2] = a * cos - b * sin
    y[:, 1::2] = a * sin + b * cos
    return y.reshape(shape)


# ------------------------------------------------------------------------------------ pipelining
#: Largest PIPE the template has cuts for (the quantizer's too).
MAX_PIPE = 3


def _check_pipe(pipe) -> int:
    return check_pipe(pipe, MAX_PIPE, "mx_rope")


def latency(params: dict) -> int:
    """Cycles ``PIPE`` adds over PIPE 0: the decode and product cuts (``min(PIPE, 2)``) plus the
    quantizer's ``latency(PIPE)`` (2 * PIPE, + 1 at PIPE 3)."""
    pipe = _check_pipe(params.get("PIPE", 0))
    return min(pipe, 2) + mx_quantize.latency(pipe)


# ------------------------------------------------------------------------------------ config
def _resolve(fmt, block_size=None):
    if hasattr(fmt, "element") and hasattr(fmt, "block_size"):
        return fmt
    from masec.formats import parse_format

    return parse_format(fmt, block_size=block_size or 32)


def instance_config(in_fmt, out_fmt, lanes: int, dim: int, head_dim: int, max_pos: int, pos_start: int = 0,
                    seq_len: int | None = None, cs_bits: int = DEFAULT_CS_BITS, mem_file: str = "",
                    pipe: int | None = None):
    """``(jinja_ctx, sv_params, module_name)`` of a RoPE over rows of ``dim`` elements.

    ``mem_file`` is the table image written with :func:`rope_mem_text` (same ``max_pos``,
    ``head_dim``, ``lanes``, ``cs_bits``). ``seq_len`` defaults to ``max_pos - pos_start``.
    ``pipe`` sets the ``PIPE`` SV parameter (left out: the template's default, 0).
    """
    fi, fo = _resolve(in_fmt), _resolve(out_fmt)
    b = int(fi.block_size)
    if int(fo.block_size) != b:
        raise ValueError("mx_rope keeps the block size: use mx_cast to change it")
    if lanes < 2 or lanes % 2 or b % lanes or head_dim % lanes:
        raise ValueError(f"lanes {lanes} must be even and divide the block {b} and head_dim {head_dim}")
    if head_dim % 2 or dim % head_dim:
        raise ValueError(f"head_dim {head_dim} must be even and divide dim {dim}")
    seq_len = seq_len if seq_len is not None else max_pos - pos_start
    if seq_len < 1 or pos_start + seq_len > max_pos:
        raise ValueError(f"positions {pos_start} .. {pos_start + seq_len - 1} exceed the table of {max_pos}")
    params = {"P": int(lanes), "B": b, "DIM": int(dim), "HEAD_DIM": int(head_dim), "MAX_POS": int(max_pos),
              "POS_START": int(pos_start), "SEQ_LEN": int(seq_len), "CS_W": int(cs_bits),
              **in_element_sv_params(fi.element), **element_sv_params(fo.element, prefix="OUT_"),
              "MEM_FILE": str(mem_file), **({} if pipe is None else {"PIPE": _check_pipe(pipe)})}
    return {}, params, "mx_rope"


_ELEMS = {  # name: (IS_INT, BITS, MBITS, BIAS, EMAX, MAX_CODE) -- manifest examples only (no formats import)
    "mxfp8_e4m3": (0, 8, 3, 7, 8, 126), "mxint8": (1, 8, 6, 1, 0, 127), "mxfp4": (0, 4, 1, 1, 2, 7)}


def _example(label, fmt, lanes, dim, head_dim, max_pos, pipe=None):
    isi, bits, mb, bias, emax, maxc = _ELEMS[fmt]
    if pipe is not None:
        label += f" PIPE{pipe}"
    params = {"P": lanes, "B": 32, "DIM": dim, "HEAD_DIM": head_dim, "MAX_POS": max_pos, "POS_START": 0,
              "SEQ_LEN": max_pos, "CS_W": DEFAULT_CS_BITS, "IN_IS_INT": isi, "IN_BITS": bits, "IN_MBITS": mb,
              "IN_BIAS": bias, "OUT_IS_INT": isi, "OUT_BITS": bits, "OUT_MBITS": mb, "OUT_BIAS": bias,
              "OUT_EMAX": emax, "OUT_MAX_CODE": maxc, "MEM_FILE": "rope.mem",
              **({} if pipe is None else {"PIPE": pipe})}
    return {"label": label, "ctx": {}, "params": params,
            "files": {"rope.mem": functools.partial(rope_mem_text, max_pos, head_dim, lanes)}}


SPEC = KernelSpec(
    name="mx_rope",
    template="mx_rope.sv.j2",
    doc="Rotary position embedding (interleaved pairs, LLaMA): exact fixed-point rotation of every pair "
        "with a CS_W-bit cos/sin ROM (position counter from POS_START, wrapping every SEQ_LEN rows), then "
        "the shared quantizer. 1 beat/cycle.",
    params=(ParamSpec("P", "lanes per beat; even, divides B and HEAD_DIM", 4),
            ParamSpec("B", "MX block size", 32),
            ParamSpec("DIM", "elements per row", 64),
            ParamSpec("HEAD_DIM", "elements per head; even, divides DIM", 64),
            ParamSpec("MAX_POS", "positions in the cos/sin table", 16),
            ParamSpec("POS_START", "position of the first row", 0),
            ParamSpec("SEQ_LEN", "rows before the position wraps to POS_START", 16),
            ParamSpec("CS_W", "cos/sin bits (two's complement, CS_W-2 fraction bits)", DEFAULT_CS_BITS),
            ParamSpec("IN_IS_INT", "input element: 1 int, 0 fp", 0),
            ParamSpec("IN_BITS", "input code width", 8),
            ParamSpec("IN_MBITS", "input fraction bits", 3),
            ParamSpec("IN_BIAS", "input fp bias (int: 1)", 7),
            ParamSpec("OUT_IS_INT", "output element: 1 int, 0 fp", 0),
            ParamSpec("OUT_BITS", "output code width", 8),
            ParamSpec("OUT_MBITS", "output fraction bits", 3),
            ParamSpec("OUT_BIAS", "output emin = 1 - OUT_BIAS", 7),
            ParamSpec("OUT_EMAX", "output top binade exponent", 8),
            ParamSpec("OUT_MAX_CODE", "output largest finite magnitude code", 126),
            ParamSpec("MEM_FILE", "cos/sin ROM image (rope_mem_text)", ""),
            ParamSpec("PIPE", "pipeline depth 0..3 (own cuts + the quantizer's; latency in extra['latency'])", 0)),
    ports=(PortSpec("s_x", "in", "mx", "q or k rows, P lanes of IN_BITS-bit codes + scale"),
           PortSpec("m_y", "out", "mx", "rotated rows, P lanes of OUT_BITS-bit codes + scale")),
    deps=("mx_quantize",),
    ops=("rope",),
    model=f"{__name__}:rope_model",
    examples=(
        _example("mxfp8_e4m3 P2 hd64 pos256", "mxfp8_e4m3", 2, 64, 64, 256),
        _example("mxint8 P8 hd64 pos256", "mxint8", 8, 128, 64, 256),
        _example("mxfp4 P32 hd128 pos512", "mxfp4", 32, 256, 128, 512),
        # the same at MAX_PIPE (a 3 ns clock)
        _example("mxfp8_e4m3 P2 hd64 pos256", "mxfp8_e4m3", 2, 64, 64, 256, pipe=MAX_PIPE),
        _example("mxint8 P8 hd64 pos256", "mxint8", 8, 128, 64, 256, pipe=MAX_PIPE),
        _example("mxfp4 P32 hd128 pos512", "mxfp4", 32, 256, 128, 512, pipe=MAX_PIPE),
    ),
    extra={"latency": latency, "max_pipe": MAX_PIPE},
)
