"""MX cast: change the element format and/or the block size of an MX stream (``mx_cast``).

Every input code is decoded to its exact value ``m * 2^e`` (integers; no float math), and the shared
output quantizer ``mx_quantize`` re-quantizes the exact values to the output format with the OCP
shared exponent, round-to-nearest-even and saturation. The result therefore equals masec.formats'
MX quantization of the decoded input (``out_fmt.encode(in_fmt.decode(x))``), bit for bit.

A block-size change re-pads rows: a row of ``row_len`` elements streams as ``ceil(row_len/B)*B``
elements in either format; trailing padding beats are dropped or zero beats inserted.

Usage by the compiler::

    ctx, params, module = instance_config("mxint8", "mxfp8_e4m3", lanes=8, row_len=4096)
    render("mx_cast", module, **ctx)         # + render("mx_quantize")
    codes_out, scales_out = cast_model(enc.codes, enc.scales, in_fmt.element, out_fmt.element, 32)

Pipelining: ``PIPE`` (0..3) goes to the quantizer instance (its elastic cuts, 2 * PIPE cycles, + 1 at PIPE 3);
at ``PIPE = 1`` an elastic register also holds the decoded beat (at ``PIPE >= 2`` the quantizer's
own input slice does). Same values, 1 beat/cycle, latency + :func:`latency` cycles
(docs/kernels/mx_cast.md).
"""
from __future__ import annotations

import torch

from masec.hw_templates.kernels import mx_quantize
from masec.hw_templates.kernels.mx_quantize import element_sv_params, quantize_blocks
from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

E8M0_BIAS = 127


def _resolve(fmt, block_size: int | None = None):
    """An MXFormat from an MXFormat or a format name."""
    if hasattr(fmt, "element") and hasattr(fmt, "block_size"):
        return fmt
    from masec.formats import parse_format

    return parse_format(fmt, block_size=block_size or 32)


def in_element_sv_params(element, prefix: str = "IN_") -> dict:
    """SV parameters describing an input element format for the decoder (int: BIAS 1, unused)."""
    is_int = element.kind == "int"
    return {f"{prefix}IS_INT": int(is_int), f"{prefix}BITS": int(element.bits),
            f"{prefix}MBITS": int(element.mbits), f"{prefix}BIAS": 1 if is_int else int(element.bias)}


