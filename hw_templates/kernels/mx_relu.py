"""ReLU on MX codes (``mx_relu``), plus the format helpers shared by the element-wise kernels.

ReLU keeps the block scale: a non-negative element keeps its code, a negative one becomes 0.
For both element kinds this is "sign bit (MSB) set -> code 0": int elements are two's
complement, fp elements ``sign|exp|mant`` (so -0 -> +0). The result is exact:
``decode(relu_model(c, s)) == relu(decode(c, s))`` for every finite code (NaN blocks, scale
0xFF, pass through as NaN).

Seed activation streams: NVFP4 and Anda codes are sign-magnitude (sign in the MSB) under one block
scale, so the same "sign set -> 0" is exact for them (give the MX format of the code element:
``mx_quantize.output_format_params``). An M2XFP activation stream (``m2xfp4_a``) also carries 2
metadata bits per subgroup of 8 that refine the subgroup's top-1 lane; ``M2X = 1`` zeroes a negative
top-1 lane and sets that subgroup's metadata to 1 (no refinement), so the lane the decoder now takes
as top-1 keeps its FP4 value (:func:`relu_model_m2xfp`; exact against the format library).

Usage by the compiler::

    ctx, params, module = instance_config(shape=(16, 64), fmt="mxint8", lanes=8)
    render("mx_relu", module, **ctx)          # then instantiate `module` with `params`
    codes_out, scales_out = relu_model(enc.codes, enc.scales, fmt.element)
"""
from __future__ import annotations

import torch

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec

# ----------------------------------------------------------------------------- format helpers


def resolve_format(fmt, block_size: int | None = None):
    """An ``MXFormat`` from an ``MXFormat`` or a name (``"mxint8"``, ``"mxfp8_e4m3"``, ``"mxfp4"``, ...)."""
    if hasattr(fmt, "element") and hasattr(fmt, "block_size"):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"expected an MXFormat or a format name, got {fmt!r}")
    try:
        from masec.formats import parse_format
    except ImportError:  # formats package without the parser yet: build the element ourselves
        return _parse_mx_name(fmt, block_size or 32)
    return parse_format(fmt, block_size=block_size or 32)


def _parse_mx_name(name: str, block_size: int):
    import re

    from masec.formats.element import fp_element, int_element
    from masec.formats.mx import MXFormat

    short = {"mxfp8": (4, 3), "mxfp8_e4m3": (4, 3), "mxfp8_e5m2": (5, 2), "mxfp6_e3m2": (3, 2),
             "mxfp6_e2m3": (2, 3), "mxfp4": (2, 1), "mxfp4_e2m1": (2, 1)}
    if name in short:
        return MXFormat(fp_element(*short[name]), block_size)
    m = re.fullmatch(r"mxint(\d+)", name)
    if m:
        return MXFormat(int_element(int(m.group(1))), block_size)
    m = re.fullmatch(r"mxfp_e(\d+)m(\d+)", name)
    if m:
        return MXFormat(fp_element(int(m.group(1)), int(m.group(2))), block_size)
    raise ValueError(f"unknown MX format name {name!r}")


def check_lanes(fmt, lanes: int) -> None:
    b = fmt.block_size
    if lanes < 1 or b % lanes:
        raise ValueError(f"lanes {lanes} must divide the block size {b} of {fmt.name}")


# ----------------------------------------------------------------------------------- kernel

SPEC = KernelSpec(
    name="mx_relu",
    template="mx_relu.sv.j2",
    doc="ReLU on MX codes, block scale kept: codes with the sign bit set become 0 (int and fp "
        "elements, -0 -> +0). P lanes per beat, 1 beat/cycle, latency REG cycles.",
    params=(ParamSpec("P", "lanes (elements) per beat; divides the block size", 4),
            ParamSpec("W", "element code width in bits (element.bits)", 8),
            ParamSpec("REG", "1: output register slice (latency 1), 0: combinational (latency 0)", 1),
            ParamSpec("M2X", "1: M2XFP activations (W 4, P a multiple of 8, P/4 metadata bits above the codes)", 0)),
    ports=(PortSpec("s_x", "in", "mx", "input activation, P lanes of W-bit codes + E8M0 scale"),
           PortSpec("m_y", "out", "mx", "ReLU output, same format, same scale")),
    ops=("relu",),
    model=f"{__name__}:relu_model",
    examples=({"label": "mxint8 P4", "ctx": {}, "params": {"P": 4, "W": 8, "REG": 1}},
              {"label": "mxfp8 P16", "ctx": {}, "params": {"P": 16, "W": 8, "REG": 1}},
              {"label": "mxfp4 P32", "ctx": {}, "params": {"P": 32, "W": 4, "REG": 1}},
              {"label": "m2xfp4_a P16", "ctx": {}, "params": {"P": 16, "W": 4, "REG": 1, "M2X": 1}}),
)


