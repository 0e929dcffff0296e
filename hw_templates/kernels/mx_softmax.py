"""Softmax over the last axis of an MX tensor (``mx_softmax``): ``softmax(scale * x)`` with a constant
score scale, an optional causal mask and an optional constant key (padding) mask.

Algorithm: *online* softmax over one buffered row, two passes (docs/kernels/mx_softmax.md):

* pass 1 (as the row streams in; every beat also goes into a row FIFO): u = scale * x * log2(e) in
  fixed point (one constant multiplier U_MUL * 2^-U_SH, :func:`u_constant`); a running **integer** maximum M = max ceil(u) (so rescaling the running sum when M grows is
  an exact right shift, no second exponential unit); running sum S = sum 2^(u - M) in fixed point;
  at the row end 1/S by a seed table + one Newton step;
* pass 2 (the row read back): 2^(u - M) recomputed per lane and multiplied by 1/S, handed to the
  shared quantizer ``mx_quantize`` as exact (m, e) values.

Everything below is the bit-exact model of the RTL. Masked entries (causal: column j > r + OFFSET,
r the row index modulo ROWS; key mask: key_mask[j] == 0; and padding, j >= N) output exact 0 and do
not enter max or sum.

Usage by the compiler::

    ctx, params, module = instance_config(n=64, fmt_in="mxint8", fmt_out="mxint8", lanes=8,
                                          causal=True, rows=64, offset=0, scale=1 / math.sqrt(64),
                                          key_mask=attention_mask_row)   # or None
    render("mx_softmax", module, **ctx)
    codes_out, scales_out = softmax_model(codes, scales, elem_in, elem_out, n=64, lanes=8, causal=True,
                                          rows=64, offset=0, scale=1 / math.sqrt(64),
                                          key_mask=attention_mask_row)
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from masec.hw_templates.kernels.mx_norm import (E8M0_BIAS, _check_geometry, _normalize, _rows, decode_fixed,
                                                elem_param_specs, elem_sv_params, out_param_specs, unit_exp)
from masec.hw_templates.kernels.mx_quantize import _bit_length
from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

# ----------------------------------------------------------------------------- design constants
XI = 12           # integer bits of the fixed-point x (|x| saturates below 2^XI)
XF = 12           # fraction bits of the fixed-point x (floor)
LF = 16           # U_MUL has LF + 1 significant bits: U_MUL in [2^LF, 2^(LF+1))
UF = 12           # fraction bits of u = x * log2(e) (floor)
FB = 6            # 2^f table: 2^FB intervals, linear interpolation on the remaining UF - FB bits
EF = 16           # fraction bits of 2^f in [1, 2)
IMIN = -255       # the integer part of u - M is clamped at IMIN (2^IMIN is below any MX output)
NB = 24           # mantissa bits of the normalized sum for the reciprocal
LB = 7            # reciprocal seed table index bits (128 entries)
YF = 16           # fraction bits of the reciprocal seed / result
EW_OUT = 12       # signed exponent bits of the (m, e) lanes into mx_quantize
L2E = round(math.log2(math.e) * (1 << LF))   # 94548 = U_MUL of scale 1.0 (U_SH = LF)
SCALE_MIN, SCALE_MAX = 2.0 ** -16, 8.0       # supported score scales (U_SH in 13 .. 32)


def u_constant(scale: float = 1.0) -> tuple[int, int]:
    """``(U_MUL, U_SH)`` of the score scale: ``scale * log2(e) ~ U_MUL * 2^-U_SH`` with U_MUL normalized
    to LF + 1 = 17 significant bits, so the constant's relative error is at most 2^-(LF+1) for every
    scale (the same as L2E's for scale 1.0, which gives exactly ``(L2E, LF)``)::

        c     = scale * log2(e)                       (float64)
        U_SH  = LF - floor(log2(c))                    (c * 2^U_SH in [2^LF, 2^(LF+1)))
        U_MUL = round(c * 2^U_SH)                      (2^(LF+1) after rounding -> 2^LF, U_SH - 1)
    """
    scale = float(scale)
    if not (math.isfinite(scale) and SCALE_MIN <= scale <= SCALE_MAX):
        raise ValueError(f"softmax scale {scale} must be in [2^-16, 8]")
    _, ex = math.frexp(scale * math.log2(math.e))   # c = f * 2^ex, f in [1/2, 1)
    sh = LF + 1 - ex
    mul = round(math.ldexp(scale * math.log2(math.e), sh))
    if mul == 1 << (LF + 1):
        mul, sh = 1 << LF, sh - 1
    return mul, sh


def u_width(u_mul: int = L2E, u_sh: int = LF) -> int:
    """Signed bits of u (the SV localparam UW): |u| <= ((2^(XI+XF) - 1) * U_MUL) >> U_SH, plus room for
    ceil(u) = (u + 2^UF - 1) >> UF. 26 for scale 1.0."""
    umax = (((1 << (XI + XF)) - 1) * u_mul) >> (XF + u_sh - UF)
    return (umax + (1 << UF) - 1).bit_length() + 1


def normalize_key_mask(key_mask, n: int) -> tuple[int, ...] | None:
    """The key mask as a tuple of n 0/1 ints (column j kept iff 1), or None for "keep all" (None or all
    ones: both give the unmasked kernel)."""
    if key_mask is None:
        return None
    bits = tuple(int(bool(v)) for v in (key_mask.tolist() if isinstance(key_mask, torch.Tensor) else key_mask))
    if len(bits) != n:
        raise ValueError(f"key_mask has {len(bits)} entries, the row has {n}")
    return None if all(bits) else bits


def logn(n: int) -> int:
    """Extra fraction bits of the running sum: ceil(log2 N) (sum error below 2^-EF relative)."""
    return max(1, (n - 1).bit_length())


def exp2_table() -> tuple[int, ...]:
    """T[i] = round(2^EF * 2^(i / 2^FB)), i = 0 .. 2^FB (the same float expression as the template)."""
    return tuple(int(round((2 ** EF) * 2 ** (i / (2 ** FB)))) for i in range((1 << FB) + 1))


def recip_table() -> tuple[int, ...]:
    """Seed of 1/m, m in [1, 2): round(2^YF / mid) at each of 2^LB interval midpoints."""
    return tuple(int(round((2 ** YF) / (1 + (i + 0.5) / (2 ** LB)))) for i in range(1 << LB))


# ----------------------------------------------------------------------------- arithmetic pieces
def x_fixed(xi: int, ex: int) -> int:
    """x = xi * 2^ex as a signed fixed-point integer with XF fraction bits (floor), saturated to
    (-2^(XI+XF), 2^(XI+XF))."""
    k = ex + XF
    v = xi << k if k >= 0 else xi >> (-k)
    lim = (1 << (XI + XF)) - 1
    return max(-lim, min(lim, v))


def u_of(xfix: int, u_mul: int = L2E, u_sh: int = LF) -> int:
    """u = scale * x * log2(e) = (xfix * U_MUL) >> (XF + U_SH - UF): UF fraction bits (floor)."""
    return (xfix * u_mul) >> (XF + u_sh - UF)


def ceil_int(u: int) -> int:
    return -((-u) >> UF)


def exp2_frac(v: int) -> tuple[int, int]:
    """2^(v / 2^UF) for v <= 0 as ``(E, I)``: value = E * 2^(I - EF), E in [2^EF, 2^(EF+1)),
    I = max(floor(v / 2^UF), IMIN); E from the 2^FB-entry table with linear interpolation (floor)."""
    i_part = v >> UF
    f = v - (i_part << UF)
    t = exp2_table()
    idx, r = f >> (UF - FB), f & ((1 << (UF - FB)) - 1)
    e = t[idx] + (((t[idx + 1] - t[idx]) * r) >> (UF - FB))
    return e, max(i_part, IMIN)


def recip_unit(s: int, sf: int) -> tuple[int, int]:
    """``(Y, er)`` with Y * 2^er ~ 1 / (s * 2^-sf), s > 0: normalize to NB bits (truncate), seed from
    the top LB fraction bits, one Newton step y1 = y0 * (2 - m * y0) with floors."""
    m, sh = _normalize(s, NB)
    idx = (m >> (NB - 1 - LB)) & ((1 << LB) - 1)
    y0 = recip_table()[idx]
    t = (m * y0) >> (NB - 1)
    h = (2 << YF) - t
    y1 = (y0 * h) >> YF
    return y1, sf - sh - (NB - 1) - YF


def keep_mask(n: int, nblk: int, b: int, row: int, causal: bool, rows: int, offset: int,
              key_mask: Sequence[int] | None = None) -> list[bool]:
    """Kept columns of row ``row``: j < n, key_mask[j] (if given) and, causal, j <= row % rows + offset."""
    r = row % rows if causal else 0
    return [j < n and (key_mask is None or bool(key_mask[j])) and (not causal or j <= r + offset)
            for j in range(nblk * b)]


# ----------------------------------------------------------------------------- the model
def softmax_lanes(codes, scales, el, n: int, lanes: int, causal: bool = False, rows: int = 1, offset: int = 0,
                  scale: float = 1.0, key_mask=None):
    """Bit-exact ``(m, e)`` lanes that ``mx_softmax`` hands to its quantizer (rows of nblocks*B).

    ``lanes`` (P): pass 1 updates the running max once per beat of P lanes. Masked lanes: m = e = 0.
    ``scale``: softmax(scale * x) (:func:`u_constant`); ``key_mask``: n entries, 0 = column masked.
    """
    rws, srows, lead, nblk, b = _rows(codes, scales)
    _check_geometry(n, nblk, b)
    if lanes < 1 or b % lanes:
        raise ValueError(f"lanes {lanes} must divide the block size {b}")
    if causal and rows < 1:
        raise ValueError("causal softmax needs rows >= 1")
    mul, sh = u_constant(scale)
    km = normalize_key_mask(key_mask, n)
    xe0 = unit_exp(el)
    ln = logn(n)
    sf = EF + ln
    m_rows, e_rows = [], []
    for ri, (rc, rs) in enumerate(zip(rws, srows)):
        keep = keep_mask(n, nblk, b, ri, causal, rows, offset, km)
        us = []
        for j in range(nblk):
            ex = rs[j] - E8M0_BIAS + xe0
            for i in range(b):
                us.append(u_of(x_fixed(decode_fixed(rc[j][i], el), ex), mul, sh))
        # pass 1: per beat running integer max and rescaled sum
        have, mx, s = False, 0, 0
        for q in range(0, nblk * b, lanes):
            kept = [k for k in range(q, q + lanes) if keep[k]]
            if kept:
                mb = max(ceil_int(us[k]) for k in kept)
                mn = max(mx, mb) if have else mb
                s = s >> (mn - mx) if have else 0
                mx, have = mn, True
                for k in kept:
                    e_, i_ = exp2_frac(us[k] - (mx << UF))
                    s += (e_ << ln) >> (-i_)
        # pass 2
        if have:
            y, er = recip_unit(s, sf)
        else:
            y, er = 0, 0
        mr, erow = [], []
        for k in range(nblk * b):   # (an empty row: M = 0, Y = 0, every lane masked)
            e_, i_ = exp2_frac(us[k] - (mx << UF))
            mr.append(e_ * y if keep[k] else 0)
            erow.append(i_ - EF + er if keep[k] else 0)
        m_rows.append(mr)
        e_rows.append(erow)
    return m_rows, e_rows


def _exp2_t(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorized :func:`exp2_frac`."""
    t = torch.tensor(exp2_table(), dtype=torch.int64)
    i_part = v >> UF
    f = v - (i_part << UF)
    idx, r = f >> (UF - FB), f & ((1 << (UF - FB)) - 1)
    e = t[idx] + (((t[idx + 1] - t[idx]) * r) >> (UF - FB))
    return e, i_part.clamp(min=IMIN)


def softmax_lanes_t(codes, scales, el, n: int, lanes: int, causal: bool = False, rows: int = 1,
                    offset: int = 0, scale: float = 1.0, key_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorized (torch int64) :func:`softmax_lanes`: ``(m, e)`` of shape ``[rows, nblocks * B]``,
    bit-identical to the scalar model (test_vectorized_model_equals_scalar_model)."""
    c = torch.as_tensor(codes).to(torch.int64)
    s = torch.as_tensor(scales).to(torch.int64)
    nblk, b = c.shape[-2], c.shape[-1]
    _check_geometry(n, nblk, b)
    if lanes < 1 or b % lanes:
        raise ValueError(f"lanes {lanes} must divide the block size {b}")
    c = c.reshape(-1, nblk, b)
    s = s.reshape(-1, nblk)
    nrows = c.shape[0]
    lut = torch.tensor([decode_fixed(k, el) for k in range(1 << el.bits)], dtype=torch.int64)
    xi = lut[c]
    k = (s - E8M0_BIAS + unit_exp(el) + XF).unsqueeze(-1).expand_as(xi)
    lim = (1 << (XI + XF)) - 1
    left = xi << k.clamp(0, XI + XF)
    right = xi >> (-k).clamp(0, 63)
    v = torch.where(k > XI + XF, xi.sign() * lim, torch.where(k >= 0, left, right)).clamp(-lim, lim)
    mul, sh = u_constant(scale)
    u = ((v * mul) >> (XF + sh - UF)).reshape(nrows, nblk * b)
    cu = -((-u) >> UF)
    j = torch.arange(nblk * b)
    cols = j < n
    km = normalize_key_mask(key_mask, n)
    if km is not None:
        cols = cols & torch.tensor(km + (0,) * (nblk * b - n), dtype=torch.bool)
    if causal:
        r = (torch.arange(nrows) % rows).unsqueeze(-1)
        keep = cols.unsqueeze(0) & (j.unsqueeze(0) <= r + offset)
    else:
        keep = cols.unsqueeze(0).expand(nrows, -1)
    ln = logn(n)
    have = torch.zeros(nrows, dtype=torch.bool)
    mx = torch.zeros(nrows, dtype=torch.int64)
    acc = torch.zeros(nrows, dtype=torch.int64)
    very_low = -(1 << 40)
    for q in range(0, nblk * b, lanes):
        kq = keep[:, q:q + lanes]
        anyk = kq.any(-1)
        bmax = torch.where(kq, cu[:, q:q + lanes], torch.full_like(kq, very_low, dtype=torch.int64)).amax(-1)
        mn = torch.where(anyk, torch.where(have, torch.maximum(mx, bmax), bmax), mx)
        acc = torch.where(anyk & have, acc >> (mn - mx).clamp(0, 63), acc)
        e_, i_ = _exp2_t(u[:, q:q + lanes] - (mn << UF).unsqueeze(-1))
        term = ((e_ << ln) >> (-i_).clamp(0, 63))
        acc = acc + torch.where(kq, term, torch.zeros_like(term)).sum(-1)
        mx, have = mn, have | anyk
    # reciprocal of the sum
    sp = acc.clamp(min=1)
    L = _bit_length(sp) - 1
    sh = L - (NB - 1)
    m = torch.where(sh >= 0, sp >> sh.clamp(min=0), sp << (-sh).clamp(min=0))
    idx = (m >> (NB - 1 - LB)) & ((1 << LB) - 1)
    y0 = torch.tensor(recip_table(), dtype=torch.int64)[idx]
    t = (m * y0) >> (NB - 1)
    y1 = (y0 * ((2 << YF) - t)) >> YF
    er = EF + ln - sh - (NB - 1) - YF
    y1 = torch.where(have, y1, torch.zeros_like(y1))
    er = torch.where(have, er, torch.zeros_like(er))
    e_, i_ = _exp2_t(u - (mx << UF).unsqueeze(-1))
    mo = torch.where(keep, e_ * y1.unsqueeze(-1), torch.zeros_like(e_))
    eo = torch.where(keep, i_ - EF + er.unsqueeze(-1), torch.zeros_like(i_))
    return mo, eo


def softmax_model(codes, scales, el, el_out, n: int, lanes: int, causal: bool = False, rows: int = 1,
                  offset: int = 0, scale: float = 1.0, key_mask=None):
    """Bit-exact model of ``mx_softmax``: output ``(codes [..., nblocks, B], scales [..., nblocks])``.

    Args:
        codes, scales: input MX tensor ``[..., nblocks, B]`` / ``[..., nblocks]`` (rows of ``n``).
        el, el_out: input / output element formats.
        lanes: P of the instance (the running max is per beat).
        causal, rows, offset: row r (counted over all rows, modulo ``rows``) keeps columns
            j <= r + offset; masked entries output 0.
        scale: softmax(scale * x), scale in [2^-16, 8] (e.g. 1/sqrt(head_dim)); 1.0 is the plain softmax.
        key_mask: None, or n entries (sequence or tensor), 0 = column masked in every row (padding).
    """
    from masec.hw_templates.kernels.mx_quantize import quantize_blocks

    c = torch.as_tensor(codes)
    nblk, b = c.shape[-2], c.shape[-1]
    m, e = softmax_lanes_t(codes, scales, el, n, lanes, causal, rows, offset, scale, key_mask)
    oc, os_ = quantize_blocks(m.reshape(-1, nblk, b), e.reshape(-1, nblk, b), el_out)
    return oc.reshape(c.shape), os_.reshape(c.shape[:-1])


def softmax_reference(x: torch.Tensor, causal: bool = False, rows: int = 1, offset: int = 0,
                      scale: float = 1.0, key_mask=None) -> torch.Tensor:
    """float64 softmax(scale * x) over the last axis with the same mask conventions (masked -> 0)."""
    x = x.to(torch.float64) * float(scale)
    flat = x.reshape(-1, x.shape[-1])
    n = flat.shape[-1]
    if causal:
        r = torch.arange(flat.shape[0]).unsqueeze(-1) % rows
        mask = torch.arange(n).unsqueeze(0) <= r + offset
    else:
        mask = torch.ones_like(flat, dtype=torch.bool)
    km = normalize_key_mask(key_mask, n)
    if km is not None:
        mask = mask & torch.tensor(km, dtype=torch.bool).unsqueeze(0)
    y = torch.where(mask, flat, torch.tensor(float("-inf"), dtype=torch.float64)).softmax(-1)
    y = torch.nan_to_num(y, nan=0.0)   # fully masked rows -> 0
    return y.reshape(x.shape)


# ----------------------------------------------------------------------------- configuration
def sim_params(n: int, el, el_out, lanes: int, block: int, causal: bool = False, rows: int = 1,
               offset: int = 0, scale: float = 1.0, pipe: int | None = None) -> dict:
    """SV parameters of an instance (the key mask is not one of them: see :func:`jinja_ctx`; ``PIPE``
    only when ``pipe`` is given)."""
    from masec.hw_templates.kernels.mx_quantize import element_sv_params

    mul, sh = u_constant(scale)
    params = {"P": lanes, "B": block, "N": n, **elem_sv_params(el, "X"), **element_sv_params(el_out, "Y_"),
              "CAUSAL": int(bool(causal)), "ROWS": max(1, rows), "OFFSET": int(offset), "U_MUL": mul, "U_SH": sh}
    if pipe is not None:
        params["PIPE"] = _check_pipe(pipe)
    return params


# ----------------------------------------------------------------------------- pipelining (PIPE)
#: Largest PIPE the template has cuts for (3: mx_softmax's own cuts stop at 2, mx_quantize's go to 3).
MAX_PIPE = 3


def _check_pipe(pipe) -> int:
    return check_pipe(pipe, MAX_PIPE, "mx_softmax")


def softmax_latency(pipe: int) -> int:
    """Cycles ``PIPE`` adds to an mx_softmax instance: pass 1 (accepted beat, u product, max tree,
    exp2 product, sum tree: 5 at PIPE 1; also u before the max tree and the running max: 7 at
    PIPE 2; also x before the shift to fixed point, ceil(u) before the max tree, the exp2 product
    before its add and the sum terms before the sum tree: 11 at PIPE 3), the row end (sum normalization, m * y0: 2; also the
    seed before m * y0: 3 at PIPE 3), pass 2 (u and exp2 products: 2; also x before the shift, the
    exp2 product before its add and the output FIFO before the quantizer: 5 at PIPE 3) and
    mx_quantize's ``latency(PIPE)`` (2 * PIPE, + 1 at PIPE 3)."""
    from masec.hw_templates.kernels.mx_quantize import latency as quantize_latency

    pipe = _check_pipe(pipe)
    return (0, 5, 7, 11)[pipe] + (0, 2, 2, 3)[pipe] + (0, 2, 2, 5)[pipe] + quantize_latency(pipe)


def latency(params: dict) -> int:
    """``SPEC.extra["latency"]`` of mx_softmax: cycles over ``PIPE = 0`` at SV ``params``."""
    return softmax_latency(params.get("PIPE", 0))


def lane_latency(params: dict) -> int:
    """``SPEC.extra["latency"]`` of mx_softmax_u (before the product; at PIPE 3 also before the shift
    to fixed point) and mx_softmax_exp2 (before the product; at PIPE 3 also after it): one register
    from PIPE 1, two at PIPE 3."""
    return (0, 1, 1, 2)[_check_pipe(params.get("PIPE", 0))]


def jinja_ctx(n: int, key_mask=None) -> dict:
    """``{}`` without a key mask, else ``{"key_mask": (n 0/1 ints, column j at index j)}``: the template
    renders it as the default of the N-bit SV parameter KEY_MASK, so no tool has to pass an N-bit
    ``-G`` value or wide literal (Verilator's ``-G`` truncates decimals to 32 bits)."""
    km = normalize_key_mask(key_mask, n)
    return {} if km is None else {"key_mask": km}


def module_name(n: int, key_mask=None) -> str:
    """``mx_softmax``, or ``mx_softmax_km<10 hex digits of sha1 of the mask bits>`` for a key mask (one
    rendered module per distinct mask; the same mask always gives the same name)."""
    km = normalize_key_mask(key_mask, n)
    if km is None:
        return "mx_softmax"
    return "mx_softmax_km" + hashlib.sha1("".join(map(str, km)).encode()).hexdigest()[:10]


def instance_config(n: int, fmt_in, fmt_out, lanes: int, causal: bool = False, rows: int = 1, offset: int = 0,
                    block_size: int | None = None, *, scale: float = 1.0,
                    key_mask=None) -> tuple[dict, dict, str]:
    """``(jinja_ctx, sv_params, module_name)`` of an ``mx_softmax`` instance over rows of ``n``.

    Render with ``render("mx_softmax", module_name, **jinja_ctx)``. Without a key mask the context is
    empty and the module is ``mx_softmax``; with one, the mask is rendered into the module (KEY_MASK's
    default) and the module is named after it (:func:`module_name`). Everything else is an SV
    parameter. For attention scores ``[heads, T, T]`` with a causal mask: ``rows = T``, ``offset = 0``
    (or the KV-cache position for a decode step); ``scale = 1 / sqrt(head_dim)`` folds the score
    scale into the kernel; ``key_mask`` (n entries, 0 = padded key) masks columns in every row.
    """
    from masec.hw_templates.kernels.mx_norm import _resolve

    fi = _resolve(fmt_in, block_size)
    fo = _resolve(fmt_out, fi.block_size)
    if fo.block_size != fi.block_size:
        raise ValueError("input and output formats must share the block size")
    if lanes < 1 or fi.block_size % lanes:
        raise ValueError(f"lanes {lanes} must divide the block size {fi.block_size}")
    return (jinja_ctx(n, key_mask), sim_params(n, fi.element, fo.element, lanes, fi.block_size, causal, rows,
                                               offset, scale), module_name(n, key_mask))


def _example(n: int, lanes: int, causal: bool, scale: float = 1.0, pipe: int | None = None) -> dict:
    from masec.formats.element import INT8

    return sim_params(n, INT8, INT8, lanes, 32, causal, n if causal else 1, 0, scale, pipe)


SPECS = (KernelSpec(
    name="mx_softmax_u",
    template="mx_softmax_u.sv.j2",
    doc="One lane of u = s * x * log2(e) for mx_softmax: MX code + scale -> fixed point (12.12, saturating) "
        "times U_MUL * 2^-U_SH = round(s * log2(e) * 2^U_SH) * 2^-U_SH, 12 fraction bits; combinational.",
    params=(*elem_param_specs("X", "element"),
            ParamSpec("U_MUL", "round(s * log2(e) * 2^U_SH), in [2^16, 2^17) (u_constant)", L2E),
            ParamSpec("U_SH", "shift of the constant: 16 - floor(log2(s * log2(e)))", LF),
            ParamSpec("UW", "signed bits of u (u_width); the default is the minimum", 26),
            ParamSpec("PIPE", "0: combinational; >= 1: x registered before the product (+1 cycle); "
                              "3: also before the shift to fixed point (+2 cycles)", 0)),
    model=f"{__name__}:u_of",
    examples=({"label": "int8", "ctx": {}, "params": {}},
              {"label": "int8 PIPE1", "ctx": {}, "params": {"PIPE": 1}},
              {"label": "int8 PIPE3", "ctx": {}, "params": {"PIPE": 3}}),
    extra={"latency": lane_latency, "max_pipe": MAX_PIPE},
), KernelSpec(
    name="mx_softmax_exp2",
    template="mx_softmax_exp2.sv.j2",
    doc="2^(v / 2^12) for v <= 0 as E * 2^(I - 16): 64-entry table + linear interpolation; combinational.",
    params=(ParamSpec("VW", "bits of the signed operand", 28), ParamSpec("IMIN", "clamp of the integer part", -255),
            ParamSpec("PIPE", "0: combinational; >= 1: table entries registered before the product (+1 cycle); "
                              "3: also the product before the add (+2 cycles)", 0)),
    model=f"{__name__}:exp2_frac",
    examples=({"label": "VW28", "ctx": {}, "params": {"VW": 28}},
              {"label": "VW28 PIPE1", "ctx": {}, "params": {"VW": 28, "PIPE": 1}},
              {"label": "VW28 PIPE3", "ctx": {}, "params": {"VW": 28, "PIPE": 3}}),
    extra={"latency": lane_latency, "max_pipe": MAX_PIPE},
), KernelSpec(
    name="mx_softmax",
    template="mx_softmax.sv.j2",
    doc="softmax(s * x) over rows of N elements (online: integer running max, exact-shift rescale), constant "
        "score scale s, optional causal and constant key masks; base-2 exp with a 64-entry table + linear interpolation, 1/sum by seed + Newton; "
        "row FIFO, 1 beat/cycle, output via mx_quantize; PIPE 0..3 adds softmax_latency(PIPE) cycles.",
    params=(ParamSpec("P", "lanes per beat; divides B", 4),
            ParamSpec("B", "MX block size (power of two)", 32),
            ParamSpec("N", "row length; ceil(N/B) blocks per row, last one zero-padded", 64),
            *elem_param_specs("X", "input element"),
            *out_param_specs(),
            ParamSpec("CAUSAL", "1: row r keeps columns j <= r + OFFSET (others output 0)", 0),
            ParamSpec("ROWS", "rows per matrix: r = row counter modulo ROWS", 1),
            ParamSpec("OFFSET", "causal offset (signed)", 0),
            ParamSpec("U_MUL", "score scale s: round(s * log2(e) * 2^U_SH) (u_constant)", L2E),
            ParamSpec("U_SH", "score scale s: 16 - floor(log2(s * log2(e)))", LF),
            ParamSpec("KEY_MASK", "N bits, 0 = column masked in every row; default all ones or the rendered "
                                  "Jinja key_mask (jinja_ctx)", None),
            ParamSpec("PIPE", "pipeline depth 0..3 (latency + softmax_latency(PIPE))", 0)),
    ports=(PortSpec("s_x", "in", "mx", "input rows, P lanes of X_BITS codes + E8M0 scale"),
           PortSpec("m_y", "out", "mx", "softmax rows, P lanes of Y_BITS codes + E8M0 scale")),
    deps=("mx_softmax_u", "mx_softmax_exp2", "mx_quantize", "stream_fifo"),
    ops=("softmax",),
    model=f"{__name__}:softmax_model",
    examples=({"label": "N64 mxint8 P4 causal", "ctx": {}, "params": _example(64, 4, True)},
              {"label": "N64 mxint8 P16", "ctx": {}, "params": _example(64, 16, False)},
              {"label": "N256 mxint8 P32 causal", "ctx": {}, "params": _example(256, 32, True)},
              {"label": "N72 mxint8 P8 causal scale 1/sqrt(8) key mask", "ctx": jinja_ctx(72, [1] * 60 + [0] * 12),
               "params": _example(72, 8, True, 1 / math.sqrt(8))},
              {"label": "N64 mxint8 P4 scale 4", "ctx": {}, "params": _example(64, 4, False, 4.0)},
              # pipelined: the PIPE of a 5 ns (2) and a 3 ns (3) clock
              {"label": "N64 mxint8 P16 PIPE2", "ctx": {}, "params": _example(64, 16, False, pipe=2)},
              {"label": "N64 mxint8 P16 PIPE3", "ctx": {}, "params": _example(64, 16, False, pipe=3)},
              {"label": "N256 mxint8 P32 causal PIPE3", "ctx": {}, "params": _example(256, 32, True, pipe=3)}),
    extra={"latency": latency, "max_pipe": MAX_PIPE},
),
)