def decode_exact(codes, scales, element) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact value of every MX element as ``m * 2^e`` (int64 tensors shaped like ``codes``).

    ``codes [..., nblocks, B]`` are unsigned bit patterns, ``scales [..., nblocks]`` E8M0 codes.
    fp: ``m = +-(ef ? 2^mbits + mant : mant)``, ``e = max(ef, 1) - bias - mbits + scale - 127``;
    int: ``m`` = the two's complement code, ``e = -mbits + scale - 127``. Bit patterns are taken as
    numbers (E4M3 NaN and E5M2 Inf codes decode as ordinary values, scale 0xFF as 2^128), exactly
    as the RTL does.
    """
    c = torch.as_tensor(codes).to(torch.int64)
    s = torch.as_tensor(scales).to(torch.int64).unsqueeze(-1) - E8M0_BIAS
    bits, mb = int(element.bits), int(element.mbits)
    if element.kind == "int":
        m = torch.where(c >= (1 << (bits - 1)), c - (1 << bits), c)
        e = (s - mb).expand_as(m)
    else:
        eb = bits - 1 - mb
        ef = (c >> mb) & ((1 << eb) - 1)
        mant = c & ((1 << mb) - 1)
        mag = torch.where(ef != 0, mant + (1 << mb), mant)
        m = torch.where(((c >> (bits - 1)) & 1) == 1, -mag, mag)
        e = ef.clamp(min=1) - int(element.bias) - mb + s
    return m, e.clone()


def row_beats(row_len: int, block: int, lanes: int) -> int:
    """Beats per row of ``row_len`` elements in blocks of ``block`` at ``lanes`` lanes."""
    return -(-row_len // block) * block // lanes


def cast_model(codes, scales, in_element, out_element, block_out: int, row_len: int | None = None):
    """Bit-exact model of ``mx_cast``.

    Args:
        codes: input codes ``[..., nblocks_in, B_in]``; the last two axes are one row.
        scales: input E8M0 scales ``[..., nblocks_in]``.
        in_element, out_element: masec.formats ``ElementFormat`` of input and output.
        block_out: output block size.
        row_len: real elements per row (``None``: the row is ``nblocks_in * B_in`` elements, which
            must then be a multiple of ``block_out``).

    Returns:
        ``(codes [..., nblocks_out, block_out], scales [..., nblocks_out])`` int64. The output row
        keeps input elements ``[0, min(L_in, L_out))`` and zero-fills the rest, L = padded row lengths.
    """
    m, e = decode_exact(codes, scales, in_element)
    lead, nb, b_in = m.shape[:-2], m.shape[-2], m.shape[-1]
    l_in = nb * b_in
    if row_len is None:
        if l_in % block_out:
            raise ValueError(f"row of {l_in} elements is not whole blocks of {block_out}; give row_len")
        l_out = l_in
    else:
        if -(-row_len // b_in) != nb:
            raise ValueError(f"row_len {row_len} does not match {nb} input blocks of {b_in}")
        l_out = -(-row_len // block_out) * block_out
    m = m.reshape(*lead, l_in)
    e = e.reshape(*lead, l_in)
    keep = min(l_in, l_out)
    mo = torch.zeros(*lead, l_out, dtype=torch.int64)
    eo = torch.zeros(*lead, l_out, dtype=torch.int64)
    mo[..., :keep] = m[..., :keep]
    eo[..., :keep] = e[..., :keep]
    return quantize_blocks(mo.reshape(*lead, l_out // block_out, block_out),
                           eo.reshape(*lead, l_out // block_out, block_out), out_element)


def cast_reference(codes, scales, in_element, out_element, block_out: int) -> torch.Tensor:
    """Float reference: masec.formats decode of the input, then masec.formats MX encode (codes, scales)."""
    from masec.formats import MXFormat

    c = torch.as_tensor(codes).to(torch.int64)
    vals = in_element.decode_codes(c).to(torch.float64)
    vals = vals * torch.pow(2.0, torch.as_tensor(scales).to(torch.float64) - E8M0_BIAS).unsqueeze(-1)
    vals = vals.reshape(*c.shape[:-2], -1)
    enc = MXFormat(out_element, block_out, "even").encode(vals)
    return enc.codes.to(torch.int64), enc.scales.to(torch.int64)


def instance_config(in_fmt, out_fmt, lanes: int, row_len: int = 0, in_block: int | None = None,
                    out_block: int | None = None):
    """``(jinja_ctx, sv_params, module_name)`` of a cast from ``in_fmt`` to ``out_fmt`` at ``lanes`` lanes.

    Formats are MXFormat objects or names (block sizes from the objects, else ``in_block``/``out_block``,
    default 32). ``row_len`` (elements per row) is needed when the block size changes.
    """
    fi, fo = _resolve(in_fmt, in_block), _resolve(out_fmt, out_block)
    bi, bo = int(fi.block_size), int(fo.block_size)
    if lanes < 1 or bi % lanes or bo % lanes:
        raise ValueError(f"lanes {lanes} must divide both block sizes {bi} and {bo}")
    if bi != bo and not row_len:
        raise ValueError(f"mx_cast changing the block size {bi} -> {bo} needs row_len")
    params = {"P": int(lanes), "B_IN": bi, "B_OUT": bo, "ROW_LEN": int(row_len),
              **in_element_sv_params(fi.element), **element_sv_params(fo.element, prefix="OUT_")}
    return {}, params, "mx_cast"


#: Largest PIPE: the quantizer's.
MAX_PIPE = mx_quantize.MAX_PIPE


def latency(params: dict) -> int:
    """Cycles ``PIPE`` adds over ``PIPE = 0``: the quantizer's ``latency(PIPE)`` (2 * PIPE, + 1 at PIPE 3) plus the decode cut at PIPE 1."""
    pipe = check_pipe(params.get("PIPE", 0), MAX_PIPE, "mx_cast")
    return mx_quantize.latency(pipe) + (1 if pipe == 1 else 0)