def relu_model(codes, scales, elem) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit-exact model of ``mx_relu``.

    Args:
        codes: element codes ``[..., nblocks, B]`` (unsigned bit patterns of ``elem.bits`` bits).
        scales: E8M0 scale codes ``[..., nblocks]``.
        elem: the element format (``ElementFormat``; only ``bits`` matters).
    Returns:
        ``(codes, scales)``: codes with the sign bit set replaced by 0 (int64), scales unchanged (int64).
    """
    c = torch.as_tensor(codes).to(torch.int64)
    s = torch.as_tensor(scales).to(torch.int64)
    sign = (c >> (elem.bits - 1)) & 1
    return torch.where(sign.bool(), torch.zeros_like(c), c), s.clone()


def relu_model_m2xfp(codes, scales, meta) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bit-exact model of ``mx_relu`` with ``M2X = 1``: FP4 codes ``[..., B]``, E8M0 scales, metadata
    ``[..., B/8]`` -> codes with the sign bit set replaced by 0, scales unchanged, the metadata of a
    subgroup whose top-1 lane (largest FP4 magnitude code, lowest index) was negative set to 1."""
    c = torch.as_tensor(codes).to(torch.int64)
    m = torch.as_tensor(meta).to(torch.int64)
    sg = c.shape[:-1] + (c.shape[-1] // 8, 8)
    cs = c.reshape(sg)
    top = (cs & 7).argmax(-1, keepdim=True)                 # first maximum: lowest index
    topneg = (cs.gather(-1, top).squeeze(-1) >> 3) & 1 == 1
    rc = torch.where((c >> 3) & 1 == 1, torch.zeros_like(c), c)
    return rc, torch.as_tensor(scales).to(torch.int64).clone(), torch.where(topneg, torch.ones_like(m), m)


def relu_reference(values: torch.Tensor) -> torch.Tensor:
    """Float reference: ``max(x, 0)`` with +0 for negative zero."""
    return torch.clamp(values, min=0.0) + 0.0


def instance_config(shape, fmt, lanes: int, registered: bool = True) -> tuple[dict, dict, str]:
    """``(jinja_ctx, sv_params, module_name)`` for a ReLU on a tensor of ``shape`` in ``fmt``.

    The template needs no Jinja context (one rendered ``mx_relu`` serves every instance); the
    element width and lane count are SV parameters. ``shape`` is accepted for a uniform
    signature (ReLU is independent of it).
    ``fmt`` may be ``m2xfp4_a`` (``M2X = 1``; ``lanes`` a multiple of 8); NVFP4 and Anda streams are given
    as the MX format of their code element (module docstring).
    """
    from masec.formats.m2xfp import M2XFPActivationFormat

    fmt = resolve_format(fmt)
    check_lanes(fmt, lanes)
    del shape
    params = {"P": lanes, "W": fmt.element.bits, "REG": int(bool(registered))}
    if isinstance(fmt, M2XFPActivationFormat):
        if lanes % 8:
            raise ValueError(f"relu on m2xfp4_a needs lanes a multiple of 8 (the metadata subgroup), got {lanes}")
        params["M2X"] = 1
    return {}, params, "mx_relu"


# ------------------------------------------------------------------------- test stimulus


def finite_codes(elem) -> torch.Tensor:
    """All codes of ``elem`` that decode to a finite value (int: all, incl. the -2.0 code)."""
    vals = elem.decode_codes(elem.all_codes())
    return elem.all_codes()[torch.isfinite(vals)]


def stress_mx(elem, nblocks: int, block: int, gen: torch.Generator, finite: bool = True):
    """Random MX blocks that exercise the corners: ``(codes [nblocks, B], scales [nblocks])`` int64.

    Each block is one of: uniformly random codes; all-zero; max-magnitude codes of both signs;
    small codes only (fp subnormals / int +-1 steps); a mixture with many zeros. Scales are drawn
    from the whole range 0..254 with extra weight on the extremes {0, 1, 2, 125..129, 252, 253, 254}.
    ``finite=True`` excludes NaN/Inf element codes (MX quantisation never produces them).
    """
    pool = finite_codes(elem) if finite else elem.all_codes()
    sign = 1 << (elem.bits - 1)
    maxc = elem.max_code
    small = torch.tensor([1, 2, 3, 1 | sign, 2 | sign, 3 | sign, 0], dtype=torch.int64)
    if elem.kind == "int":
        small = torch.tensor([1, 2, 3, (1 << elem.bits) - 1, (1 << elem.bits) - 2, (1 << elem.bits) - 3, 0])
        big = torch.tensor([maxc, (1 << elem.bits) - maxc, sign, maxc - 1])  # +max, -max, -2.0, below max
    else:
        big = torch.tensor([maxc, maxc | sign, maxc - 1, (maxc - 1) | sign])
    extremes = torch.tensor([0, 1, 2, 125, 126, 127, 128, 129, 252, 253, 254])
    codes = torch.empty(nblocks, block, dtype=torch.int64)
    scales = torch.empty(nblocks, dtype=torch.int64)
    for i in range(nblocks):
        mode = int(torch.randint(0, 6, (1,), generator=gen))
        if mode in (0, 1):
            blk = pool[torch.randint(0, len(pool), (block,), generator=gen)]
        elif mode == 2:
            blk = torch.zeros(block, dtype=torch.int64)
        elif mode == 3:
            blk = big[torch.randint(0, len(big), (block,), generator=gen)]
        elif mode == 4:
            blk = small[torch.randint(0, len(small), (block,), generator=gen)]
        else:
            blk = pool[torch.randint(0, len(pool), (block,), generator=gen)]
            blk = torch.where(torch.rand(block, generator=gen) < 0.6, torch.zeros_like(blk), blk)
        codes[i] = blk
        if bool(torch.rand(1, generator=gen) < 0.4):
            scales[i] = extremes[torch.randint(0, len(extremes), (1,), generator=gen)]
        else:
            scales[i] = torch.randint(0, 255, (1,), generator=gen)
    return codes, scales
