"""RMSNorm (``mx_rmsnorm``) and LayerNorm (``mx_layernorm``) over the last axis of MX tensors.

Both kernels buffer one row while they reduce it (pass 1, as the row streams in), then scale the
buffered row (pass 2) and hand exact per-lane values ``m * 2^e`` to the shared output quantizer
``mx_quantize``. Everything below is the bit-exact model of the RTL; docs/kernels/mx_norm.md
explains the arithmetic with its widths and measured error.

Usage by the compiler::

    ctx, params, module = instance_config("rmsnorm", n=64, fmt_in="mxint8", fmt_out="mxint8",
                                          fmt_param="mxfp8_e4m3", lanes=8, eps=1e-5,
                                          gamma_mem="gamma.mem")
    render("mx_rmsnorm", module, **ctx)   # + deps rendered by render_with_deps
    Path("gamma.mem").write_text(pack_gamma_mem(g_codes, g_scales, g_elem))
    codes_out, scales_out = rmsnorm_model(codes, scales, elem_in, g_codes, g_scales, g_elem,
                                          elem_out, n=64, eps=1e-5)

Notation: an element code decodes to an integer "fixed-point" value ``xi`` with the element's
unit exponent ``XE`` (value = xi * 2^(XE + scale - 127)), see :func:`decode_fixed`; or to a
lane-local float ``sig * 2^exp`` (:func:`decode_float`). NaN/Inf codes are not special: their bit
patterns decode like finite codes (MX quantisation never produces them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import torch

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

# ----------------------------------------------------------------------------- design constants
G1 = 8            # guard bits of the first-moment row accumulator (LayerNorm)
G2 = 2 * G1       # guard bits of the second-moment row accumulator (both norms)
NMB = 24          # mantissa bits of the normalized rsqrt operand (and of the N*eps constant)
LUT_BITS = 7      # fraction bits of the operand that index the rsqrt seed table (2 * 2^7 entries)
YF = 16           # fraction bits of the rsqrt seed / Newton result
RW = YF + 2       # bits of the unsigned rsqrt result R (row constant)
CB = 17           # mantissa bits of the sqrt(N) constant
IB = 26           # mantissa bits of the 1/N constant (LayerNorm mean: 2^-26 relative)
MUB = 24          # signed bits of the normalized mean (LayerNorm)
DW = 20           # magnitude bits of the aligned x - mean window (LayerNorm); d is DW + 1 signed bits
YW = 24           # magnitude bits of the aligned d*R*gamma + beta window (LayerNorm); y is YW + 1 signed
EW_OUT = 12       # signed exponent bits of the (m, e) lanes into mx_quantize
NEG_TOP = -1024   # "no non-zero operand" exponent in the LayerNorm alignments
E8M0_BIAS = 127


# ----------------------------------------------------------------------------- element decoding
def elem_is_int(el) -> bool:
    return el.kind == "int"


def fixed_width(el) -> int:
    """Signed bits of the fixed-point integer ``xi`` of any code of ``el`` (int: bits; fp: mbits + 2^ebits)."""
    return el.bits if elem_is_int(el) else el.mbits + (1 << el.ebits)


def unit_exp(el) -> int:
    """Exponent of one unit of ``xi``: int -(bits-2); fp 1 - bias - mbits."""
    return -(el.bits - 2) if elem_is_int(el) else 1 - el.bias - el.mbits


def decode_fixed(code: int, el) -> int:
    """Signed integer ``xi`` with code value = xi * 2^unit_exp(el) (exact; int code -2^(bits-1) decodes too)."""
    code = int(code)
    if elem_is_int(el):
        return code - (1 << el.bits) if code >> (el.bits - 1) else code
    sign = code >> (el.bits - 1)
    ef = (code >> el.mbits) & ((1 << el.ebits) - 1)
    mf = code & ((1 << el.mbits) - 1)
    mag = mf if ef == 0 else ((1 << el.mbits) | mf) << (ef - 1)
    return -mag if sign else mag


def decode_float(code: int, el) -> tuple[int, int]:
    """``(sig, exp)`` with code value = sig * 2^exp: the lane-local form used for products."""
    code = int(code)
    if elem_is_int(el):
        return decode_fixed(code, el), unit_exp(el)
    sign = code >> (el.bits - 1)
    ef = (code >> el.mbits) & ((1 << el.ebits) - 1)
    mf = code & ((1 << el.mbits) - 1)
    sig = mf if ef == 0 else (1 << el.mbits) | mf
    return (-sig if sign else sig), max(ef, 1) - el.bias - el.mbits


def float_sig_width(el) -> int:
    """Signed bits of ``sig`` from :func:`decode_float`."""
    return el.bits if elem_is_int(el) else el.mbits + 2


def elem_sv_params(el, prefix: str) -> dict:
    """Element description as SV parameters ``<prefix>_IS_INT/_BITS/_EBITS/_MBITS/_BIAS``."""
    return {f"{prefix}_IS_INT": int(elem_is_int(el)), f"{prefix}_BITS": int(el.bits),
            f"{prefix}_EBITS": int(el.ebits), f"{prefix}_MBITS": int(el.mbits), f"{prefix}_BIAS": int(el.bias)}


# ----------------------------------------------------------------------------- constants
def _norm_const(x: Fraction, bits: int) -> tuple[int, int]:
    """Round x > 0 to nearest (ties even) as (M, E): x ~ M * 2^E with 2^(bits-1) <= M < 2^bits."""
    if x <= 0:
        raise ValueError("constant must be positive")
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** e > x:
        e -= 1
    sh = bits - 1 - e                      # M = x * 2^sh in [2^(bits-1), 2^bits)
    t = x * Fraction(2) ** sh
    m = math.floor(t)
    r = t - m
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and m % 2 == 1):
        m += 1
    if m == 1 << bits:
        m >>= 1
        sh -= 1
    return m, -sh


def _sqrt_fraction(n: int, bits: int) -> tuple[int, int]:
    """sqrt(n) rounded to nearest as (M, E) with ``bits``-bit M (exact integer square root)."""
    # sqrt(n) * 2^sh with sh chosen so the result has bits+2 bits; round from isqrt with a remainder test
    e = (n.bit_length() - 1) // 2
    sh = bits - 1 - e
    while True:
        scaled = n << (2 * sh) if sh >= 0 else n >> (-2 * sh)
        m = math.isqrt(scaled)
        if m >= 1 << bits:
            sh -= 1
            continue
        if m < 1 << (bits - 1):
            sh += 1
            continue
        break
    # nearest: compare (m + 1/2)^2 with scaled  <=>  (2m+1)^2 with 4*scaled
    if sh < 0 and (n & ((1 << (-2 * sh)) - 1)):
        raise ValueError("sqrt constant needs a non-negative shift")
    if (2 * m + 1) ** 2 < 4 * scaled:     # never a tie: (2m+1)^2 is odd
        m += 1
    if m == 1 << bits:
        m >>= 1
        sh -= 1
    return m, -sh


@dataclass(frozen=True)
class NormConsts:
    """Row-length and eps constants of one norm instance (SV parameters of the RTL)."""
    n: int
    eps: float
    eps_m: int     # N*eps ~ eps_m * 2^eps_e, eps_m NMB bits (round to nearest even)
    eps_e: int
    sqn_m: int     # sqrt(N) ~ sqn_m * 2^sqn_e, CB bits
    sqn_e: int
    inv_m: int     # 1/N ~ inv_m * 2^inv_e, IB bits
    inv_e: int

    def sv_params(self) -> dict:
        return {"EPS_M": self.eps_m, "EPS_E": self.eps_e, "SQN_M": self.sqn_m, "SQN_E": self.sqn_e,
                "INV_M": self.inv_m, "INV_E": self.inv_e}


@lru_cache(maxsize=None)
def norm_consts(n: int, eps: float) -> NormConsts:
    if n < 1:
        raise ValueError(f"row length N must be >= 1, got {n}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    em, ee = _norm_const(Fraction(eps) * n, NMB)
    sm, se = _sqrt_fraction(n, CB)
    im, ie = _norm_const(Fraction(1, n), IB)
    return NormConsts(n, float(eps), em, ee, sm, se, im, ie)


@lru_cache(maxsize=1)
def rsqrt_lut() -> tuple[int, ...]:
    """Seed table: index {odd, f[LUT_BITS]} -> round(2^YF / sqrt(m')) at the interval midpoint,
    m' = (1 + (f + 1/2) / 2^LUT_BITS) * (2 if odd else 1)."""
    out = []
    for odd in (0, 1):
        for f in range(1 << LUT_BITS):
            # the same float expression as the template's Jinja (tests compare the rendered table)
            mid = (1 + (f + 0.5) / (2 ** LUT_BITS)) * (2 if odd else 1)
            out.append(int(round((2 ** YF) / (mid ** 0.5))))
    return tuple(out)


# ----------------------------------------------------------------------------- pass 1: row statistics
def block_sums(xis: list[int]) -> tuple[int, int]:
    """(sum xi, sum xi^2) of one block (exact integers)."""
    return sum(xis), sum(x * x for x in xis)


def accumulate_row(blocks: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """Combine per-block ``(s1, q, scale)`` into the row accumulators ``(A1, A2, sa)``.

    The accumulators keep the exponent of the largest non-zero block seen so far (``sa``); a block
    at a smaller scale is aligned by an arithmetic right shift (floor), a larger one shifts the
    accumulators instead. Value: sum x = A1 * 2^(c - G1), sum x^2 = A2 * 2^(2c - G2) with
    c = sa - 127 + unit_exp. Blocks with q == 0 (all zero) are skipped.
    """
    a1 = a2 = sa = 0
    for s1, q, s in blocks:
        if q == 0:
            continue
        if s > sa:
            d = s - sa
            a1 = (a1 >> d) + (s1 << G1)
            a2 = (a2 >> (2 * d)) + (q << G2)
            sa = s
        else:
            d = sa - s
            a1 = a1 + ((s1 << G1) >> d)
            a2 = a2 + ((q << G2) >> (2 * d))
    return a1, a2, sa


def layernorm_var(a1: int, a2: int, k: NormConsts) -> tuple[int, int]:
    """``(mu, vn)``: mu = A1 * INV_M (mean = mu * 2^(c - G1 + INV_E));
    vn = max(A2 - floor(A1 * mu * 2^INV_E), 0) (N * var = vn * 2^(2c - G2))."""
    mu = a1 * k.inv_m
    vn = a2 - ((a1 * mu) >> (-k.inv_e))
    return mu, max(vn, 0)


def _normalize(v: int, bits: int) -> tuple[int, int]:
    """v > 0 -> (M, sh) with M = v shifted to exactly ``bits`` bits (truncating) and v ~ M * 2^sh."""
    L = v.bit_length() - 1
    if L >= bits - 1:
        return v >> (L - bits + 1), L - bits + 1
    return v << (bits - 1 - L), L - bits + 1


def rsqrt_unit(v: int, ev: int, k: NormConsts) -> tuple[int, int]:
    """The reciprocal-square-root unit: ``(R, er)`` with R * 2^er ~ sqrt(N) / sqrt(v * 2^ev + N*eps).

    1. normalize v to NMB bits (truncate): M * 2^t;
    2. add N*eps = EPS_M * 2^EPS_E: align the smaller operand by a right shift (truncate), add,
       renormalize a carry by one right shift (truncate); v == 0 gives N*eps;
    3. m' = S / 2^(NMB-1) * (2 if the binade u is odd), u' = u - odd (even);
    4. seed Y0 = LUT[odd, top LUT_BITS fraction bits], YF fraction bits;
    5. one Newton step: t = (Mi * Y0^2) >> (NMB-1 + YF); h = 3*2^YF - t; Y1 = (Y0 * h) >> (YF + 1);
    6. R = (Y1 * SQN_M) >> (CB - 1); er = SQN_E + CB - 1 - YF - u'/2.
    """
    if v > 0:
        m, sh = _normalize(v, NMB)
        t = ev + sh
        if t >= k.eps_e:
            s, T = m + (k.eps_m >> (t - k.eps_e)), t
        else:
            s, T = k.eps_m + (m >> (k.eps_e - t)), k.eps_e
        if s >> NMB:
            s, T = s >> 1, T + 1
    else:
        s, T = k.eps_m, k.eps_e
    u = T + NMB - 1
    odd = u & 1
    mi = s << odd
    up = u - odd
    idx = (odd << LUT_BITS) | ((s >> (NMB - 1 - LUT_BITS)) & ((1 << LUT_BITS) - 1))
    y0 = rsqrt_lut()[idx]
    t2 = (mi * y0 * y0) >> (NMB - 1 + YF)
    h = (3 << YF) - t2
    y1 = (y0 * h) >> (YF + 1)
    r = (y1 * k.sqn_m) >> (CB - 1)
    er = k.sqn_e + CB - 1 - YF - up // 2
    return r, er


# ----------------------------------------------------------------------------- helpers on tensors
def _rows(codes, scales):
    c = torch.as_tensor(codes).to(torch.int64)
    s = torch.as_tensor(scales).to(torch.int64)
    if c.dim() < 2 or c.shape[:-1] != s.shape:
        raise ValueError(f"codes {tuple(c.shape)} / scales {tuple(s.shape)}: expected [..., nblocks, B] / [..., nblocks]")
    lead = tuple(c.shape[:-2])
    nblk, b = c.shape[-2], c.shape[-1]
    return c.reshape(-1, nblk, b).tolist(), s.reshape(-1, nblk).tolist(), lead, nblk, b


def _check_param(codes, scales, nblk: int, b: int, what: str):
    c = torch.as_tensor(codes).to(torch.int64).reshape(-1)
    s = torch.as_tensor(scales).to(torch.int64).reshape(-1)
    if c.numel() != nblk * b or s.numel() != nblk:
        raise ValueError(f"{what}: expected {nblk} blocks of {b} codes, got {c.numel()} codes / {s.numel()} scales")
    return c.reshape(nblk, b).tolist(), s.tolist()


def _row_xis(row_codes, el, n: int, b: int) -> list[list[int]]:
    out = []
    for j, blk in enumerate(row_codes):
        out.append([decode_fixed(c, el) if j * b + i < n else 0 for i, c in enumerate(blk)])
    return out


def _quantize_rows(m_rows, e_rows, el_out, lead, nblk, b):
    from masec.hw_templates.kernels.mx_quantize import quantize_block

    codes, scales = [], []
    for mr, er in zip(m_rows, e_rows):
        for j in range(nblk):
            c, s = quantize_block(mr[j * b:(j + 1) * b], er[j * b:(j + 1) * b], el_out)
            codes.append(c)
            scales.append(s)
    ct = torch.tensor(codes, dtype=torch.int64).reshape(*lead, nblk, b)
    st = torch.tensor(scales, dtype=torch.int64).reshape(*lead, nblk)
    return ct, st


# ----------------------------------------------------------------------------- RMSNorm model
def rmsnorm_lanes(codes, scales, el, g_codes, g_scales, g_el, n: int, eps: float = 1e-5):
    """Bit-exact ``(m, e)`` lanes that ``mx_rmsnorm`` hands to its quantizer.

    Args:
        codes, scales: input MX tensor ``[..., nblocks, B]`` / ``[..., nblocks]``, row length ``n``
            (``nblocks = ceil(n / B)``; elements at index >= n are ignored).
        el: input element format; g_codes/g_scales/g_el: gamma, one row ``[nblocks, B]`` / ``[nblocks]``.
    Returns:
        ``(m, e)``: lists of rows, each a list of ``nblocks * B`` ints (padding lanes m = 0).

    Per row: A2 from :func:`accumulate_row`, (R, er) = rsqrt_unit(A2, 2c - G2); per lane with
    x = sx * 2^ex (decode_float), gamma = sg * 2^eg: m = sx * R * sg, e = ex + sx_scale - 127 + er + eg + g_scale - 127.
    """
    rows, srows, lead, nblk, b = _rows(codes, scales)
    _check_geometry(n, nblk, b)
    gc, gs = _check_param(g_codes, g_scales, nblk, b, "gamma")
    k = norm_consts(n, eps)
    xe0 = unit_exp(el)
    gam = [[decode_float(c, g_el) for c in blk] for blk in gc]
    m_rows, e_rows = [], []
    for rc, rs in zip(rows, srows):
        xis = _row_xis(rc, el, n, b)
        _, a2, sa = accumulate_row([(*block_sums(x), s) for x, s in zip(xis, rs)])
        c = sa - E8M0_BIAS + xe0
        r, er = rsqrt_unit(a2, 2 * c - G2, k)
        mr, erow = [], []
        for j in range(nblk):
            for i in range(b):
                idx = j * b + i
                code = rc[j][i] if idx < n else 0
                sx, ex = decode_float(code, el)
                sg, eg = gam[j][i]
                mr.append(sx * r * sg)
                erow.append(ex + rs[j] - E8M0_BIAS + er + eg + gs[j] - E8M0_BIAS)
        m_rows.append(mr)
        e_rows.append(erow)
    return m_rows, e_rows


def rmsnorm_model(codes, scales, el, g_codes, g_scales, g_el, el_out, n: int, eps: float = 1e-5):
    """Bit-exact model of ``mx_rmsnorm``: ``(codes [..., nblocks, B], scales [..., nblocks])`` of the output."""
    m, e = rmsnorm_lanes(codes, scales, el, g_codes, g_scales, g_el, n, eps)
    _, _, lead, nblk, b = _rows(codes, scales)
    return _quantize_rows(m, e, el_out, lead, nblk, b)


def rmsnorm_model_format(codes, scales, el, g_codes, g_scales, g_el, n: int, eps: float = 1e-5, y_qfmt: int = 0,
                         el_out=None, y_ts_exp: int = 0):
    """Bit-exact model of ``mx_rmsnorm`` with the output stage in mode ``Y_QFMT`` (mx_quantize's ``QFMT``:
    0 MX in ``el_out``, 1 M2XFP activations, 2 NVFP4 with tensor scale ``2^y_ts_exp``, 3 Anda with
    ``el_out = int_element(M + 1)``): ``(codes [..., nblocks, B], scales [..., nblocks], meta)``, meta the
    M2XFP subgroup metadata ``[..., nblocks, B / 8]`` (None otherwise). The lanes are the same
    :func:`rmsnorm_lanes`; only the quantizer differs."""
    from masec.hw_templates.kernels.mx_quantize import QFMT_MX, quantize_blocks_format

    if y_qfmt == QFMT_MX:
        return (*rmsnorm_model(codes, scales, el, g_codes, g_scales, g_el, el_out, n, eps), None)
    m, e = rmsnorm_lanes(codes, scales, el, g_codes, g_scales, g_el, n, eps)
    _, _, lead, nblk, b = _rows(codes, scales)
    mt = torch.tensor(m, dtype=torch.int64).reshape(*lead, nblk, b)
    et = torch.tensor(e, dtype=torch.int64).reshape(*lead, nblk, b)
    return quantize_blocks_format(mt, et, y_qfmt, el_out, y_ts_exp)


# ----------------------------------------------------------------------------- LayerNorm model
def _shift(v: int, k: int) -> int:
    """v * 2^k for k >= 0, floor(v / 2^-k) for k < 0 (arithmetic right shift)."""
    return v << k if k >= 0 else v >> (-k)


def layernorm_row_consts(a1: int, a2: int, sa: int, el, k: NormConsts):
    """Row constants of pass 2: ``(MU, EMU, R, er)``; mean ~ MU * 2^EMU (MU = 0: zero mean)."""
    c = sa - E8M0_BIAS + unit_exp(el)
    mu, vn = layernorm_var(a1, a2, k)
    r, er = rsqrt_unit(vn, 2 * c - G2, k)
    if mu == 0:
        return 0, 0, r, er
    mag, sh = _normalize(abs(mu), MUB - 1)
    return (-mag if mu < 0 else mag), c - G1 + k.inv_e + sh, r, er


def _top(vals: list[int], e: int) -> int:
    """Window top of one beat's operand: e + k with every lane in [-2^k, 2^k) (k = bit length of the
    OR of the lanes' one's-complement magnitudes); NEG_TOP if every lane is 0."""
    if not any(vals):
        return NEG_TOP
    k = max((v if v >= 0 else ~v).bit_length() for v in vals)
    return e + k


def _ln_beat(xis, ex, mu, emu, r, er, gis, eg, bis, eb):
    """One beat of LayerNorm pass 2 (all lanes share the exponents): ``(y lanes, ey)``.

    d = x - mean in a window of DW signed bits below the larger operand top (:func:`_top`; the mean's
    top is emu + MUB - 1), products exact, then y = p + beta in a window of YW signed bits below the
    larger top. Alignment shifts floor; an all-zero operand does not set a window.
    """
    tx = _top(xis, ex)
    tm = emu + MUB - 1 if mu != 0 else NEG_TOP
    ec = max(tx, tm) - (DW - 1)
    ma = _shift(mu, emu - ec)
    d = [_shift(x, ex - ec) - ma for x in xis]
    p = [di * r * gi for di, gi in zip(d, gis)]
    ep = ec + er + eg
    ey = max(_top(p, ep), _top(bis, eb)) - (YW - 1)
    y = [_shift(pi, ep - ey) + _shift(bi, eb - ey) for pi, bi in zip(p, bis)]
    return y, ey


def layernorm_lanes(codes, scales, el, g_codes, g_scales, g_el, b_codes, b_scales, b_el, n: int,
                    eps: float = 1e-5, lanes: int | None = None):
    """Bit-exact ``(m, e)`` lanes of ``mx_layernorm`` (before the quantizer).

    ``lanes`` (P) matters: the alignment windows are chosen per beat of P lanes. Padding lanes
    (index >= n) give m = 0 and the beat's exponent.
    """
    rows, srows, lead, nblk, b = _rows(codes, scales)
    _check_geometry(n, nblk, b)
    p = b if lanes is None else lanes
    if p < 1 or b % p:
        raise ValueError(f"lanes {p} must divide the block size {b}")
    gc, gsc = _check_param(g_codes, g_scales, nblk, b, "gamma")
    bc, bsc = _check_param(b_codes, b_scales, nblk, b, "beta")
    k = norm_consts(n, eps)
    xe0, ge0, be0 = unit_exp(el), unit_exp(g_el), unit_exp(b_el)
    gi = [[decode_fixed(c, g_el) for c in blk] for blk in gc]
    bi = [[decode_fixed(c, b_el) for c in blk] for blk in bc]
    m_rows, e_rows = [], []
    for rc, rs in zip(rows, srows):
        xis = _row_xis(rc, el, n, b)
        a1, a2, sa = accumulate_row([(*block_sums(x), s) for x, s in zip(xis, rs)])
        mu, emu, r, er = layernorm_row_consts(a1, a2, sa, el, k)
        mr, erow = [], []
        for j in range(nblk):
            ex = rs[j] - E8M0_BIAS + xe0
            eg = gsc[j] - E8M0_BIAS + ge0
            eb = bsc[j] - E8M0_BIAS + be0
            for q in range(0, b, p):
                y, ey = _ln_beat(xis[j][q:q + p], ex, mu, emu, r, er, gi[j][q:q + p], eg, bi[j][q:q + p], eb)
                for i in range(p):
                    mr.append(y[i] if j * b + q + i < n else 0)
                    erow.append(ey)
        m_rows.append(mr)
        e_rows.append(erow)
    return m_rows, e_rows


def layernorm_model(codes, scales, el, g_codes, g_scales, g_el, b_codes, b_scales, b_el, el_out,
                    n: int, eps: float = 1e-5, lanes: int | None = None):
    """Bit-exact model of ``mx_layernorm`` (``lanes`` = P of the instance): output ``(codes, scales)``."""
    m, e = layernorm_lanes(codes, scales, el, g_codes, g_scales, g_el, b_codes, b_scales, b_el, n, eps, lanes)
    _, _, lead, nblk, b = _rows(codes, scales)
    return _quantize_rows(m, e, el_out, lead, nblk, b)


def _check_geometry(n: int, nblk: int, b: int) -> None:
    if not (nblk - 1) * b < n <= nblk * b:
        raise ValueError(f"row length {n} does not fill {nblk} blocks of {b} (need ceil(n/B) blocks)")


# ----------------------------------------------------------------------------- float references
def rmsnorm_reference(x: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """float64 RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * gamma."""
    x = x.to(torch.float64)
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * gamma.to(torch.float64)


def layernorm_reference(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """float64 LayerNorm over the last axis (biased variance, as torch.nn.LayerNorm)."""
    x = x.to(torch.float64)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * gamma.to(torch.float64) + beta.to(torch.float64)


def lanes_to_float(m_rows, e_rows) -> torch.Tensor:
    """float64 values of (m, e) lanes (exact up to float64 rounding)."""
    return torch.tensor([[math.ldexp(float(mi), ei) if mi else 0.0 for mi, ei in zip(mr, er)]
                         for mr, er in zip(m_rows, e_rows)], dtype=torch.float64)


def mx_values(codes, scales, el) -> torch.Tensor:
    """float64 values of an MX tensor ``[..., nblocks, B]`` flattened to ``[..., nblocks*B]``."""
    c = torch.as_tensor(codes).to(torch.int64)
    s = torch.as_tensor(scales).to(torch.float64)
    v = torch.tensor([[decode_fixed(x, el) for x in row] for row in c.reshape(-1, c.shape[-1]).tolist()],
                     dtype=torch.float64).reshape(c.shape)
    v = v * torch.pow(2.0, (s - E8M0_BIAS + unit_exp(el)).unsqueeze(-1))
    return v.reshape(*c.shape[:-2], -1)


def ordinal(codes, el) -> torch.Tensor:
    """Codes as signed positions on the element grid (int: the integer; fp: +-magnitude code), so
    that the distance of two codes of one block scale is a number of grid steps."""
    c = codes.to(torch.int64)
    sign = (c >> (el.bits - 1)) & 1
    if el.kind == "int":
        return c - (sign << el.bits)
    mag = c & ((1 << (el.bits - 1)) - 1)
    return torch.where(sign.bool(), -mag, mag)


# ----------------------------------------------------------------------------- ROM packing
def pack_param_mem(codes, scales, el) -> str:
    """.mem text of a gamma/beta row: one MX block per word ``{scale, code[B-1], ..., code[0]}``.

    ``codes [nblocks, B]`` / ``scales [nblocks]`` as from ``MXFormat.encode(...).codes/.scales``
    (int32 OK). Padding codes (index >= N) must be 0 (the encoder pads with zeros).
    """
    from masec.formats.packing import block_word_width, pack_mx_block_words, words_to_mem

    c = torch.as_tensor(codes).to(torch.int64)
    s = torch.as_tensor(scales).to(torch.int64)
    c = c.reshape(-1, c.shape[-1])
    s = s.reshape(-1)
    return words_to_mem(pack_mx_block_words(c, s, el.bits), block_word_width(el.bits, c.shape[-1]))


def pack_gamma_mem(codes, scales, el) -> str:
    """Gamma ROM contents (``GAMMA_MEM`` of mx_rmsnorm / mx_layernorm); see :func:`pack_param_mem`."""
    return pack_param_mem(codes, scales, el)


def pack_beta_mem(codes, scales, el) -> str:
    """Beta ROM contents (``BETA_MEM`` of mx_layernorm); see :func:`pack_param_mem`."""
    return pack_param_mem(codes, scales, el)


# ----------------------------------------------------------------------------- instance configuration
def _resolve(fmt, block_size=None):
    if not isinstance(fmt, str):
        return fmt
    from masec.formats import parse_format

    return parse_format(fmt, block_size=block_size or 32)


def rmsnorm_mw(el, g_el) -> int:
    """Signed bits of the (m) lanes of mx_rmsnorm: sig_x * R * sig_gamma."""
    return float_sig_width(el) + (RW + 1) + float_sig_width(g_el)


def layernorm_mw() -> int:
    return YW + 2


def seed_output(fmt_out, lanes: int, y_ts_exp: int | None = None) -> tuple[int, object, dict]:
    """``(Y_QFMT, quantizer element, SV parameters)`` of an mx_rmsnorm output in ``fmt_out``: an MX format
    (mode 0), or a seed activation format mx_quantize emits (``m2xfp4_a``: lanes a multiple of 8;
    ``nvfp4``: ``y_ts_exp`` its tensor-scale exponent, given exactly then; ``anda<M>``, M <= 15).
    ValueError otherwise."""
    from masec.hw_templates.kernels.mx_quantize import (M2X_SUBGROUP, QFMT_M2XFP, QFMT_MX, QFMT_NVFP4,
                                                        output_format_params)

    qfmt, el = output_format_params(fmt_out)
    if (qfmt == QFMT_NVFP4) != (y_ts_exp is not None):
        raise ValueError("y_ts_exp (the power-of-two tensor scale 2^y_ts_exp) is given exactly for an nvfp4 output")
    if qfmt == QFMT_M2XFP and lanes % M2X_SUBGROUP:
        raise ValueError(f"an m2xfp4_a output needs a multiple of {M2X_SUBGROUP} lanes (its metadata is per "
                         f"subgroup of {M2X_SUBGROUP}), got {lanes}")
    extra = {} if qfmt == QFMT_MX else {"Y_QFMT": int(qfmt)}
    if qfmt == QFMT_NVFP4:
        extra["Y_TS_EXP"] = int(y_ts_exp)
    return qfmt, el, extra


def instance_config(kind: str, n: int, fmt_in, fmt_out, fmt_param, lanes: int, eps: float = 1e-5,
                    gamma_mem: str = "gamma.mem", beta_mem: str = "beta.mem", fmt_beta=None,
                    block_size: int | None = None, y_ts_exp: int | None = None) -> tuple[dict, dict, str]:
    """``(jinja_ctx, sv_params, module_name)`` of an ``mx_rmsnorm`` (kind "rmsnorm") or
    ``mx_layernorm`` (kind "layernorm") instance over rows of ``n`` elements.

    The templates need no Jinja context: one rendered module serves every instance; formats,
    row length, eps constants and ROM file names are SV parameters. An RMSNorm's output may be a
    seed activation format (:func:`seed_output`: ``Y_QFMT`` / ``Y_TS_EXP``); LayerNorm's is MX.
    """
    fi = _resolve(fmt_in, block_size)
    fo = _resolve(fmt_out, fi.block_size)
    fg = _resolve(fmt_param, fi.block_size)
    fb = _resolve(fmt_beta or fmt_param, fi.block_size)
    from masec.hw_templates.kernels.mx_linear import stream_block
    from masec.formats.mx import MXFormat

    if kind == "layernorm" and not isinstance(fo, MXFormat):
        raise ValueError(f"mx_layernorm's output stage emits MX formats only, not {fo.name}")
    b = fi.block_size
    if stream_block(fo) != b or fg.block_size != b or fb.block_size != b:
        raise ValueError("input, output and parameter formats must share the block size")
    if lanes < 1 or b % lanes:
        raise ValueError(f"lanes {lanes} must divide the block size {b}")
    k = norm_consts(n, eps)
    from masec.hw_templates.kernels.mx_quantize import element_sv_params

    _, y_el, y_extra = seed_output(fo, lanes, y_ts_exp) if kind == "rmsnorm" else (0, fo.element, {})
    params = {"P": lanes, "B": b, "N": n, **elem_sv_params(fi.element, "X"), **elem_sv_params(fg.element, "G"),
              **element_sv_params(y_el, "Y_"), **y_extra, **k.sv_params(), "GAMMA_MEM": gamma_mem}
    if kind == "rmsnorm":
        return {}, params, "mx_rmsnorm"
    if kind == "layernorm":
        params.update(elem_sv_params(fb.element, "BT"))
        params["BETA_MEM"] = beta_mem
        return {}, params, "mx_layernorm"
    raise ValueError(f"kind must be 'rmsnorm' or 'layernorm', got {kind!r}")


def sim_params(kind: str, n: int, el, g_el, el_out, lanes: int, block: int, eps: float = 1e-5,
               gamma_mem: str = "gamma.mem", beta_mem: str = "beta.mem", b_el=None, pipe: int | None = None,
               y_qfmt: int = 0, y_ts_exp: int = 0) -> dict:
    """SV parameters from element formats (no MXFormat needed); same as instance_config's (``PIPE`` only
    when ``pipe`` is given; ``Y_QFMT`` / ``Y_TS_EXP`` of an RMSNorm seed output only when not MX,
    ``el_out`` then the quantizer's element)."""
    from masec.hw_templates.kernels.mx_quantize import QFMT_NVFP4, element_sv_params

    k = norm_consts(n, eps)
    params = {"P": lanes, "B": block, "N": n, **elem_sv_params(el, "X"), **elem_sv_params(g_el, "G"),
              **element_sv_params(el_out, "Y_"), **k.sv_params(), "GAMMA_MEM": gamma_mem}
    if y_qfmt:
        if kind != "rmsnorm":
            raise ValueError("only mx_rmsnorm's output stage emits seed activation formats")
        params["Y_QFMT"] = int(y_qfmt)
        if y_qfmt == QFMT_NVFP4:
            params["Y_TS_EXP"] = int(y_ts_exp)
    if kind == "layernorm":
        params.update(elem_sv_params(b_el or g_el, "BT"))
        params["BETA_MEM"] = beta_mem
    if pipe is not None:
        params["PIPE"] = _check_pipe(pipe)
    return params


def elem_param_specs(prefix: str, what: str, default_int8: bool = True) -> tuple[ParamSpec, ...]:
    """ParamSpecs of one element description (``<prefix>_IS_INT/_BITS/_EBITS/_MBITS/_BIAS``; default int8)."""
    d = {"IS_INT": 1, "BITS": 8, "EBITS": 0, "MBITS": 6, "BIAS": 0}
    docs = {"IS_INT": "1: two's complement int, 0: sign|exp|mant minifloat", "BITS": "code width",
            "EBITS": "exponent bits (int: 0)", "MBITS": "mantissa bits (int: BITS-2)", "BIAS": "exponent bias (int: 0)"}
    return tuple(ParamSpec(f"{prefix}_{k}", f"{what}: {docs[k]}", d[k] if default_int8 else None) for k in d)


def out_param_specs() -> tuple[ParamSpec, ...]:
    """ParamSpecs of the output element (mx_quantize's ELEM_* parameters, prefix Y_; default int8)."""
    return (ParamSpec("Y_IS_INT", "output element: 1 int, 0 minifloat", 1),
            ParamSpec("Y_BITS", "output element code width", 8),
            ParamSpec("Y_MBITS", "output element fraction bits (int: BITS-2)", 6),
            ParamSpec("Y_BIAS", "emin = 1 - Y_BIAS (fp: bias; int: 1)", 1),
            ParamSpec("Y_EMAX", "unbiased exponent of the top binade (int: 0)", 0),
            ParamSpec("Y_MAX_CODE", "largest finite magnitude code", 127))


# ----------------------------------------------------------------------------- pipelining (PIPE)
#: Largest PIPE the templates have cuts for (3: the rsqrt and RMSNorm row-accumulator cuts, mx_quantize's cut O).
MAX_PIPE = 3


def _check_pipe(pipe) -> int:
    return check_pipe(pipe, MAX_PIPE, "the norm kernels")


def rsqrt_latency(pipe: int) -> int:
    """Cycles ``mx_rmsnorm_rsqrt``'s ``PIPE`` adds to its 5: the two product splits (1), the leading
    one before the normalizing shift (2), the partial products of m' * Y0^2 and stage 2's aligned
    operands (3)."""
    return (0, 2, 3, 5)[_check_pipe(pipe)]


def _pass1_latency(kind: str, pipe: int) -> int:
    """Pass-1 stages added: the accepted beat and the adder trees' group sums (1), the squares (2);
    LayerNorm also A1 * mu before the variance subtraction (1); RMSNorm's row accumulator step in two
    (3)."""
    return (0, 2, 3, 3)[_check_pipe(pipe)] + (kind == "layernorm" and pipe >= 1) + (kind == "rmsnorm" and pipe >= 3)


def _pass2_latency(kind: str, pipe: int) -> int:
    """Pass-2 stages added. RMSNorm: x * R between the products (1), the decoded operands (2).
    LayerNorm: d * R between the products (1), the x window top and the products p (2)."""
    return ((0, 1, 2, 2) if kind == "rmsnorm" else (0, 1, 3, 3))[_check_pipe(pipe)]


def norm_latency(kind: str, pipe: int) -> int:
    """Cycles ``PIPE`` adds to an ``mx_rmsnorm`` / ``mx_layernorm`` instance: pass 1 + rsqrt (the row
    statistics come later) + pass 2 + mx_quantize's ``latency(PIPE)`` (2 * PIPE, + 1 at PIPE 3)."""
    from masec.hw_templates.kernels.mx_quantize import latency as quantize_latency

    pipe = _check_pipe(pipe)
    return _pass1_latency(kind, pipe) + rsqrt_latency(pipe) + _pass2_latency(kind, pipe) + quantize_latency(pipe)


def rmsnorm_latency(params: dict) -> int:
    """``SPEC.extra["latency"]`` of mx_rmsnorm: cycles over ``PIPE = 0`` at SV ``params``."""
    return norm_latency("rmsnorm", int(params.get("PIPE", 0) or 0))


def layernorm_latency(params: dict) -> int:
    """``SPEC.extra["latency"]`` of mx_layernorm: cycles over ``PIPE = 0`` at SV ``params``."""
    return norm_latency("layernorm", int(params.get("PIPE", 0) or 0))


_K64 = norm_consts(64, 1e-5)
_COMMON_PARAMS = (
    ParamSpec("P", "lanes per beat; divides B", 4),
    ParamSpec("B", "MX block size (power of two)", 32),
    ParamSpec("N", "row length (elements reduced over); ceil(N/B) blocks per row, last one zero-padded", 64),
    *elem_param_specs("X", "input element"),
    *elem_param_specs("G", "gamma element"),
    *out_param_specs(),
    ParamSpec("EPS_M", "N*eps ~ EPS_M * 2^EPS_E, 24-bit EPS_M (norm_consts)", _K64.eps_m),
    ParamSpec("EPS_E", "exponent of N*eps", _K64.eps_e),
    ParamSpec("SQN_M", "sqrt(N) ~ SQN_M * 2^SQN_E, 17-bit SQN_M", _K64.sqn_m),
    ParamSpec("SQN_E", "exponent of sqrt(N)", _K64.sqn_e),
    ParamSpec("INV_M", "1/N ~ INV_M * 2^INV_E, 26-bit INV_M (LayerNorm mean; RMSNorm ignores it)", _K64.inv_m),
    ParamSpec("INV_E", "exponent of 1/N", _K64.inv_e),
    ParamSpec("GAMMA_MEM", "$readmemh file of gamma: ceil(N/B) words {scale, code[B-1..0]} (pack_gamma_mem)", "gamma.mem"),
    ParamSpec("PIPE", "pipeline depth 0..3 (latency + norm_latency(kind, PIPE))", 0),
)


def _example(kind: str, n: int, lanes: int, block: int = 32, pipe: int = 0) -> dict:
    """A resource-table example: mxint8 in/out, mxfp8_e4m3 gamma (and beta), with seeded ROM files."""
    from masec.formats import parse_format
    from masec.formats.element import FP8_E4M3, INT8

    fmt = parse_format("mxfp8_e4m3", block_size=block)

    def rom(seed: int):
        def text() -> str:
            g = torch.Generator().manual_seed(seed)
            e = fmt.encode(1.0 + 0.1 * torch.randn(n, generator=g))
            return pack_param_mem(e.codes, e.scales, fmt.element)
        return text

    params = sim_params(kind, n, INT8, FP8_E4M3, INT8, lanes, block)
    files = {params["GAMMA_MEM"]: rom(n)}
    if kind == "layernorm":
        files[params["BETA_MEM"]] = rom(n + 1)
    label = f"N{n} mxint8 P{lanes}"
    if pipe:
        params["PIPE"] = pipe
        label += f" PIPE{pipe}"
    return {"label": label, "ctx": {}, "params": params, "files": files}


def _example_seed(out: str, lanes: int = 8) -> dict:
    """An mx_rmsnorm resource/lint example with a seed activation output (N64, mxint8 in, mxfp8_e4m3
    gamma): ``nvfp4`` (block 16, tensor scale 2^-4), ``m2xfp4_a`` or ``anda4`` (block 32)."""
    from masec.formats import parse_format
    from masec.formats.element import FP8_E4M3, INT8
    from masec.hw_templates.kernels.mx_quantize import output_format_params

    f = parse_format(out)
    block = 16 if out == "nvfp4" else 32
    qfmt, el = output_format_params(f)
    ex = _example("rmsnorm", 64, lanes, block)
    ex["params"] = sim_params("rmsnorm", 64, INT8, FP8_E4M3, el, lanes, block, y_qfmt=qfmt,
                              y_ts_exp=-4 if out == "nvfp4" else 0)
    ex["label"] = f"N64 mxint8 -> {out} P{lanes}"
    return ex


SPECS = (
    KernelSpec(
        name="mx_rmsnorm_rsqrt",
        template="mx_rmsnorm_rsqrt.sv.j2",
        doc="Reciprocal square root of a row statistic for mx_rmsnorm/mx_layernorm: normalize, + N*eps, "
            "256-entry seed table, one Newton step, * sqrt(N); fully pipelined, latency 5 + rsqrt_latency(PIPE).",
        params=(ParamSpec("VW", "bits of the unsigned operand", 64),
                ParamSpec("EPS_M", "N*eps ~ EPS_M * 2^EPS_E, 24-bit EPS_M", 10737418),
                ParamSpec("EPS_E", "exponent of N*eps", -37),
                ParamSpec("SQN_M", "sqrt(N) ~ SQN_M * 2^SQN_E, 17-bit SQN_M", 65536),
                ParamSpec("SQN_E", "exponent of sqrt(N)", -13),
                ParamSpec("PIPE", "pipeline depth 0..3 (latency 5 + rsqrt_latency(PIPE))", 0)),
        model=f"{__name__}:rsqrt_unit",
        examples=({"label": "VW64", "ctx": {}, "params": {"VW": 64}},
                  {"label": "VW64 PIPE2", "ctx": {}, "params": {"VW": 64, "PIPE": 2}}),
        extra={"latency": lambda params: rsqrt_latency(int(params.get("PIPE", 0) or 0)),
               "max_pipe": MAX_PIPE},
    ),
    KernelSpec(
        name="mx_rmsnorm",
        template="mx_rmsnorm.sv.j2",
        doc="RMSNorm over rows of N elements: y = x * rsqrt(mean(x^2) + eps) * gamma, gamma in ROM; "
            "row buffered in a FIFO of ROW_BEATS + 12 beats (+ the pipeline's), 1 beat/cycle, output via "
            "mx_quantize (MX, or Y_QFMT: M2XFP / NVFP4 / Anda activations); PIPE 0..3 adds "
            "norm_latency('rmsnorm', PIPE) cycles.",
        params=_COMMON_PARAMS + (
            ParamSpec("Y_QFMT", "output format, mx_quantize's QFMT: 0 MX, 1 M2XFP activations (P/4 metadata "
                      "bits above the codes; P a multiple of 8), 2 NVFP4, 3 Anda", 0),
            ParamSpec("Y_TS_EXP", "NVFP4 output: tensor scale 2^Y_TS_EXP", 0)),
        ports=(PortSpec("s_x", "in", "mx", "input rows, P lanes of X_BITS codes + E8M0 scale"),
               PortSpec("m_y", "out", "mx", "normalized rows, P lanes of Y_BITS codes + scale byte "
                        "(E8M0; UE4M3 for NVFP4, S for Anda); M2XFP metadata above the codes")),
        deps=("mx_rmsnorm_rsqrt", "mx_quantize", "stream_fifo"),
        ops=("rms_norm",),
        model=f"{__name__}:rmsnorm_model",
        examples=(
            _example("rmsnorm", 64, 4),
            _example("rmsnorm", 64, 16),
            _example("rmsnorm", 256, 32),
            _example("rmsnorm", 64, 16, pipe=2),
            _example("rmsnorm", 256, 32, pipe=3),
            _example("rmsnorm", 64, 4, pipe=3),       # as the compiled blocks have it at --clock 10 on ECP5
            _example_seed("nvfp4"),
            _example_seed("m2xfp4_a"),
            _example_seed("anda4"),
        ),
        extra={"latency": rmsnorm_latency, "max_pipe": MAX_PIPE},
    ),
    KernelSpec(
        name="mx_layernorm",
        template="mx_layernorm.sv.j2",
        doc="LayerNorm over rows of N elements: y = (x - mean) * rsqrt(var + eps) * gamma + beta, gamma and "
            "beta in ROM; row buffered in a FIFO of ROW_BEATS + 14 beats (+ the pipeline's), 1 beat/cycle, "
            "output via mx_quantize; PIPE 0..3 adds norm_latency('layernorm', PIPE) cycles.",
        params=_COMMON_PARAMS + elem_param_specs("BT", "beta element") + (
            ParamSpec("BETA_MEM", "$readmemh file of beta, same layout as GAMMA_MEM (pack_beta_mem)", "beta.mem"),),
        ports=(PortSpec("s_x", "in", "mx", "input rows, P lanes of X_BITS codes + E8M0 scale"),
               PortSpec("m_y", "out", "mx", "normalized rows, P lanes of Y_BITS codes + E8M0 scale")),
        deps=("mx_rmsnorm_rsqrt", "mx_quantize", "stream_fifo"),
        ops=("layer_norm",),
        model=f"{__name__}:layernorm_model",
        examples=(
            _example("layernorm", 64, 4),
            _example("layernorm", 64, 16),
            _example("layernorm", 256, 32),
            _example("layernorm", 64, 16, pipe=2),
            _example("layernorm", 256, 32, pipe=3),
        ),
        extra={"latency": layernorm_latency, "max_pipe": MAX_PIPE},
    ),
)