class _Fmt:
    """Just enough of an MXFormat for the manifest's example configurations (no formats import at
    registry time)."""

    ELEMENTS = {  # name: (kind, bits, mbits, bias, emax, max_code)
        "mxint8": ("int", 8, 6, 0, 0, 127), "mxfp8_e4m3": ("fp", 8, 3, 7, 8, 126),
        "mxfp4": ("fp", 4, 1, 1, 2, 7), "mxfp8_e5m2": ("fp", 8, 2, 15, 15, 123)}

    def __init__(self, name, block_size):
        kind, bits, mbits, bias, emax, max_code = self.ELEMENTS[name]
        self.block_size = block_size
        self.element = type("El", (), dict(kind=kind, bits=bits, mbits=mbits, bias=bias, emax=emax,
                                            max_code=max_code))()


def _example(label, fi, fo, lanes, row_len=0, bi=32, bo=32, pipe=0):
    _, params, _ = instance_config(_Fmt(fi, bi), _Fmt(fo, bo), lanes, row_len)
    if pipe:
        params["PIPE"] = pipe
    return {"label": label, "ctx": {}, "params": params}


SPEC = KernelSpec(
    name="mx_cast",
    template="mx_cast.sv.j2",
    doc="MX cast: exact decode of every code to m*2^e, then the shared quantizer to the output element "
        "format and block size (row re-padding with ROW_LEN). 1 beat/cycle, latency one output block "
        "(+ 2 * PIPE + (PIPE == 1) + (PIPE == 3) cycles, PIPE 0..3).",
    params=(ParamSpec("P", "lanes per beat; divides B_IN and B_OUT", 4),
            ParamSpec("B_IN", "input block size", 32),
            ParamSpec("B_OUT", "output block size", 32),
            ParamSpec("ROW_LEN", "elements per row (0: rows are whole blocks of both sizes)", 0),
            ParamSpec("IN_IS_INT", "input element: 1 int, 0 fp", 1),
            ParamSpec("IN_BITS", "input code width", 8),
            ParamSpec("IN_MBITS", "input fraction bits", 6),
            ParamSpec("IN_BIAS", "input fp exponent bias (int: 1)", 1),
            ParamSpec("OUT_IS_INT", "output element: 1 int, 0 fp", 0),
            ParamSpec("OUT_BITS", "output code width", 8),
            ParamSpec("OUT_MBITS", "output fraction bits", 3),
            ParamSpec("OUT_BIAS", "output emin = 1 - OUT_BIAS", 7),
            ParamSpec("OUT_EMAX", "output top binade exponent", 8),
            ParamSpec("OUT_MAX_CODE", "output largest finite magnitude code", 126),
            ParamSpec("PIPE", "pipeline depth 0..3 (latency + 2 * PIPE + (PIPE == 1) + (PIPE == 3))", 0)),
    ports=(PortSpec("s_x", "in", "mx", "input MX stream (P lanes of IN_BITS-bit codes + scale)"),
           PortSpec("m_y", "out", "mx", "output MX stream (P lanes of OUT_BITS-bit codes + scale)")),
    deps=("mx_quantize",),
    ops=("cast",),
    model=f"{__name__}:cast_model",
    examples=(
        _example("mxint8->mxfp8_e4m3 P4", "mxint8", "mxfp8_e4m3", 4),
        _example("mxfp8_e4m3->mxfp4 P8", "mxfp8_e4m3", "mxfp4", 8),
        _example("mxfp4->mxint8 B32->16 P16", "mxfp4", "mxint8", 16, row_len=96, bi=32, bo=16),
        # pipelined: the PIPE of a 6 ns (1), 4 ns (2) and 3 ns (3) clock
        _example("mxint8->mxfp8_e4m3 P4 PIPE1", "mxint8", "mxfp8_e4m3", 4, pipe=1),
        _example("mxfp8_e4m3->mxfp4 P8 PIPE2", "mxfp8_e4m3", "mxfp4", 8, pipe=2),
        _example("mxfp8_e4m3->mxfp4 P8 PIPE3", "mxfp8_e4m3", "mxfp4", 8, pipe=3),
        _example("mxfp4->mxint8 B32->16 P16 PIPE3", "mxfp4", "mxint8", 16, row_len=96, bi=32, bo=16, pipe=3),
    ),
    extra={"latency": latency, "max_pipe": MAX_PIPE},
)
