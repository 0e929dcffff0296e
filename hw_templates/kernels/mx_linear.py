"""MX linear layer y = x W^T (+ b) with weights in on-chip ROM, and its building blocks.

Kernels defined here (docs/kernels/mx_linear.md):

* ``mx_dot``  - exact dot product of P MX element pairs (block-relative integer), combinational at
  PIPE 0, registered products and adder tree above (:func:`dot_latency`); optional L-Mul approximate
  multiplier for fp x fp (Luo & Sun 2024, "Addition is All You Need").
* ``mx_facc`` - one step of the bounded-width floating accumulator (align to the larger exponent,
  round half up, renormalize by one bit), as ``mx_facc_align`` -> ``mx_facc_add`` (a pipelined
  accumulator registers between the halves); ``mx_delay`` - the pipeline's side-band delay line.
* ``mx_linear`` - the layer: x streams [T, IN] (MX, P_IN lanes), W [OUT, IN] and bias in ROM,
  P_OUT outputs at once, y streams [T, OUT] (MX, P_OUT lanes) through ``mx_quantize``.

Arithmetic, shared by the RTL and the bit-exact model below:

1. Element decode: fp code -> sig = +-(2^M + mant) (normal) / +-mant (subnormal), off = e - 1 /
   0, value = sig * 2^(off + exmin), exmin = 1 - bias - M; int code k -> sig = k, off = 0,
   exmin = -M. The product of an x and a w element is the exact integer
   ``sig_x * sig_w << (off_x + off_w)`` in units of 2^(exmin_x + exmin_w).
2. Per block b of B elements: ``S = sum of the B products``, an exact signed integer of
   ``DW = PW + log2(B)`` bits; its value is ``S * 2^Y`` with ``Y = Sx + Sw - 254 + exmin_x + exmin_w``.
3. Across blocks: the floating accumulator (A, X), A signed AW = DW + ACC_GUARD + 1 bits, value
   A * 2^X, started from the bias (exact) or empty, updated by :func:`facc_step`.
4. The row's accumulators (A, X) go to ``mx_quantize`` (m = A, e = X) -> MX output block.

Pipelining: ``PIPE`` 0..3 (from ``--clock``: ``masec.passes.hw.pipeline.pipe_depth``) adds register cuts
(docs/kernels/mx_linear.md,
"Pipelining"); the values do not change, every output beat comes :func:`latency` cycles later.

Seed formats (docs/kernels/mx_linear.md): W in M2XFP / NVFP4 / BitMoD (``WFMT``; model
:func:`seed_linear_accumulators`, ROMs :func:`pack_seed_weight_mem`); x in M2XFP activations, NVFP4
or Anda (``XFMT``, the codes of mx_quantize's QFMT; :func:`decode_x_stream` gives the element the
kernel multiplies, the E8M0-equivalent block exponent and NVFP4's scale significand); y in any of
those through the nested mx_quantize (``Y_QFMT``, :func:`quantize_rows_format`).
:func:`stream_widths` sizes the streams of every format.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from masec.hw_templates.kernels.mx_quantize import element_sv_params, quantize_blocks
from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec

XW = 12  # signed exponent width of the accumulator exponent X (and of mx_quantize's e lanes)
DEFAULT_ACC_GUARD = 4  # ACC_GUARD of instance_config and the model functions


# ------------------------------------------------------------------------------ element decode
@dataclass(frozen=True)
class ElemInfo:
    is_int: bool
    bits: int
    mbits: int
    ebits: int
    bias: int
    sigw: int      # signed width of the significand
    offmax: int    # largest exponent offset of any code
    exmin: int     # exponent of one significand unit at offset 0


def elem_info(el) -> ElemInfo:
    if el.kind == "int":
        return ElemInfo(True, el.bits, el.mbits, 0, 0, el.bits, 0, -el.mbits)
    return ElemInfo(False, el.bits, el.mbits, el.ebits, el.bias, el.mbits + 2, (1 << el.ebits) - 2,
                    1 - el.bias - el.mbits)


def decode_sig_off(codes, el) -> tuple[torch.Tensor, torch.Tensor]:
    """(sig, off) of element codes: value = sig * 2^(off + exmin). Every bit pattern decodes."""
    c = torch.as_tensor(codes, dtype=torch.int64)
    i = elem_info(el)
    if i.is_int:
        return torch.where(c >= (1 << (i.bits - 1)), c - (1 << i.bits), c), torch.zeros_like(c)
    s = (c >> (i.bits - 1)) & 1
    e = (c >> i.mbits) & ((1 << i.ebits) - 1)
    m = c & ((1 << i.mbits) - 1)
    sig = torch.where(e > 0, m | (1 << i.mbits), m)
    return torch.where(s == 1, -sig, sig), torch.where(e > 0, e - 1, torch.zeros_like(e))


def lmul_l(m: int) -> int:
    """The L-Mul offset exponent l(m) of Luo & Sun 2024: m (m <= 3), 3 (m = 4), 4 (m > 4)."""
    return m if m <= 3 else (3 if m == 4 else 4)


def decode_lmul(codes, el):
    """fp code -> (sign +-1 / 0 for zero, f (M fraction bits of the normalized significand 1.f),
    t >= 0 with value = 1.f * 2^(t + exmin)); subnormals are normalized (leading-one shift)."""
    c = torch.as_tensor(codes, dtype=torch.int64)
    i = elem_info(el)
    M = i.mbits
    s = (c >> (i.bits - 1)) & 1
    e = (c >> M) & ((1 << i.ebits) - 1)
    m = c & ((1 << M) - 1)
    p = torch.zeros_like(m)  # leading-one position of a subnormal mantissa
    for b in range(M):
        p = torch.where((m >> b) & 1 == 1, torch.full_like(m, b), p)
    f_sub = (m << (M - p)) & ((1 << M) - 1)
    f = torch.where(e > 0, m, f_sub)
    t = torch.where(e > 0, e - 1 + M, p)
    nz = (e > 0) | (m > 0)
    sign = torch.where(nz, torch.where(s == 1, -1, 1), 0)
    return sign, f, t


# ------------------------------------------------------------------------------ widths
@dataclass(frozen=True)
class LinearWidths:
    lmul: bool     # L-Mul products in use (both elements fp and LMUL requested)
    K: int         # L-Mul fraction bits of the product significand (0 exact)
    L: int         # L-Mul offset exponent l(M)
    PW: int        # signed width of one product
    DW: int        # signed width of a block sum S (|S| <= 2^(DW-2))
    AW: int        # signed width of the accumulator mantissa A (|A| <= 2^(AW-2))
    G: int         # ACC_GUARD: S enters the accumulator as S << G
    C: int         # Y = Sx + Sw + C
    BSIGW: int     # signed width of a bias significand
    GB: int        # the bias enters as sig_b << GB
    BC: int        # bias exponent: X_b = off_b + Sb + BC
    DW0: int = 0   # signed width of a block's sum of products before the block-scale multiply
    SSW: int = 0   # bits of the block-scale significand multiplied into the block sum (0: none)


def linear_widths(x_elem, w_elem, block: int, acc_guard: int = DEFAULT_ACC_GUARD, lmul: bool = False, b_elem=None,
                  wkind: str = "mx", xssw: int = 0) -> LinearWidths:
    """The widths mx_linear's RTL derives from its parameters (same formulas as the SV localparams).

    ``wkind`` is the weight format family (``WFMT``): ``"mx"`` (``w_elem`` an MX element), or a seed
    format ``"m2xfp"``, ``"nvfp4"``, ``"bitmod"`` (``w_elem`` then the ROM code's ElementFormat; see
    :func:`seed_linear_accumulators`). ``xssw``: bits of x's block-scale significand multiplied into
    the block sum (4 for an NVFP4 x, else 0)."""
    if wkind != "mx":
        return _seed_widths(x_elem, w_elem, block, acc_guard, b_elem, wkind, xssw)
    xi, wi = elem_info(x_elem), elem_info(w_elem)
    bi = elem_info(b_elem if b_elem is not None else w_elem)
    lb = int(math.log2(block))
    lm = bool(lmul) and not xi.is_int and not wi.is_int
    if lm:
        L = lmul_l(max(xi.mbits, wi.mbits))
        K = max(xi.mbits, wi.mbits, L)
        PW = K + 4 + (xi.offmax + xi.mbits) + (wi.offmax + wi.mbits)
        C = xi.exmin + wi.exmin - 254 - K
    else:
        L = K = 0
        PW = xi.sigw + wi.sigw + xi.offmax + wi.offmax
        C = xi.exmin + wi.exmin - 254
    DW = PW + lb + xssw
    AW = DW + acc_guard + 1
    GB = AW - 1 - bi.sigw
    return LinearWidths(lm, K, L, PW, DW, AW, acc_guard, C, bi.sigw, GB, bi.exmin - 127 - GB, PW + lb, xssw)


# ------------------------------------------------------------------------------ accumulator
def rshift_round(v: int, d: int) -> int:
    """floor(v / 2^d + 1/2) (round half up), d >= 0: ((2v >> d) + 1) >> 1 as in the RTL."""
    return (((v << 1) >> d) + 1) >> 1


def facc_step(A: int, X: int, S: int, Y: int, AW: int, G: int) -> tuple[int, int]:
    """One accumulator update (A, X) + S * 2^Y, bit-exact with mx_facc (Python ints).

    * S == 0: unchanged.  A == 0: load (S << G, Y - G) exactly.
    * else align to the larger exponent: the operand with the smaller exponent is shifted right
      by the difference d with round-half-up (d >= AW gives 0), the two are added;
    * if the sum leaves [-2^(AW-2), 2^(AW-2)) it is halved (round half up) and the exponent
      incremented, so |A| <= 2^(AW-2) always.
    """
    if S == 0:
        return A, X
    Se, Ye = S << G, Y - G
    if A == 0:
        return Se, Ye
    if X >= Ye:
        Z, a, b = X, A, rshift_round(Se, min(X - Ye, AW + 1))
    else:
        Z, a, b = Ye, rshift_round(A, min(Ye - X, AW + 1)), Se
    R = a + b
    lim = 1 << (AW - 2)
    if R >= lim or R < -lim:
        R, Z = rshift_round(R, 1), Z + 1
    return R, Z


def facc_step_torch(A, X, S, Y, AW: int, G: int):
    """Vectorized :func:`facc_step` on int64 tensors (AW <= 61)."""
    Se, Ye = S << G, Y - G
    accbig = X >= Ye
    d = torch.where(accbig, X - Ye, Ye - X).clamp(max=AW + 1)

    def rsr(v, dd):
        return (((v << 1) >> dd) + 1) >> 1

    a = torch.where(accbig, A, rsr(A, d))
    b = torch.where(accbig, rsr(Se, d), Se)
    Z = torch.where(accbig, X, Ye)
    R = a + b
    lim = 1 << (AW - 2)
    over = (R >= lim) | (R < -lim)
    R = torch.where(over, rsr(R, torch.ones_like(R)), R)
    Z = Z + over.to(torch.int64)
    R = torch.where(A == 0, Se, R)
    Z = torch.where(A == 0, Ye, Z)
    R = torch.where(S == 0, A, R)
    Z = torch.where(S == 0, X, Z)
    return R, Z


# ------------------------------------------------------------------------------ the model
def _obj_matmul(a: torch.Tensor, b: torch.Tensor) -> list:
    """Exact integer a @ b.T with Python ints (for widths beyond int64)."""
    al, bl = a.tolist(), b.tolist()
    return [[sum(x * y for x, y in zip(r, c)) for c in bl] for r in al]


def block_sums(x_codes, x_elem, w_codes, w_elem, lmul: bool = False):
    """Exact per-block dot products S[t, o, b] as the RTL's mx_dot sums them.

    x_codes [T, NB, B], w_codes [O, NB, B]. Returns an int64 tensor [T, O, NB], or nested
    Python-int lists when the width exceeds int64 (e.g. e5m2 x e5m2).
    """
    w = linear_widths(x_elem, w_elem, x_codes.shape[-1], 0, lmul)
    T, NB, B = x_codes.shape
    O = w_codes.shape[0]
    wide = w.DW > 62
    if w.lmul:
        sx, fx, tx = decode_lmul(x_codes, x_elem)
        sw, fw, tw = decode_lmul(w_codes, w_elem)
        Mx, Mw = x_elem.mbits, w_elem.mbits
        # Q = 2^K + 2^(K-L) + fx 2^(K-Mx) + fw 2^(K-Mw); S = sum sx sw Q 2^(tx+tw): separable terms
        terms = [((1 << w.K) + (1 << (w.K - w.L)), sx, tx, sw, tw),
                 (1 << (w.K - Mx), sx * fx, tx, sw, tw),
                 (1 << (w.K - Mw), sx, tx, sw * fw, tw)]
    else:
        sx, ox = decode_sig_off(x_codes, x_elem)
        sw, ow = decode_sig_off(w_codes, w_elem)
        terms = [(1, sx, ox, sw, ow)]
    if not wide:
        S = torch.zeros(T, O, NB, dtype=torch.int64)
        for k, a, ta, b, tb in terms:
            av = (a << ta).permute(1, 0, 2)  # [NB, T, B]
            bv = (b << tb).permute(1, 2, 0)  # [NB, B, O]
            S += k * torch.bmm(av, bv).permute(1, 2, 0)
        return S
    out = [[[0] * NB for _ in range(O)] for _ in range(T)]
    for k, a, ta, b, tb in terms:
        for nb in range(NB):
            av = [[int(v) << int(s) for v, s in zip(r, rs)] for r, rs in zip(a[:, nb].tolist(), ta[:, nb].tolist())]
            bv = [[int(v) << int(s) for v, s in zip(r, rs)] for r, rs in zip(b[:, nb].tolist(), tb[:, nb].tolist())]
            for t in range(T):
                for o in range(O):
                    out[t][o][nb] += k * sum(p * q for p, q in zip(av[t], bv[o]))
    return out


def bias_init(b_codes, b_scales, b_elem, out_features: int, w: LinearWidths):
    """(A0, X0) per output from the bias MX tensor (codes [NBO, Bb], scales [NBO]), exactly."""
    if b_codes is None:
        return [0] * out_features, [0] * out_features
    bc = torch.as_tensor(b_codes, dtype=torch.int64)
    bs = torch.as_tensor(b_scales, dtype=torch.int64)
    sig, off = decode_sig_off(bc, b_elem)
    sc = bs.unsqueeze(-1).expand_as(bc)
    sig, off, sc = sig.reshape(-1)[:out_features], off.reshape(-1)[:out_features], sc.reshape(-1)[:out_features]
    A0 = [int(s) << w.GB for s in sig.tolist()]
    X0 = [int(o) + int(s) + w.BC for o, s in zip(off.tolist(), sc.tolist())]
    return A0, X0


def linear_accumulators(x_codes, x_scales, x_elem, w_codes, w_scales, w_elem, b_codes=None, b_scales=None,
                        b_elem=None, acc_guard: int = DEFAULT_ACC_GUARD, lmul: bool = False,
                        out_features: int | None = None, x_sig=None):
    """The hardware accumulators (A [T, O], X [T, O]) before output quantization (bit-exact).

    ``x_scales`` are x's E8M0(-equivalent) block exponents and ``x_sig`` [T, NB] (NVFP4 x, see
    :func:`decode_x_stream`) the block-scale significands the block sums are multiplied by.
    Returns Python-int nested lists ``A[t][o]``, ``X[t][o]`` (value A * 2^X).
    """
    x_codes = torch.as_tensor(x_codes, dtype=torch.int64)
    w_codes = torch.as_tensor(w_codes, dtype=torch.int64)
    x_scales = torch.as_tensor(x_scales, dtype=torch.int64)
    w_scales = torch.as_tensor(w_scales, dtype=torch.int64)
    T, NB, B = x_codes.shape
    O = w_codes.shape[0] if out_features is None else out_features
    w_codes, w_scales = w_codes[:O], w_scales[:O]
    b_elem = b_elem if b_elem is not None else w_elem
    w = linear_widths(x_elem, w_elem, B, acc_guard, lmul, b_elem, xssw=4 if x_sig is not None else 0)
    S = block_sums(x_codes, x_elem, w_codes, w_elem, lmul)
    if x_sig is not None:
        xs_ = torch.as_tensor(x_sig, dtype=torch.int64)
        if isinstance(S, torch.Tensor) and w.DW > 62:
            S = S.tolist()
        if isinstance(S, torch.Tensor):
            S = S * xs_.unsqueeze(1)
        else:
            S = [[[v * int(xs_[t, nb]) for nb, v in enumerate(r)] for r in St] for t, St in enumerate(S)]
    Y = x_scales.unsqueeze(1) + w_scales.unsqueeze(0) + w.C  # [T, O, NB]
    A0, X0 = bias_init(b_codes, b_scales, b_elem, O, w)
    if isinstance(S, torch.Tensor) and w.AW <= 61:
        A = torch.tensor(A0, dtype=torch.int64).expand(T, O).clone()
        X = torch.tensor(X0, dtype=torch.int64).expand(T, O).clone()
        for nb in range(NB):
            A, X = facc_step_torch(A, X, S[:, :, nb], Y[:, :, nb], w.AW, w.G)
        return A.tolist(), X.tolist()
    Sl = S.tolist() if isinstance(S, torch.Tensor) else S
    Yl = Y.tolist()
    A = [[A0[o] for o in range(O)] for _ in range(T)]
    X = [[X0[o] for o in range(O)] for _ in range(T)]
    for t in range(T):
        for o in range(O):
            a, x = A[t][o], X[t][o]
            for nb in range(NB):
                a, x = facc_step(a, x, Sl[t][o][nb], Yl[t][o][nb], w.AW, w.G)
            A[t][o], X[t][o] = a, x
    return A, X


def _sticky_rows(A, X, keep: int = 60):
    """Accumulator rows with |A| >= 2^keep narrowed to ``keep`` bits: A >> s with the shifted-out
    bits ORed into the lowest kept bit (sticky), X + s. Every seed quantizer rounds at most 11
    significand bits below the leading one and looks only at "anything below set", so the codes
    and scales of the narrowed rows are those of the exact ones (int64 tensors [T, O])."""
    Al, Xl = [], []
    for ra, rx in zip(A, X):
        na, nx = [], []
        for a, x in zip(ra, rx):
            s = abs(a).bit_length() - keep
            if s > 0:
                mag = abs(a)
                q = (mag >> s) | int(mag & ((1 << s) - 1) != 0)
                a, x = (-q if a < 0 else q), x + s
            na.append(a)
            nx.append(x)
        Al.append(na)
        Xl.append(nx)
    return torch.tensor(Al, dtype=torch.int64), torch.tensor(Xl, dtype=torch.int64)


def quantize_rows_format(A, X, qfmt: int, element, out_block: int, ts_exp: int = 0):
    """mx_quantize (mode ``qfmt``, :func:`masec.hw_templates.kernels.mx_quantize.quantize_blocks_format`)
    of accumulator rows A, X [T][O] (Python ints) -> (codes [T, NBO, Bo], scales [T, NBO], meta or None)."""
    from masec.hw_templates.kernels.mx_quantize import QFMT_MX, quantize_blocks_format

    if qfmt == QFMT_MX:
        return (*quantize_rows(A, X, element, out_block), None)
    T, O = len(A), len(A[0])
    nbo = -(-O // out_block)
    pad = nbo * out_block - O
    At, Xt = _sticky_rows(A, X)
    At = torch.nn.functional.pad(At, (0, pad)).reshape(T, nbo, out_block)
    Xt = torch.nn.functional.pad(Xt, (0, pad)).reshape(T, nbo, out_block)
    return quantize_blocks_format(At, Xt, qfmt, element, ts_exp)


def quantize_rows(A, X, out_elem, out_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mx_quantize of accumulator rows A, X [T][O] (Python ints) -> (codes [T, NBO, Bo], scales [T, NBO])."""
    from masec.hw_templates.kernels.mx_quantize import quantize_block

    T, O = len(A), len(A[0])
    nbo = -(-O // out_block)
    pad = nbo * out_block - O
    big = max((abs(a) for r in A for a in r), default=0).bit_length() > 61
    if not big:
        At = torch.tensor(A, dtype=torch.int64)
        Xt = torch.tensor(X, dtype=torch.int64)
        At = torch.nn.functional.pad(At, (0, pad)).reshape(T, nbo, out_block)
        Xt = torch.nn.functional.pad(Xt, (0, pad)).reshape(T, nbo, out_block)
        return quantize_blocks(At, Xt, out_elem)
    codes, scales = [], []
    for t in range(T):
        ra, rx = A[t] + [0] * pad, X[t] + [0] * pad
        cr, sr = [], []
        for b in range(nbo):
            c, s = quantize_block(ra[b * out_block:(b + 1) * out_block], rx[b * out_block:(b + 1) * out_block], out_elem)
            cr.append(c)
            sr.append(s)
        codes.append(cr)
        scales.append(sr)
    return torch.tensor(codes, dtype=torch.int64), torch.tensor(scales, dtype=torch.int64)


def linear_model(x_codes, x_scales, x_elem, w_codes, w_scales, w_elem, b_codes, b_scales, out_elem,
                 out_block: int, acc_guard: int = DEFAULT_ACC_GUARD, lmul: bool = False, b_elem=None,
                 out_features: int | None = None, y_qfmt: int = 0, y_ts_exp: int = 0, x_sig=None):
    """Bit-exact model of mx_linear: y = x W^T (+ b) as MX codes.

    Args:
        x_codes, x_scales: activations [T, NB, B] codes, [T, NB] E8M0 scales (IN blocked, padded).
        x_elem, w_elem, out_elem: masec.formats ElementFormats of x, W and y.
        w_codes, w_scales: W [OUT, IN] encoded along IN: [OUT, NB, B], [OUT, NB].
        b_codes, b_scales: bias [OUT] encoded (blocks along OUT): [NBO, Bb], [NBO]; or None.
        out_block: block size of y (along OUT).
        acc_guard: ACC_GUARD (accumulator guard bits below the block-sum window).
        lmul: use L-Mul products (only when x and W are fp elements).
        b_elem: element format of the bias (default: w_elem).
        out_features: OUT (default w_codes.shape[0]).
        x_sig: NVFP4 x's block-scale significands [T, NB] (:func:`decode_x_stream`), or None.
        y_qfmt, y_ts_exp: a seed output format (``Y_QFMT``: mx_quantize's QFMT 1 M2XFP, 2 NVFP4 with
            tensor scale 2^y_ts_exp, 3 Anda; ``out_elem`` then the quantizer's element,
            mx_quantize.output_format_params).

    Returns:
        (y_codes [T, NBO, out_block], y_scales [T, NBO]) int64, the last block zero-padded; with a
        seed ``y_qfmt`` (codes, scales, meta), meta the M2XFP subgroup metadata [T, NBO, out_block/8]
        or None.
    """
    A, X = linear_accumulators(x_codes, x_scales, x_elem, w_codes, w_scales, w_elem, b_codes, b_scales,
                               b_elem, acc_guard, lmul, out_features, x_sig)
    if y_qfmt:
        return quantize_rows_format(A, X, y_qfmt, out_elem, out_block, y_ts_exp)
    return quantize_rows(A, X, out_elem, out_block)


def exact_linear(x_codes, x_scales, x_elem, w_codes, w_scales, w_elem, b_codes=None, b_scales=None,
                 b_elem=None, out_features: int | None = None) -> list[list]:
    """Exact rational reference y[t][o] (fractions.Fraction) of the decoded MX operands."""
    from fractions import Fraction

    def vals(codes, scales, el):
        v = el.value_table()
        table = [Fraction(t) if math.isfinite(t) else None for t in v.tolist()]  # exact in float64
        c = torch.as_tensor(codes, dtype=torch.int64)
        s = torch.as_tensor(scales, dtype=torch.int64)
        out = []
        for blk_c, sc in zip(c.reshape(-1, c.shape[-1]).tolist(), s.reshape(-1).tolist()):
            f = Fraction(2) ** (sc - 127)
            out.extend(table[k] * f for k in blk_c)
        return out

    x_codes = torch.as_tensor(x_codes)
    T = x_codes.shape[0]
    O = w_codes.shape[0] if out_features is None else out_features
    n = x_codes.shape[1] * x_codes.shape[2]
    xv = vals(x_codes, x_scales, x_elem)
    wv = vals(torch.as_tensor(w_codes)[:O], torch.as_tensor(w_scales)[:O], w_elem)
    bv = vals(b_codes, b_scales, b_elem or w_elem)[:O] if b_codes is not None else [Fraction(0)] * O
    return [[sum(xv[t * n + i] * wv[o * n + i] for i in range(n)) + bv[o] for o in range(O)] for t in range(T)]


# ------------------------------------------------------------------------------ seed weight formats
# WFMT of the RTL per weight format family; the MX path above is WFMT 0.
WFMT = {"mx": 0, "m2xfp": 1, "nvfp4": 2, "bitmod": 3}
M2XFP_SUBGROUP = 8
BITMOD_DOT_BITS = {4: 6, 3: 4}   # BitMoD code -> signed integer in code units: |v| <= 16 (fp4), 6 (fp3)
TS_SHIFT = 24                    # NVFP4: A * TS_SIG is rounded back by 2^24 (TS_SIG < 2^24)


def weight_kind(w_fmt) -> str:
    """The weight format family of a masec.formats format: mx, m2xfp, nvfp4, bitmod (else ValueError)."""
    from masec.formats.bitmod import BitMoDFormat
    from masec.formats.m2xfp import M2XFPWeightFormat
    from masec.formats.mx import MXFormat
    from masec.formats.nvfp4 import NVFP4Format

    for cls, kind in ((MXFormat, "mx"), (M2XFPWeightFormat, "m2xfp"), (NVFP4Format, "nvfp4"),
                      (BitMoDFormat, "bitmod")):
        if isinstance(w_fmt, cls):
            if kind == "nvfp4" and not w_fmt.tensor_scale:
                raise ValueError("nvfp4 without a tensor scale has no linear kernel")
            return kind
    raise ValueError(f"weight format {w_fmt.name!r} has no linear kernel (mx_linear takes MX, m2xfp4_w, "
                     f"nvfp4, bitmod_fp4, bitmod_fp3 weights)")


def _seed_widths(x_elem, w_elem, block, acc_guard, b_elem, kind, xssw: int = 0) -> LinearWidths:
    """Widths of the seed weight datapaths (same formulas as mx_linear.sv.j2's localparams).

    m2xfp: fp4 products times (4 + m) (3 more bits), unit 2^(exmin_x + exmin_w - 2);
    nvfp4: fp4 products, the block sum times the UE4M3 significand (4 bits);
    bitmod: products with the code's integer value (code units), the block sum times the FP16
    significand (11 bits)."""
    if b_elem is None:   # no bias: the RTL's BB_* default to an int8 element (GB and BC unused)
        from masec.formats.element import int_element
        b_elem = int_element(8)
    xi, bi = elem_info(x_elem), elem_info(b_elem)
    if kind == "bitmod":
        dwb = BITMOD_DOT_BITS[w_elem.bits]
        wi = ElemInfo(True, dwb, dwb - 2, 0, 0, dwb, 0, 0)
    else:
        wi = elem_info(w_elem)
    lb = int(math.log2(block))
    PW = xi.sigw + wi.sigw + xi.offmax + wi.offmax + (3 if kind == "m2xfp" else 0)
    DW0 = PW + lb
    SSW = {"nvfp4": 4, "bitmod": 11}.get(kind, 0) + xssw
    DW = DW0 + SSW
    AW = DW + acc_guard + 1
    C = xi.exmin + wi.exmin + {"m2xfp": -256, "nvfp4": -127 - 9, "bitmod": -127 - 24}[kind]
    GB = AW - 1 - bi.sigw
    return LinearWidths(False, 0, 0, PW, DW, AW, acc_guard, C, bi.sigw, GB, bi.exmin - 127 - GB, DW0, SSW)


@dataclass(frozen=True)
class WeightImage:
    """A weight matrix W [OUT, IN] as mx_linear holds it, for every weight format family.

    codes [OUT, NB, B]: element codes along IN in x's blocks of B (zero-padded to NB*B);
    scales [OUT, NB]: the block's scale code: E8M0 (mx; m2xfp: E+b), UE4M3 (nvfp4), the FP16 bits of
    the block's group (bitmod); meta: m2xfp subgroup m [OUT, NB, B/8], bitmod type id [OUT, NB]
    (of the block's group), else None; ts_sig/ts_exp: nvfp4 tensor scale = ts_sig * 2^ts_exp.
    """
    kind: str
    elem: object           # ElementFormat of the ROM codes (FP4 E2M1; bitmod: a bits-wide int code)
    codes: torch.Tensor
    scales: torch.Tensor
    meta: torch.Tensor | None = None
    ts_sig: int = 0
    ts_exp: int = 0
    group: int = 0         # bitmod group size along IN (a multiple of B)

    @property
    def block(self) -> int:
        return self.codes.shape[-1]


ANDA_SCALE_OFFSET = 112   # Anda S -> the E8M0-equivalent scale of its int element (see anda_as_mx)


def is_anda(fmt) -> bool:
    from masec.formats.anda import AndaFormat
    return isinstance(fmt, AndaFormat)


def anda_as_mx(codes, scales, mbits: int):
    """Anda x (codes sign<<M | k [..., G], shared exponents S [...]) as the kernel decodes it:
    (two's complement int codes of M+1 bits, E8M0-equivalent scales S + 112, int_element(M+1)).
    value k * 2^(S - 14 - M) = k * 2^-(M-1) * 2^((S + 112) - 127): the same numbers, exactly."""
    from masec.formats.element import int_element

    c = torch.as_tensor(codes, dtype=torch.int64)
    k = c & ((1 << mbits) - 1)
    tc = torch.where((c >> mbits) & 1 == 1, (-k) & ((1 << (mbits + 1)) - 1), k)
    return tc, torch.as_tensor(scales, dtype=torch.int64) + ANDA_SCALE_OFFSET, int_element(mbits + 1)


# ------------------------------------------------------------------------------ seed activation formats as x
M2XFP_X_OFFSET = 2        # M2XFP x -> the E8M0-equivalent scale of its int7 lanes (see m2xfp_act_as_int)
NVFP4_X_OFFSET = 118      # NVFP4 x: E8M0-equivalent exponent = UE4M3 offset + X_TS_EXP + 118


def x_stream_format(fmt) -> tuple[int, object]:
    """``(XFMT, stream element)`` of an x format: MX (0, its element), ``m2xfp4_a`` (1, FP4 E2M1),
    ``nvfp4`` (2, FP4 E2M1), ``anda<M>`` (3, int_element(M + 1), M <= 15); else ValueError. The
    codes are the same as mx_quantize's QFMT (a producer's output format is the consumer's x)."""
    from masec.hw_templates.kernels.mx_quantize import output_format_params

    try:
        return output_format_params(fmt)
    except ValueError as exc:
        raise ValueError(f"x format {getattr(fmt, 'name', fmt)!r}: mx_linear decodes MX, m2xfp4_a, nvfp4 and "
                         f"anda<M> (M <= 15) streams ({exc})") from None


def m2xfp_act_as_int(codes, scales, meta):
    """M2XFP activations (``m2xfp4_a``: FP4 codes [..., B], E8M0 scales [...], metadata [..., B/8]) as
    mx_linear decodes them: every lane becomes the FP6 E2M3 code ``4c`` of its FP4 magnitude code c
    (the same value), the top-1 lane of each subgroup of 8 (largest c, lowest index on ties)
    ``4c + meta - 1`` (0 when that is -1, a pattern no encoder emits); the E2M3 value in units of
    2^-3 (|v| <= 60) with the code's sign is a two's complement int element of 7 bits (value
    v * 2^-5 * 2^((S + 2) - 127)). Returns (int7 codes, E8M0-equivalent scales S + 2, int_element(7))."""
    from masec.formats.element import int_element

    c = torch.as_tensor(codes, dtype=torch.int64)
    mt = torch.as_tensor(meta, dtype=torch.int64)
    c4 = c & 7
    sg = c4.shape[:-1] + (c4.shape[-1] // M2XFP_SUBGROUP, M2XFP_SUBGROUP)
    c4s = c4.reshape(sg)
    top = c4s.argmax(-1, keepdim=True)                     # first maximum: lowest index
    is_top = torch.zeros_like(c4s, dtype=torch.bool).scatter_(-1, top, True)
    c6 = 4 * c4s + torch.where(is_top, mt.unsqueeze(-1) - 1, torch.zeros_like(c4s))
    c6 = c6.clamp(min=0).reshape(c4.shape)
    e, m = c6 >> 3, c6 & 7
    v = torch.where(e > 0, (m + 8) << (e - 1).clamp(min=0), m)
    v = torch.where((c >> 3) & 1 == 1, -v, v)
    return v & 127, torch.as_tensor(scales, dtype=torch.int64) + M2XFP_X_OFFSET, int_element(7)


def nvfp4_scale_terms(scales):
    """UE4M3 block-scale codes -> (significand 0..15, exponent offset): value = sig * 2^(off - 9)."""
    s = torch.as_tensor(scales, dtype=torch.int64)
    e, m = (s >> 3) & 15, s & 7
    return torch.where(e > 0, m + 8, m), torch.where(e > 0, e - 1, torch.zeros_like(e))


@dataclass(frozen=True)
class XTerms:
    """An x stream as mx_linear's datapath reads it: ``codes`` [T, NB, B] of ``elem`` (what mx_dot
    multiplies), ``exps`` [T, NB] the E8M0-equivalent block exponent (value = elem value * sig *
    2^(exps - 127)), ``sig`` [T, NB] the block-scale significand multiplied into the block sum
    (NVFP4's UE4M3 significand; None: 1)."""
    codes: torch.Tensor
    exps: torch.Tensor
    elem: object
    sig: torch.Tensor | None = None


def decode_x_stream(x_fmt, codes, scales, meta=None, x_ts_exp: int | None = None) -> XTerms:
    """The :class:`XTerms` of an x stream of ``x_fmt`` (codes [T, NB, B], scales [T, NB], M2XFP metadata
    [T, NB, B/8]); ``x_ts_exp`` NVFP4's tensor scale 2^x_ts_exp."""
    from masec.hw_templates.kernels.mx_quantize import QFMT_ANDA, QFMT_M2XFP, QFMT_NVFP4

    xq, el = x_stream_format(x_fmt)
    c = torch.as_tensor(codes, dtype=torch.int64)
    sc = torch.as_tensor(scales, dtype=torch.int64)
    if xq == QFMT_M2XFP:
        return XTerms(*m2xfp_act_as_int(c, sc, meta))
    if xq == QFMT_ANDA:
        return XTerms(*anda_as_mx(c, sc, x_fmt.mbits))
    if xq == QFMT_NVFP4:
        sig, off = nvfp4_scale_terms(sc)
        return XTerms(c, off + int(x_ts_exp) + NVFP4_X_OFFSET, el, sig)
    return XTerms(c, sc, el)


def fp32_sig_exp(v: float) -> tuple[int, int]:
    """(sig, exp) with v = sig * 2^exp exactly, 2^23 <= sig < 2^24, for a normal positive float32."""
    t = torch.tensor([v], dtype=torch.float32)
    bits = int(t.view(torch.int32)[0])
    e = (bits >> 23) & 0xFF
    if bits < 0 or e == 0 or e == 0xFF:
        raise ValueError(f"nvfp4 tensor scale {v!r} must be a positive normal float32")
    return (bits & 0x7FFFFF) | (1 << 23), e - 127 - 23


def weight_image(w_fmt, enc, block: int, in_features: int) -> WeightImage:
    """The :class:`WeightImage` of ``enc`` (``w_fmt.encode(W)`` with W [OUT, IN]) for x blocks of ``block``."""
    from masec.formats.element import int_element

    kind = weight_kind(w_fmt)
    codes = enc.codes.to(torch.int64)
    O = codes.shape[0]
    nb = -(-in_features // block)
    scales = enc.scales.to(torch.int64)
    if kind == "bitmod":
        G = w_fmt.group_size
        if G % block:
            raise ValueError(f"the BitMoD group ({G}) must be a multiple of the input block ({block})")
        r = G // block
        codes = codes.reshape(O, -1)[:, :nb * block].reshape(O, nb, block)
        blk_group = torch.arange(nb) // r
        tid = enc.meta["type_id"].to(torch.int64).reshape(O, -1)[:, blk_group]
        return WeightImage(kind, int_element(w_fmt.bits), codes,
                           scales.reshape(O, -1)[:, blk_group], tid, group=G)
    if enc.block_size != block:
        raise ValueError(f"{w_fmt.name} weights in blocks of {enc.block_size}, x in blocks of {block}: "
                         f"they must match")
    codes = codes.reshape(O, nb, block)
    scales = scales.reshape(O, nb)
    if kind == "mx":
        return WeightImage(kind, w_fmt.element, codes, scales)
    if kind == "m2xfp":
        return WeightImage(kind, w_fmt.element, codes, scales,
                           enc.meta["subgroup_m"].to(torch.int64).reshape(O, nb, block // M2XFP_SUBGROUP))
    ts = float(enc.meta["tensor_scale"])
    sig, ex = fp32_sig_exp(ts)
    return WeightImage(kind, w_fmt.element, codes, scales, None, sig, ex)


def bitmod_values(codes, type_ids, bits: int) -> torch.Tensor:
    """Integer value (code units) of BitMoD codes [..., n] under type ids [...] (the RTL's decode table)."""
    from masec.formats.bitmod import type_table

    tables = torch.stack([type_table(bits, t) for t in range(4)]).to(torch.int64)   # [4, 2^bits]
    c = torch.as_tensor(codes, dtype=torch.int64)
    t = torch.as_tensor(type_ids, dtype=torch.int64).unsqueeze(-1).expand_as(c)
    return tables[t, c]


def seed_weight_terms(img: WeightImage):
    """(wv [O, NB, B] int64 element values in units of 2^exmin_w (m2xfp: 2^(exmin_w - 2)),
    ssig [O, NB] block-scale significand (1 when none), sexp [O, NB] its exponent field)."""
    c = img.codes
    if img.kind == "bitmod":
        wv = bitmod_values(c, img.meta, img.elem.bits)
        h = img.scales
        e, m = (h >> 10) & 31, h & 1023
        return wv, torch.where(e > 0, m + 1024, m), torch.where(e > 0, e - 1, torch.zeros_like(e))
    sig, off = decode_sig_off(c, img.elem)
    wv = sig << off
    if img.kind == "m2xfp":
        wv = wv * (4 + img.meta.repeat_interleave(M2XFP_SUBGROUP, dim=-1))
    if img.kind == "nvfp4":
        s = img.scales
        e, m = (s >> 3) & 15, s & 7
        return wv, torch.where(e > 0, m + 8, m), torch.where(e > 0, e - 1, torch.zeros_like(e))
    return wv, torch.ones_like(img.scales), img.scales


def tensor_scale_step(A: int, X: int, ts_sig: int, ts_exp: int) -> tuple[int, int]:
    """NVFP4's tensor scale on a finished accumulator: (round_half_up(A * ts_sig / 2^24), X + ts_exp + 24)."""
    return rshift_round(A * ts_sig, TS_SHIFT), X + ts_exp + TS_SHIFT


def seed_linear_accumulators(x_codes, x_scales, x_elem, img: WeightImage, b_codes=None, b_scales=None,
                             b_elem=None, acc_guard: int = DEFAULT_ACC_GUARD, out_features: int | None = None,
                             x_sig=None):
    """The hardware accumulators (A, X) [T][O] of mx_linear with seed-format weights (bit-exact).

    Per block: S = sum x_int * w_int (exact; m2xfp: each subgroup's partial sum times (4 + m) by
    shift-and-add, the same integer), times the block-scale significand (nvfp4: UE4M3, bitmod: the
    group's FP16), exponent Y = Sx + sexp + C; the bounded floating accumulator as for MX.
    m2xfp and bitmod start from the bias; nvfp4 starts empty, applies the tensor scale
    (:func:`tensor_scale_step`) after the last block and then adds the bias with one more
    accumulator step (the bias is not scaled by it). ``x_sig``: as :func:`linear_accumulators` (NVFP4 x;
    the block sum is multiplied by both block-scale significands, an exact product of <= 15 bits).
    """
    x_codes = torch.as_tensor(x_codes, dtype=torch.int64)
    x_scales = torch.as_tensor(x_scales, dtype=torch.int64)
    T, NB, B = x_codes.shape
    O = img.codes.shape[0] if out_features is None else out_features
    w = linear_widths(x_elem, img.elem, B, acc_guard, False, b_elem, img.kind, 4 if x_sig is not None else 0)
    sx, ox = decode_sig_off(x_codes, x_elem)
    xv = sx << ox
    wv, ssig, sexp = seed_weight_terms(img)
    wv, ssig, sexp = wv[:O], ssig[:O], sexp[:O]
    S = torch.bmm(xv.permute(1, 0, 2), wv.permute(1, 2, 0)).permute(1, 2, 0)  # [T, O, NB] exact
    S = S * ssig.unsqueeze(0)
    if x_sig is not None:
        S = S * torch.as_tensor(x_sig, dtype=torch.int64).unsqueeze(1)
    Y = x_scales.unsqueeze(1) + sexp.unsqueeze(0) + w.C
    A0, X0 = bias_init(b_codes, b_scales, b_elem, O, w)
    nv = img.kind == "nvfp4"
    Sl, Yl = S.tolist(), Y.tolist()
    A = [[0] * O for _ in range(T)]
    X = [[0] * O for _ in range(T)]
    for t in range(T):
        for o in range(O):
            a, x = (0, 0) if nv else (A0[o], X0[o])
            for nb in range(NB):
                a, x = facc_step(a, x, Sl[t][o][nb], Yl[t][o][nb], w.AW, w.G)
            if nv:
                a, x = tensor_scale_step(a, x, img.ts_sig, img.ts_exp)
                a, x = facc_step(a, x, A0[o] >> w.GB, X0[o] + w.GB, w.AW, w.GB)
            A[t][o], X[t][o] = a, x
    return A, X


def seed_linear_model(x_codes, x_scales, x_elem, img: WeightImage, b_codes, b_scales, b_elem, out_elem,
                      out_block: int, acc_guard: int = DEFAULT_ACC_GUARD, out_features: int | None = None,
                      y_qfmt: int = 0, y_ts_exp: int = 0, x_sig=None):
    """Bit-exact model of mx_linear with seed-format weights -> (y_codes, y_scales) as linear_model
    (with a seed ``y_qfmt``: (codes, scales, meta); ``x_sig`` as :func:`linear_accumulators`)."""
    A, X = seed_linear_accumulators(x_codes, x_scales, x_elem, img, b_codes, b_scales, b_elem, acc_guard,
                                    out_features, x_sig)
    if y_qfmt:
        return quantize_rows_format(A, X, y_qfmt, out_elem, out_block, y_ts_exp)
    return quantize_rows(A, X, out_elem, out_block)


def seed_exact_weights(img: WeightImage, out_features: int | None = None) -> list[list]:
    """Exact rational W [O][NB*B] of a WeightImage, from the format definitions (not the RTL decode)."""
    from fractions import Fraction

    O = img.codes.shape[0] if out_features is None else out_features
    rows = []
    for o in range(O):
        r = []
        for nb in range(img.codes.shape[1]):
            sc = int(img.scales[o, nb])
            if img.kind == "bitmod":
                h = torch.tensor([sc], dtype=torch.int32).to(torch.int16).view(torch.float16)
                s = Fraction(float(h[0]))
                from masec.formats.bitmod import type_table
                tab = type_table(img.elem.bits, int(img.meta[o, nb]))
                r += [Fraction(float(tab[int(c)])) * s for c in img.codes[o, nb].tolist()]
                continue
            vals = img.elem.value_table()
            if img.kind == "nvfp4":
                from masec.formats.element import FP8_E4M3
                s = Fraction(float(FP8_E4M3.value_table()[sc])) * Fraction(img.ts_sig) * Fraction(2) ** img.ts_exp
            else:
                s = Fraction(2) ** (sc - 127)
            for i, c in enumerate(img.codes[o, nb].tolist()):
                f = Fraction(float(vals[c])) * s
                if img.kind == "m2xfp":
                    f *= Fraction(4 + int(img.meta[o, nb, i // M2XFP_SUBGROUP]), 4)
                r.append(f)
        rows.append(r)
    return rows


def pack_seed_weight_mem(img: WeightImage, in_features: int, out_features: int, p_in: int,
                         p_out: int) -> tuple[list[str], list[str]]:
    """Hex lines of W_MEM and WS_MEM for seed-format weights (layout in docs/kernels/mx_linear.md).

    * W_MEM word ``p*NINR + k``: the codes as for MX (``[(j*P_IN + l)*W_BITS +: W_BITS]``); m2xfp
      appends the metadata of the NCH = max(1, P_IN/8) subgroups the beat covers, output j's chunk c at
      ``[P_OUT*P_IN*W_BITS + (j*NCH + c)*2 +: 2]`` (with P_IN < 8 a subgroup's m repeats on its beats);
    * WS_MEM word ``p*NGS + g`` (NGS = NB, bitmod: ceil(NB / (G/B)) groups): lane j of WSL bits,
      E8M0 (mx, m2xfp: 8), UE4M3 (nvfp4: 7), ``{type id, FP16 exponent, FP16 mantissa}`` (bitmod: 17;
      the FP16 sign is always 0).
    """
    B = img.block
    nb, ninr, np_real = _geometry(in_features, out_features, B, B, p_in, p_out)
    bits = img.elem.bits
    flat = img.codes.reshape(img.codes.shape[0], -1).tolist()
    ch = min(p_in, M2XFP_SUBGROUP)
    nch = p_in // ch
    cw = p_out * p_in * bits
    words = []
    for p in range(np_real):
        for k in range(ninr):
            word = _codes_word(flat, p, k, p_in, p_out, out_features, bits)
            for j in range(p_out if img.kind == "m2xfp" else 0):
                o = p * p_out + j
                if o < out_features:
                    for c in range(nch):
                        i = k * p_in + c * ch            # first input of the chunk
                        m = int(img.meta[o, i // B, (i % B) // M2XFP_SUBGROUP])
                        word |= m << (cw + (j * nch + c) * 2)
            words.append(word)
    wbits = cw + (p_out * nch * 2 if img.kind == "m2xfp" else 0)
    r = img.group // B if img.kind == "bitmod" else 1
    wsl = {"mx": 8, "m2xfp": 8, "nvfp4": 7, "bitmod": 17}[img.kind]
    swords = []
    for p in range(np_real):
        for g in range(-(-nb // r)):
            word = 0
            for j in range(p_out):
                o = p * p_out + j
                if o >= out_features:
                    continue
                sc = int(img.scales[o, g * r])
                if img.kind == "bitmod":
                    if sc >> 15:
                        raise ValueError("BitMoD scales are positive FP16 values")
                    sc |= int(img.meta[o, g * r]) << 15
                word |= (sc & ((1 << wsl) - 1)) << (j * wsl)
            swords.append(word)
    return _hex_lines(words, wbits), _hex_lines(swords, p_out * wsl)


# ------------------------------------------------------------------------------ ROM packing
def _hex_lines(words: list[int], bits: int) -> list[str]:
    digits = max(1, -(-bits // 4))
    return [f"{w:0{digits}x}" for w in words]


def _geometry(in_features, out_features, block, out_block, p_in, p_out):
    nb = -(-in_features // block)
    ninr = -(-in_features // p_in)   # beats that carry inputs (all-padding beats have no ROM word)
    np_real = -(-out_features // p_out)
    return nb, ninr, np_real


def _codes_word(flat, p: int, k: int, p_in: int, p_out: int, out_features: int, bits: int) -> int:
    """The element codes of W_MEM word ``p*NINR + k``: output ``p*P_OUT + j``, input ``k*P_IN + l`` at
    ``[(j*P_IN + l)*bits +: bits]`` (outputs beyond OUT stay zero). ``flat[o]``: output o's codes."""
    word = 0
    for j in range(min(p_out, out_features - p * p_out)):
        codes = flat[p * p_out + j]
        for l in range(p_in):
            word |= (codes[k * p_in + l] & ((1 << bits) - 1)) << ((j * p_in + l) * bits)
    return word


def pack_weight_mem(w_codes, w_scales, w_elem, in_features: int, out_features: int, block: int, p_in: int,
                    p_out: int) -> tuple[list[str], list[str]]:
    """Hex lines of the two weight ROMs of mx_linear (``W_MEM``, ``WS_MEM``).

    ``w_codes [OUT, NB, B]``, ``w_scales [OUT, NB]``: W [OUT, IN] encoded along IN (masec.formats
    ``Encoded.codes/.scales``). Layout (pass p = outputs p*P_OUT ..; beat k = inputs k*P_IN ..):

    * W_MEM word ``p * NINR + k`` (NINR = ceil(IN/P_IN)): P_OUT*P_IN codes, code of output
      ``p*P_OUT + j`` and input ``k*P_IN + l`` at bits ``[(j*P_IN + l)*W_BITS +: W_BITS]``;
    * WS_MEM word ``p * NB + b``: P_OUT scales, that of output ``p*P_OUT + j``, block b at
      bits ``[j*8 +: 8]``.

    Outputs beyond OUT (last pass) are zero codes / scale 0.
    """
    wc = torch.as_tensor(w_codes, dtype=torch.int64)
    ws = torch.as_tensor(w_scales, dtype=torch.int64)
    nb, ninr, np_real = _geometry(in_features, out_features, block, block, p_in, p_out)
    bits = w_elem.bits
    flat = wc.reshape(wc.shape[0], -1).tolist()
    sc = ws.tolist()
    words, swords = [], []
    for p in range(np_real):
        words += [_codes_word(flat, p, k, p_in, p_out, out_features, bits) for k in range(ninr)]
        for b in range(nb):
            word = 0
            for j in range(p_out):
                o = p * p_out + j
                if o < out_features:
                    word |= (sc[o][b] & 0xFF) << (j * 8)
            swords.append(word)
    return _hex_lines(words, p_out * p_in * bits), _hex_lines(swords, p_out * 8)


def pack_bias_mem(b_codes, b_scales, b_elem, out_features: int, p_out: int) -> list[str]:
    """Hex lines of mx_linear's bias ROM (``B_MEM``): word p holds, for j < P_OUT, the bias of
    output ``p*P_OUT + j`` as ``{scale (8), code (BB_BITS)}`` at bits ``[j*(BB_BITS+8) +: BB_BITS+8]``.
    ``b_codes [NBO, Bb]``, ``b_scales [NBO]``: the bias [OUT] MX-encoded (any block size)."""
    bc = torch.as_tensor(b_codes, dtype=torch.int64)
    bs = torch.as_tensor(b_scales, dtype=torch.int64)
    codes = bc.reshape(-1).tolist()
    scales = bs.unsqueeze(-1).expand_as(bc).reshape(-1).tolist()
    lw = b_elem.bits + 8
    np_real = -(-out_features // p_out)
    words = []
    for p in range(np_real):
        word = 0
        for j in range(p_out):
            o = p * p_out + j
            if o < out_features:
                word |= (((scales[o] & 0xFF) << b_elem.bits) | (codes[o] & ((1 << b_elem.bits) - 1))) << (j * lw)
        words.append(word)
    return _hex_lines(words, p_out * lw)


# ------------------------------------------------------------------------------ configuration
def _rom_element(w_fmt, kind):
    """The element format of the weight ROM's codes (BitMoD: its sign-magnitude code, as an int of that width)."""
    if kind == "bitmod":
        from masec.formats.element import int_element
        return int_element(w_fmt.bits)
    return w_fmt.element


def _elem_params(el, prefix):
    i = elem_info(el)
    return {f"{prefix}IS_INT": int(i.is_int), f"{prefix}BITS": i.bits, f"{prefix}MBITS": i.mbits,
            f"{prefix}BIAS": i.bias if not i.is_int else 0}


def stream_widths(fmt, lanes: int) -> tuple[int, int]:
    """``(data_bits, scale_bits)`` of a masec stream of ``fmt`` with ``lanes`` lanes per beat: MX
    (``lanes * element bits``), ``nvfp4`` (E2M1 codes; the UE4M3 block scale), ``m2xfp4_a`` (E2M1 codes
    plus 2 metadata bits per subgroup of 8 above them: ``lanes`` a multiple of 8), ``anda<M>``
    (``lanes * (M + 1)``, M <= 15; S on the scale bus). The scale bus is 8 bits for every format (UE4M3
    and Anda's 5-bit S in its low bits). Anything else raises ValueError."""
    from masec.hw_templates.kernels.mx_quantize import QFMT_M2XFP, output_data_width, output_format_params

    qfmt, el = output_format_params(fmt)
    if qfmt == QFMT_M2XFP and lanes % M2XFP_SUBGROUP:
        raise ValueError(f"an m2xfp4_a stream needs a multiple of {M2XFP_SUBGROUP} lanes (its metadata is per "
                         f"subgroup of 8), got {lanes}")
    return output_data_width(lanes, qfmt, el), 8


def stream_block(fmt) -> int:
    """The block size a stream of ``fmt`` is grouped in along its last axis (Anda: its group)."""
    return fmt.group_size if is_anda(fmt) else fmt.block_size


def instance_config(in_features: int, out_features: int, x_fmt, w_fmt, out_fmt, has_bias: bool,
                    p_in: int, p_out: int, b_fmt=None, acc_guard: int = DEFAULT_ACC_GUARD, lmul: bool = False,
                    w_mem: str = "w.mem", ws_mem: str = "ws.mem", b_mem: str = "b.mem",
                    rows: int | None = None, p_y: int | None = None,
                    ts: tuple[int, int] | None = None, x_ts_exp: int | None = None,
                    y_ts_exp: int | None = None) -> tuple[dict, dict, str]:
    """(jinja_ctx, sv_params, module_name) of an mx_linear instance.

    ``x_fmt``, ``w_fmt``, ``out_fmt`` (and ``b_fmt``, default ``w_fmt``) are masec.formats
    MXFormat objects; x and W must share the block size (they are blocked along IN together).
    ``rows`` is unused by the RTL (it streams rows forever); accepted for the compiler's convenience.
    ``p_y`` (default ``p_out``) is the output stream's lane count, a divisor of ``p_out``: the
    P_OUT results of a pass leave as P_OUT/P_Y beats through a P_Y-lane quantizer (full rate while
    ceil(IN/P_IN) >= P_OUT/P_Y).
    ``w_fmt`` may also be a seed weight format (m2xfp4_w, nvfp4, bitmod_fp4/fp3; the bias then defaults
    to x's format): the instance gets ``WFMT`` and the format's parameters; ``ts`` is NVFP4's tensor
    scale as ``(TS_SIG, TS_EXP)`` (:class:`WeightImage` ``ts_sig``/``ts_exp``; default 1.0).
    ``x_fmt`` may be a seed activation format (``XFMT``: ``m2xfp4_a``, ``nvfp4`` with the power-of-two
    tensor scale ``2^x_ts_exp`` (``X_TS_EXP``, required), ``anda<M>``); ``out_fmt`` likewise
    (``Y_QFMT`` / ``Y_TS_EXP``, ``y_ts_exp`` required for ``nvfp4``). A seed x needs an MX ``b_fmt``
    when there is a bias. MX instances keep exactly their former parameter list.
    """
    from masec.hw_templates.kernels.mx_quantize import QFMT_MX, QFMT_NVFP4, output_format_params

    kind = weight_kind(w_fmt)
    xq, x_el = x_stream_format(x_fmt)
    yq, y_el = output_format_params(out_fmt)
    block, out_block = stream_block(x_fmt), stream_block(out_fmt)
    if kind == "bitmod":
        if w_fmt.group_size % block:
            raise ValueError(f"the BitMoD group ({w_fmt.group_size}) must be a multiple of x's block ({block})")
    elif block != w_fmt.block_size:
        raise ValueError(f"x and W must share the block size along IN ({block} != {w_fmt.block_size})")
    if (kind != "mx" or xq != QFMT_MX) and lmul:
        raise ValueError(f"L-Mul products are built for MX x and W only, not {x_fmt.name} x {w_fmt.name}")
    if block % p_in or out_block % p_out:
        raise ValueError(f"P_IN={p_in} must divide B={block} and P_OUT={p_out} the output block {out_block}")
    stream_widths(x_fmt, p_in)
    if (xq == QFMT_NVFP4) != (x_ts_exp is not None):
        raise ValueError("x_ts_exp (the power-of-two tensor scale 2^x_ts_exp) is given exactly for an nvfp4 x")
    if (yq == QFMT_NVFP4) != (y_ts_exp is not None):
        raise ValueError("y_ts_exp (the power-of-two tensor scale 2^y_ts_exp) is given exactly for an nvfp4 output")
    for t, who in ((x_ts_exp, "x"), (y_ts_exp, "output")):
        if t is not None and not -256 <= int(t) <= 256:
            raise ValueError(f"the nvfp4 {who} tensor scale exponent must be -256..256, got {t}")
    if b_fmt is None and (kind != "mx" or xq != QFMT_MX) and has_bias:
        raise ValueError("a seed-format x or W needs an MX bias format (b_fmt)")
    if b_fmt is None:   # without a bias the BB_* parameters only need to be a valid MX element
        from masec.formats import parse_format
        b_fmt = w_fmt if kind == "mx" else parse_format("mxint8")
    p_y = p_out if p_y is None else p_y
    if p_out % p_y:
        raise ValueError(f"P_Y={p_y} must divide P_OUT={p_out}")
    stream_widths(out_fmt, p_y)
    params = {"IN": in_features, "OUT": out_features, "P_IN": p_in, "P_OUT": p_out, "P_Y": p_y, "B": block,
              "B_OUT": out_block,
              **_elem_params(x_el, "X_"),
              **_elem_params(_rom_element(w_fmt, kind), "W_"),
              **_elem_params(b_fmt.element, "BB_"), **element_sv_params(y_el, "Y_"),
              "HAS_BIAS": int(bool(has_bias)), "ACC_GUARD": acc_guard, "LMUL": int(bool(lmul)),
              "W_MEM": w_mem, "WS_MEM": ws_mem, "B_MEM": b_mem if has_bias else ""}
    if xq != QFMT_MX:   # MX instances keep exactly their former parameter list
        params["XFMT"] = int(xq)
        if xq == QFMT_NVFP4:
            params["X_TS_EXP"] = int(x_ts_exp)
    if yq != QFMT_MX:
        params["Y_QFMT"] = int(yq)
        if yq == QFMT_NVFP4:
            params["Y_TS_EXP"] = int(y_ts_exp)
    if kind != "mx":
        params["WFMT"] = WFMT[kind]
        if kind == "bitmod":
            params["W_GROUP"] = w_fmt.group_size
        if kind == "nvfp4":
            params.update({"TS_SIG": ts[0], "TS_EXP": ts[1]} if ts else {"TS_SIG": 1 << 23, "TS_EXP": -23})
    return {}, params, "mx_linear"


def ideal_cycles(rows: int, in_features: int, out_features: int, p_in: int, p_out: int) -> int:
    return rows * (-(-out_features // p_out)) * (-(-in_features // p_in))


# ------------------------------------------------------------------------------ pipelining
def delay_model(values: list) -> list:
    """mx_delay: the values in the same order, N enabled cycles later (a delay changes no value)."""
    return list(values)


#: Largest PIPE mx_linear (and mx_dot) have cuts for; mx_linear passes it to its mx_quantize (0..3).
MAX_PIPE = 3


def _check_pipe(pipe: int, who: str) -> int:
    from masec.passes.hw.pipeline import check_pipe

    return check_pipe(pipe, MAX_PIPE, who)


def dot_latency(p: int, pipe: int) -> int:
    """Enabled cycles from mx_dot's inputs to its sum at ``PIPE = pipe`` (0: combinational).

    PIPE >= 1: the products and the adder tree every second level and at its root; PIPE >= 2: also
    the decoded operands, and the tree after every level."""
    pipe = _check_pipe(pipe, "mx_dot")
    if pipe == 0:
        return 0
    levels = (int(p) - 1).bit_length()          # ceil(log2 P), 0 for P = 1
    per = 1 if pipe >= 2 else 2
    return (1 if pipe >= 2 else 0) + 1 + -(-levels // per)


def latency(params: dict) -> int:
    """Cycles mx_linear's ``PIPE`` adds over PIPE 0 (every output beat later by this), for its SV
    ``params``: the register slice on s_x (cut X), cut R, mx_dot, M2XFP's metadata multiply, the block-scale cut (NVFP4 / BitMoD W, NVFP4 x), the
    accumulator's extra stages (:func:`accumulator_stages` - 1), NVFP4's tensor-scale tail, the register
    slice in front of mx_quantize, and the nested mx_quantize's latency (2 * PIPE, + 1 at PIPE 3)."""
    from masec.hw_templates.kernels.mx_quantize import latency as quantize_latency

    pipe = _check_pipe(params.get("PIPE", 0) or 0, "mx_linear")
    if pipe == 0:
        return 0
    wfmt = int(params.get("WFMT", 0) or 0)
    xfmt = int(params.get("XFMT", 0) or 0)
    p_in, block = int(params["P_IN"]), int(params["B"])
    dot_p = min(p_in, 8) if wfmt == 1 else p_in
    return (1 + 1 + dot_latency(dot_p, pipe) + (1 if wfmt == 1 else 0) + (1 if wfmt in (2, 3) or xfmt == 2 else 0)
            + accumulator_stages(params) - 1 + (pipe if wfmt == 2 else 0) + 1 + quantize_latency(pipe))


def accumulator_stages(params: dict) -> int:
    """Enabled cycles of mx_linear's accumulator step (the template's FST): the step may take as many
    cycles as a pass's blocks arrive apart (B / P_IN beats, or fewer for the last block, whose
    all-padding beats passes 1.. skip; unbounded when a row has one block: no step reads the
    previous one), up to what PIPE asks for: 1 at PIPE 0, 2 at PIPE 1 and 2 (mx_facc_align |
    mx_facc_add), 4 at PIPE 3 (mx_facc_cmp | mx_facc_shift | mx_facc_sum | mx_facc_norm; 3 cycles
    without the last cut when the blocks are 3 beats apart)."""
    pipe = _check_pipe(params.get("PIPE", 0) or 0, "mx_linear")
    p_in, block, n_in = int(params["P_IN"]), int(params["B"]), int(params["IN"])
    nb, nbb, ninr = -(-n_in // block), block // p_in, -(-n_in // p_in)
    gap = 4 if nb == 1 else min(nbb, ninr - (nb - 1) * nbb)
    return min(4 if pipe >= 3 else 2 if pipe >= 1 else 1, gap)


_ELEM_DEFAULTS = {"X_IS_INT": 1, "X_BITS": 8, "X_MBITS": 6, "X_BIAS": 0,
                  "W_IS_INT": 1, "W_BITS": 8, "W_MBITS": 6, "W_BIAS": 0}

SPECS = (
    KernelSpec(
        name="mx_dot",
        template="mx_dot.sv.j2",
        doc="Exact dot product of P pairs of MX element codes (x, w) as a signed integer in units of "
            "2^(exmin_x + exmin_w) (L-Mul: 2^(... - K)); the block scales are applied by the caller. "
            "Combinational at PIPE 0; products and adder tree registered at PIPE >= 1 (stall enable en_i).",
        params=(ParamSpec("P", "element pairs", 8),
                ParamSpec("X_IS_INT/X_BITS/X_MBITS", "x element format", None),
                ParamSpec("W_IS_INT/W_BITS/W_MBITS", "w element format", None),
                ParamSpec("LMUL", "1: L-Mul approximate products when both elements are fp", 0),
                ParamSpec("SW", "signed width of the sum", 32),
                ParamSpec("PIPE", "pipeline depth 0..3 (0: combinational; latency dot_latency(P, PIPE))", 0)),
        ports=(),
        model=f"{__name__}:block_sums",
        examples=({"label": "P8 int8xint8", "ctx": {}, "params": {"P": 8, "SW": 24}},
                  {"label": "P8 e4m3xe4m3", "ctx": {}, "params": {
                      "P": 8, "SW": 44, "X_IS_INT": 0, "X_BITS": 8, "X_MBITS": 3,
                      "W_IS_INT": 0, "W_BITS": 8, "W_MBITS": 3}},
                  {"label": "P8 e4m3xe4m3 L-Mul", "ctx": {}, "params": {
                      "P": 8, "SW": 48, "X_IS_INT": 0, "X_BITS": 8, "X_MBITS": 3,
                      "W_IS_INT": 0, "W_BITS": 8, "W_MBITS": 3, "LMUL": 1}},
                  {"label": "P8 int8xint8 PIPE1", "ctx": {}, "params": {"P": 8, "SW": 24, "PIPE": 1}},
                  {"label": "P32 e4m3xe4m3 PIPE2", "ctx": {}, "params": {
                      "P": 32, "SW": 44, "X_IS_INT": 0, "X_BITS": 8, "X_MBITS": 3,
                      "W_IS_INT": 0, "W_BITS": 8, "W_MBITS": 3, "PIPE": 2}},
                  {"label": "P8 e4m3xe4m3 L-Mul PIPE2", "ctx": {}, "params": {
                      "P": 8, "SW": 48, "X_IS_INT": 0, "X_BITS": 8, "X_MBITS": 3,
                      "W_IS_INT": 0, "W_BITS": 8, "W_MBITS": 3, "LMUL": 1, "PIPE": 2}}),
        extra={"latency": lambda params: dot_latency(params.get("P", 8), params.get("PIPE", 0) or 0)},
    ),
    KernelSpec(
        name="mx_act_decode",
        template="mx_act_decode.sv.j2",
        doc="Decode of one activation-stream beat (MX, M2XFP activations, NVFP4, Anda: XFMT = mx_quantize's "
            "QFMT) into the element lanes a multiplier reads, the E8M0-equivalent block exponent and NVFP4's "
            "UE4M3 significand. Combinational; shared by mx_linear's x and mx_matmul's A and B.",
        params=(ParamSpec("P", "lanes per beat (M2XFP: a multiple of 8)", 8),
                ParamSpec("X_BITS", "stream code width (M2XFP, NVFP4: 4; Anda: M+1)", 8),
                ParamSpec("XFMT", "0 MX, 1 M2XFP activations, 2 NVFP4, 3 Anda", 0),
                ParamSpec("X_TS_EXP", "NVFP4: tensor scale 2^X_TS_EXP", 0),
                ParamSpec("XW", "exponent width", XW)),
        ports=(),
        model=f"{__name__}:decode_x_stream",
        examples=({"label": "P8 mxint8", "ctx": {}, "params": {"P": 8, "X_BITS": 8, "XFMT": 0}},
                  {"label": "P16 m2xfp4_a", "ctx": {}, "params": {"P": 16, "X_BITS": 4, "XFMT": 1}},
                  {"label": "P8 nvfp4 2^-4", "ctx": {}, "params": {"P": 8, "X_BITS": 4, "XFMT": 2, "X_TS_EXP": -4}},
                  {"label": "P8 anda6", "ctx": {}, "params": {"P": 8, "X_BITS": 7, "XFMT": 3}}),
    ),
    KernelSpec(
        name="mx_delay",
        template="mx_delay.sv.j2",
        doc="N-stage stall-enable delay line (shift register loaded on en_i, reset to 0): the side band "
            "(flags, exponents, scale words) of mx_linear's pipelined datapath.",
        params=(ParamSpec("W", "bits per stage", 8), ParamSpec("N", "stages (0: a wire)", 1)),
        ports=(),
        model=f"{__name__}:delay_model",
        examples=({"label": "W8 N0", "ctx": {}, "params": {"W": 8, "N": 0}},
                  {"label": "W40 N3", "ctx": {}, "params": {"W": 40, "N": 3}}),
    ),
    KernelSpec(
        name="mx_facc_cmp",
        template="mx_facc_cmp.sv.j2",
        doc="First quarter of an mx_facc step (mx_facc_align's exponent compare): which operand has the "
            "larger exponent (a select, applied by mx_facc_shift), their clamped exponent difference, the "
            "S = 0 / A = 0 cases. Combinational.",
        params=(ParamSpec("AW", "accumulator mantissa bits", 32), ParamSpec("DW", "block-sum bits", 24),
                ParamSpec("G", "guard: S enters as S << G (AW = DW + G + 1)", 7),
                ParamSpec("XW", "exponent bits", XW)),
        ports=(),
        model=f"{__name__}:facc_step",
        examples=({"label": "AW32", "ctx": {}, "params": {"AW": 32, "DW": 24, "G": 7}},),
    ),
    KernelSpec(
        name="mx_facc_shift",
        template="mx_facc_shift.sv.j2",
        doc="Second quarter of an mx_facc step (mx_facc_align's alignment): the operands picked by "
            "mx_facc_cmp's select (three copies), the lesser one shifted right by the exponent difference, "
            "one fraction bit kept; g + 1 beside it. Combinational.",
        params=(ParamSpec("AW", "accumulator mantissa bits", 32), ParamSpec("DW", "block-sum bits", 24),
                ParamSpec("G", "guard: S enters as S << G (AW = DW + G + 1)", 7),
                ParamSpec("XW", "exponent bits", XW)),
        ports=(),
        model=f"{__name__}:facc_step",
        examples=({"label": "AW32", "ctx": {}, "params": {"AW": 32, "DW": 24, "G": 7}},),
    ),
    KernelSpec(
        name="mx_facc_sum",
        template="mx_facc_sum.sv.j2",
        doc="Third quarter of an mx_facc step (mx_facc_add's two adders: 2g + l + 1 and 2(g + 1) + l + 1 "
            "side by side). Combinational.",
        params=(ParamSpec("AW", "accumulator mantissa bits", 32),),
        ports=(),
        model=f"{__name__}:facc_step",
        examples=({"label": "AW32", "ctx": {}, "params": {"AW": 32}},),
    ),
    KernelSpec(
        name="mx_facc_norm",
        template="mx_facc_norm.sv.j2",
        doc="Last quarter of an mx_facc step (mx_facc_add's one-bit renormalization). Combinational.",
        params=(ParamSpec("AW", "accumulator mantissa bits", 32), ParamSpec("XW", "exponent bits", XW)),
        ports=(),
        model=f"{__name__}:facc_step",
        examples=({"label": "AW32", "ctx": {}, "params": {"AW": 32}},),
    ),
    KernelSpec(
        name="mx_facc_align",
        template="mx_facc_align.sv.j2",
        doc="First half of an mx_facc step: exponent compare, alignment shift of the operand with the "
            "smaller exponent (one fraction bit kept), the S = 0 / A = 0 cases. Combinational: "
            "mx_facc_cmp -> mx_facc_shift.",
        params=(ParamSpec("AW", "accumulator mantissa bits", 32), ParamSpec("DW", "block-sum bits", 24),
                ParamSpec("G", "guard: S enters as S << G (AW = DW + G + 1)", 7),
                ParamSpec("XW", "exponent bits", XW)),
        ports=(),
        deps=("mx_facc_cmp", "mx_facc_shift"),
        model=f"{__name__}:facc_step",
        examples=({"label": "AW32", "ctx": {}, "params": {"AW": 32, "DW": 24, "G": 7}},),
    ),
    KernelSpec(
        name="mx_facc_add",
        template="mx_facc_add.sv.j2",
        doc="Second half of an mx_facc step: the round-half-up addition (one adder with carry-in) and "
            "the one-bit renormalization. Combinational: mx_facc_sum -> mx_facc_norm.",
        params=(ParamSpec("AW", "accumulator mantissa bits", 32), ParamSpec("XW", "exponent bits", XW)),
        ports=(),
        deps=("mx_facc_sum", "mx_facc_norm"),
        model=f"{__name__}:facc_step",
        examples=({"label": "AW32", "ctx": {}, "params": {"AW": 32}},),
    ),
    KernelSpec(
        name="mx_facc",
        template="mx_facc.sv.j2",
        doc="One step of the bounded floating accumulator: (A, X) + S*2^Y, align to the larger exponent "
            "with round-half-up, renormalize by one bit. Combinational: mx_facc_align -> mx_facc_add.",
        params=(ParamSpec("AW", "accumulator mantissa bits", 32), ParamSpec("DW", "block-sum bits", 24),
                ParamSpec("G", "guard: S enters as S << G (AW = DW + G + 1)", 7),
                ParamSpec("XW", "exponent bits", XW)),
        ports=(),
        deps=("mx_facc_align", "mx_facc_add"),
        model=f"{__name__}:facc_step",
        examples=({"label": "AW32", "ctx": {}, "params": {"AW": 32, "DW": 24, "G": 7}},
                  {"label": "AW52", "ctx": {}, "params": {"AW": 52, "DW": 43, "G": 8}}),
    ),
    KernelSpec(
        name="mx_linear",
        template="mx_linear.sv.j2",
        doc="y = x W^T (+ b): x streams [T, IN] (MX, P_IN lanes), W and bias in ROM ($readmemh), "
            "P_OUT outputs per pass, exact block dot products, bounded floating accumulator, "
            "output through mx_quantize (P_OUT lanes). One input beat per cycle per pass; PIPE 0..3 register "
            "cuts (latency(params) more cycles, same values).",
        params=(ParamSpec("IN", "input features", 64), ParamSpec("OUT", "output features", 64),
                ParamSpec("P_IN", "input lanes per beat (divides B)", 8),
                ParamSpec("P_OUT", "outputs computed at once (divides B_OUT)", 8),
                ParamSpec("P_Y", "output stream lanes (divides P_OUT; default P_OUT)", 8),
                ParamSpec("B", "block size of x and W along IN", 32),
                ParamSpec("B_OUT", "block size of y along OUT", 32),
                ParamSpec("X_IS_INT/X_BITS/X_MBITS/X_BIAS", "x element format (the stream's codes)", None),
                ParamSpec("XFMT", "x stream format: 0 MX, 1 M2XFP activations, 2 NVFP4, 3 Anda "
                          "(mx_quantize's QFMT codes; seed instances only)", 0),
                ParamSpec("X_TS_EXP", "NVFP4 x: tensor scale 2^X_TS_EXP", 0),
                ParamSpec("W_IS_INT/W_BITS/W_MBITS/W_BIAS", "W element format", None),
                ParamSpec("BB_IS_INT/BB_BITS/BB_MBITS/BB_BIAS", "bias element format", None),
                ParamSpec("Y_IS_INT/Y_BITS/Y_MBITS/Y_BIAS/Y_EMAX/Y_MAX_CODE", "output element (mx_quantize)", None),
                ParamSpec("Y_QFMT", "output format, mx_quantize's QFMT: 0 MX, 1 M2XFP activations (P_Y/4 "
                          "metadata bits above the codes), 2 NVFP4, 3 Anda", 0),
                ParamSpec("Y_TS_EXP", "NVFP4 output: tensor scale 2^Y_TS_EXP", 0),
                ParamSpec("HAS_BIAS", "1: add the bias from B_MEM", 0),
                ParamSpec("ACC_GUARD", "accumulator guard bits (AW = DW + ACC_GUARD + 1)", 4),
                ParamSpec("LMUL", "1: L-Mul approximate fp x fp products", 0),
                ParamSpec("W_MEM", "weight-code ROM file ($readmemh), see pack_weight_mem", "w.mem"),
                ParamSpec("WS_MEM", "weight-scale ROM file", "ws.mem"),
                ParamSpec("B_MEM", "bias ROM file (HAS_BIAS), see pack_bias_mem", ""),
                ParamSpec("PIPE", "pipeline depth 0..3 (latency(params) more cycles; also the nested mx_quantize's)",
                          0)),
        ports=(PortSpec("s_x", "in", "mx", "x rows, P_IN lanes"), PortSpec("m_y", "out", "mx", "y rows, P_OUT lanes")),
        deps=("mx_act_decode", "mx_delay", "mx_dot", "mx_facc", "mx_quantize"),
        ops=("linear",),
        model=f"{__name__}:linear_model",
        examples=(),  # set below: they need ROM images (example_config)
    ),
)


def example_config(label: str, in_features: int, out_features: int, x_name: str, w_name: str, out_name: str,
                   p_in: int, p_out: int, has_bias: bool = False, lmul: bool = False, seed: int = 0,
                   p_y: int | None = None, pipe: int = 0, y_ts_exp: int | None = None) -> dict:
    """A resource-table configuration with ROM images of a seeded Gaussian W (and bias) MX-encoded
    (``pipe``: its PIPE, given only when > 0, so the PIPE 0 entries keep their parameter lists;
    ``out_name`` may be a seed activation format, ``y_ts_exp`` NVFP4's tensor-scale exponent)."""
    from masec.formats import parse_format

    x_fmt, w_fmt, o_fmt = parse_format(x_name), parse_format(w_name), parse_format(out_name)
    _, params, _ = instance_config(in_features, out_features, x_fmt, w_fmt, o_fmt, has_bias, p_in, p_out,
                                   lmul=lmul, p_y=p_y, y_ts_exp=y_ts_exp)
    if pipe:
        params["PIPE"] = int(pipe)

    def weights():
        g = torch.Generator().manual_seed(seed)
        return w_fmt.encode(torch.randn(out_features, in_features, generator=g) / math.sqrt(in_features))

    def w_lines():
        e = weights()
        return "\n".join(pack_weight_mem(e.codes, e.scales, w_fmt.element, in_features, out_features,
                                          w_fmt.block_size, p_in, p_out)[0]) + "\n"

    def ws_lines():
        e = weights()
        return "\n".join(pack_weight_mem(e.codes, e.scales, w_fmt.element, in_features, out_features,
                                          w_fmt.block_size, p_in, p_out)[1]) + "\n"

    files = {params["W_MEM"]: w_lines, params["WS_MEM"]: ws_lines}
    if has_bias:
        def b_lines():
            g = torch.Generator().manual_seed(seed + 1)
            e = w_fmt.encode(torch.randn(out_features, generator=g) * 0.1)
            return "\n".join(pack_bias_mem(e.codes, e.scales, w_fmt.element, out_features, p_out)) + "\n"
        files[params["B_MEM"]] = b_lines
    return {"label": label, "ctx": {}, "params": params, "files": files}


def seed_example_config(label: str, in_features: int, out_features: int, x_name: str, w_name: str, out_name: str,
                        p_in: int, p_out: int, has_bias: bool = False, seed: int = 0, w_block: int | None = None,
                        x_block: int = 32, pipe: int = 0, x_ts_exp: int | None = None,
                        y_ts_exp: int | None = None) -> dict:
    """A resource-table configuration with seed-format weights (m2xfp4_w, nvfp4, bitmod_fp4/fp3):
    a seeded Gaussian W encoded in ``w_name`` (NVFP4: x in blocks of its 16), packed by
    :func:`pack_seed_weight_mem`; the bias in x's format (mxint8 when x is a seed format). x and y may
    be seed activation formats (``x_ts_exp`` / ``y_ts_exp``: NVFP4's tensor-scale exponents)."""
    from masec.formats import parse_format

    w_fmt = parse_format(w_name, block_size=w_block)
    xb = x_block if weight_kind(w_fmt) == "bitmod" else w_fmt.block_size
    x_fmt, o_fmt = parse_format(x_name, block_size=xb), parse_format(out_name)
    b_fmt = x_fmt if x_stream_format(x_fmt)[0] == 0 else parse_format("mxint8", block_size=xb)

    def image():
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(out_features, in_features, generator=g) / math.sqrt(in_features)
        return weight_image(w_fmt, w_fmt.encode(w), xb, in_features)

    img = image()
    _, params, _ = instance_config(in_features, out_features, x_fmt, w_fmt, o_fmt, has_bias, p_in, p_out,
                                   b_fmt=b_fmt, ts=(img.ts_sig, img.ts_exp) if img.kind == "nvfp4" else None,
                                   x_ts_exp=x_ts_exp, y_ts_exp=y_ts_exp)
    if pipe:
        params["PIPE"] = int(pipe)

    def w_lines():
        return "\n".join(pack_seed_weight_mem(image(), in_features, out_features, p_in, p_out)[0]) + "\n"

    def ws_lines():
        return "\n".join(pack_seed_weight_mem(image(), in_features, out_features, p_in, p_out)[1]) + "\n"

    files = {params["W_MEM"]: w_lines, params["WS_MEM"]: ws_lines}
    if has_bias:
        def b_lines():
            g = torch.Generator().manual_seed(seed + 1)
            e = b_fmt.encode(torch.randn(out_features, generator=g) * 0.1)
            return "\n".join(pack_bias_mem(e.codes, e.scales, b_fmt.element, out_features, p_out)) + "\n"
        files[params["B_MEM"]] = b_lines
    return {"label": label, "ctx": {}, "params": params, "files": files}


_LINEAR = SPECS[-1]
SPECS = SPECS[:-1] + (KernelSpec(
    **{**{f: getattr(_LINEAR, f) for f in ("name", "template", "doc", "params", "ports", "deps", "ops", "model")},
       "extra": {"latency": latency, "max_pipe": MAX_PIPE},
       "examples": (
           example_config("64x64 mxint8 P_IN8 P_OUT8 (64 MACs)", 64, 64, "mxint8", "mxint8", "mxint8", 8, 8, True),
           example_config("64x64 mxint8 P_IN8 P_OUT8 P_Y1 (64 MACs)", 64, 64, "mxint8", "mxint8", "mxint8", 8, 8,
                          True, p_y=1),
           example_config("64x64 mxint8 P_IN4 P_OUT4 (16 MACs)", 64, 64, "mxint8", "mxint8", "mxint8", 4, 4, True),
           example_config("64x64 mxfp8_e4m3 P_IN8 P_OUT8", 64, 64, "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3", 8, 8),
           example_config("64x64 mxfp8_e4m3 P_IN8 P_OUT8 L-Mul", 64, 64, "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3",
                          8, 8, lmul=True),
           seed_example_config("64x64 mxint8 x m2xfp4_w P_IN8 P_OUT8", 64, 64, "mxint8", "m2xfp4_w", "mxint8", 8, 8,
                               True),
           seed_example_config("64x64 mxint8 x nvfp4 P_IN8 P_OUT8", 64, 64, "mxint8", "nvfp4", "mxint8", 8, 8, True),
           seed_example_config("64x64 mxint8 x bitmod_fp4 P_IN8 P_OUT8", 64, 64, "mxint8", "bitmod_fp4", "mxint8",
                               8, 8, True, w_block=64),
           seed_example_config("64x64 mxint8 x bitmod_fp3 P_IN8 P_OUT8", 64, 64, "mxint8", "bitmod_fp3", "mxint8",
                               8, 8, True, w_block=64),
           # pipelined: the same configurations at PIPE 3 (a clock of 4 ns or less), and P_IN = B = 32
           example_config("64x64 mxint8 P_IN8 P_OUT8 (64 MACs) PIPE3", 64, 64, "mxint8", "mxint8", "mxint8", 8, 8,
                          True, pipe=3),
           example_config("64x64 mxint8 P_IN8 P_OUT8 (64 MACs) PIPE1", 64, 64, "mxint8", "mxint8", "mxint8", 8, 8,
                          True, pipe=1),
           example_config("64x64 mxint8 P_IN4 P_OUT4 (16 MACs) PIPE3", 64, 64, "mxint8", "mxint8", "mxint8", 4, 4, True,
                          pipe=3),
           example_config("64x64 mxint8 P_IN32 P_OUT4 (128 MACs) PIPE3", 64, 64, "mxint8", "mxint8", "mxint8", 32, 4,
                          True, pipe=3),
           example_config("64x64 mxfp8_e4m3 P_IN8 P_OUT8 PIPE3", 64, 64, "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3",
                          8, 8, pipe=3),
           example_config("64x64 mxfp8_e4m3 P_IN8 P_OUT8 L-Mul PIPE3", 64, 64, "mxfp8_e4m3", "mxfp8_e4m3",
                          "mxfp8_e4m3", 8, 8, lmul=True, pipe=3),
           seed_example_config("64x64 mxint8 x m2xfp4_w P_IN8 P_OUT8 PIPE3", 64, 64, "mxint8", "m2xfp4_w", "mxint8",
                               8, 8, True, pipe=3),
           seed_example_config("64x64 mxint8 x nvfp4 P_IN8 P_OUT8 PIPE3", 64, 64, "mxint8", "nvfp4", "mxint8", 8, 8,
                               True, pipe=3),
           seed_example_config("64x64 mxint8 x bitmod_fp4 P_IN8 P_OUT8 PIPE3", 64, 64, "mxint8", "bitmod_fp4",
                               "mxint8", 8, 8, True, w_block=64, pipe=3),
           # seed activation formats as x (XFMT) and y (Y_QFMT)
           example_config("64x64 m2xfp4_a x mxint8 -> nvfp4 P_IN8 P_OUT8", 64, 64, "m2xfp4_a", "mxint8", "nvfp4",
                          8, 8, y_ts_exp=-4),
           seed_example_config("64x64 nvfp4 x nvfp4 -> m2xfp4_a P_IN8 P_OUT8", 64, 64, "nvfp4", "nvfp4", "m2xfp4_a",
                               8, 8, True, x_ts_exp=-4),
           seed_example_config("64x64 m2xfp4_a x m2xfp4_w -> anda6 P_IN8 P_OUT8 PIPE3", 64, 64, "m2xfp4_a",
                               "m2xfp4_w", "anda6", 8, 8, True, pipe=3),
       )}),)
