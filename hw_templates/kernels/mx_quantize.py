"""The shared MX output quantizer: exact unnormalized floats (m * 2^e per lane) -> one MX block.

Every kernel that computes new values (linear, matmul, add, activations, norms, ...) produces, per
output element, an exact value ``v = m * 2^e`` (``m`` a signed integer, ``e`` a signed exponent,
each lane its own ``e``) and streams it into ``mx_quantize``, which emits the standard MX stream of
the output element format (docs/kernels/mx_quantize.md).

Arithmetic (identical in the RTL, :func:`quantize_block` and :func:`quantize_blocks`):

* ``lz_i = e_i + msb(|m_i|)`` = floor(log2 |v_i|) for every non-zero lane (no float math);
* shared exponent ``E = clamp(max_i lz_i - emax, -127, 127)``; an all-zero block gets
  ``E = max(-126 - emax, -127)`` (masec.formats' convention: scale code 1 for int elements, 0 for fp);
* per lane, a = |v| / 2^E. If ``lz - E > emax`` (only possible when E was clamped at 127) the lane
  saturates to the max normal code. Otherwise the element binade is ``k = max(lz - E, emin)``
  (``emin = 1 - bias`` for fp, 0 for int), the significand ``q = RNE(|m| * 2^(e - E - k + mbits))``
  (round to nearest, ties to even) and the magnitude code ``min(((k - emin) << mbits) + q, max_code)``
  (a rounding carry moves to the next binade by the addition; saturation to the max normal);
* sign: int elements two's complement of the magnitude, fp elements a sign bit (never -0).

This equals masec.formats' MX quantization (``MXFormat(element, B, "even").encode``) of the exact
values wherever those are float32 numbers, and an exact rational nearest-grid-point reference
everywhere (tests/hw_templates/test_mx_quantize.py), including E clamping at both ends.

Seed activation formats (SV parameter ``QFMT``; models :func:`quantize_blocks_m2xfp`,
:func:`quantize_blocks_nvfp4`, :func:`quantize_blocks_anda`, dispatch :func:`quantize_blocks_format`;
each equals the format library's ``encode`` on float32 values and an exact rational reference on
wide values, tests/hw_templates/test_seed_quantize.py):

* ``QFMT = 1`` M2XFP activations (``m2xfp4_a``): MXFP4 codes and E8M0 scale, plus per subgroup of 8
  the top-1 element refined to E2M3; 2 metadata bits per subgroup above the codes on ``m_y_data_o``;
* ``QFMT = 2`` NVFP4: E2M1 codes, UE4M3 block scale on ``m_y_scale_o``; the FP32 tensor scale is a
  compile-time power of two ``2^TS_EXP`` (:func:`nvfp4_tensor_scale_exp` calibrates it);
* ``QFMT = 3`` Anda (``anda<M>``, the group is the block): codes ``sign << M | k``, S on the scale bus,
  the stream mx_linear's ``XFMT = 3`` decode reads.

Pipelining: the SV parameter ``PIPE`` (0..3) puts elastic register stages after the block-buffer
read, the per-lane decode and the shifter on the output side (at PIPE 3 also the output codes, so
the consumer sees registers), and after the per-lane ``lz = e + msb``, after ``|m|`` and the
leading one (computed beside the negation) and in the middle of the beat's max tree on the input
side (the block buffer keeps
sign, ``|m|`` and the leading one, so the output side computes neither again); the values
do not change, the latency grows by :func:`latency` cycles, throughput stays 1 beat/cycle.
:func:`pipe_for_clock` chooses ``PIPE`` from the clock period (``--clock``); the template's
default is its Jinja context ``pipe`` (0 when not given).
"""
from __future__ import annotations

import torch

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec

E8M0_BIAS = 127


# ------------------------------------------------------------------------------ element constants
def element_consts(element) -> dict:
    """Integer constants of an element format as the quantizer uses them.

    Returns ``{"is_int", "bits", "mbits", "emin", "emax", "max_code"}``; int elements have
    ``emin = emax = 0`` (one binade, step 2^-mbits).
    """
    is_int = element.kind == "int"
    return {
        "is_int": is_int,
        "bits": int(element.bits),
        "mbits": int(element.mbits),
        "emin": 0 if is_int else 1 - int(element.bias),
        "emax": int(element.emax),
        "max_code": int(element.max_code),
    }


def element_sv_params(element, prefix: str = "ELEM_") -> dict:
    """SV parameters describing ``element`` for ``mx_quantize`` (and kernels that pass them through).

    ``ELEM_BIAS`` is the value with ``emin = 1 - ELEM_BIAS``: the fp bias, 1 for int elements.
    """
    c = element_consts(element)
    return {f"{prefix}IS_INT": int(c["is_int"]), f"{prefix}BITS": c["bits"], f"{prefix}MBITS": c["mbits"],
            f"{prefix}BIAS": 1 - c["emin"], f"{prefix}EMAX": c["emax"], f"{prefix}MAX_CODE": c["max_code"]}


def zero_block_exponent(emax: int) -> int:
    """Shared exponent of an all-zero block: floor(log2) taken as -126, minus emax, clamped."""
    return max(-126 - emax, -E8M0_BIAS)


# ------------------------------------------------------------------------------ scalar model
def _rne_shift(mag: int, s: int) -> int:
    """round-to-nearest-even of mag * 2^s for mag >= 0 (exact integer arithmetic)."""
    if s >= 0:
        return mag << s
    r = -s
    q = mag >> r
    rem = mag - (q << r)
    half = 1 << (r - 1)
    if rem > half or (rem == half and (q & 1)):
        q += 1
    return q


def quantize_block(m: list[int], e: list[int], element) -> tuple[list[int], int]:
    """Quantize one block of exact values ``m[i] * 2^e[i]`` to ``element`` (bit-exact RTL model).

    Args:
        m: signed integer mantissas, one per element of the block (any size).
        e: signed integer exponents, same length.
        element: a masec.formats ``ElementFormat``.

    Returns:
        ``(codes, scale_code)``: unsigned element bit patterns and the E8M0 scale code (E + 127).
    """
    c = element_consts(element)
    emin, emax, mb, maxc, bits = c["emin"], c["emax"], c["mbits"], c["max_code"], c["bits"]
    lzs = [ei + abs(mi).bit_length() - 1 for mi, ei in zip(m, e) if mi != 0]
    if lzs:
        E = min(max(max(lzs) - emax, -E8M0_BIAS), E8M0_BIAS)
    else:
        E = zero_block_exponent(emax)
    codes = []
    for mi, ei in zip(m, e):
        if mi == 0:
            codes.append(0)
            continue
        mag = abs(mi)
        lz = ei + mag.bit_length() - 1
        if lz - E > emax:
            cm = maxc
        else:
            k = max(lz - E, emin)
            q = _rne_shift(mag, ei - E - k + mb)
            cm = min(((k - emin) << mb) + q, maxc)
        if c["is_int"]:
            codes.append((-cm if mi < 0 else cm) & ((1 << bits) - 1))
        else:
            codes.append(cm | ((1 << (bits - 1)) if (mi < 0 and cm != 0) else 0))
    return codes, E + E8M0_BIAS


# ------------------------------------------------------------------------------ vectorized model
def _bit_length(x: torch.Tensor) -> torch.Tensor:
    """bit_length of non-negative int64 values (0 -> 0), exact (no float log)."""
    n = torch.zeros_like(x)
    y = x.clone()
    for sh in (32, 16, 8, 4, 2, 1):
        big = y >= (1 << sh)
        n += big.to(torch.int64) * sh
        y = torch.where(big, y >> sh, y)
    return n + (y > 0).to(torch.int64)


def _magnitude_codes(mag: torch.Tensor, e: torch.Tensor, lz: torch.Tensor, Eb: torch.Tensor, c: dict) -> torch.Tensor:
    """Magnitude codes of ``|m| * 2^e / 2^Eb`` in the element ``c`` (:func:`element_consts`): binade
    ``k = max(lz - Eb, emin)``, significand rounded to nearest even, saturation at ``max_code``
    (also when ``lz - Eb > emax``); zero lanes give 0."""
    emin, emax, mb, maxc = c["emin"], c["emax"], c["mbits"], c["max_code"]
    rel = lz - Eb
    sat = rel > emax
    k = rel.clamp(min=emin)
    s = e - Eb - k + mb
    # s >= 0 only when |m| < 2^(mbits + 2 - s) (not saturated), so the left shift cannot overflow
    left = mag << s.clamp(0, 62)
    r = (-s).clamp(1, 63)
    q_tr = torch.where(r >= 63, torch.zeros_like(mag), mag >> r.clamp(max=62))
    rb = torch.where(r >= 64, torch.zeros_like(mag), (mag >> (r - 1)) & 1)
    sticky = (mag & ((torch.ones_like(mag) << (r - 1).clamp(max=62)) - 1)) != 0
    rnd = q_tr + (rb.bool() & (sticky | (q_tr & 1).bool())).to(torch.int64)
    q = torch.where(s >= 0, left, rnd)
    cm = (((k - emin) << mb) + q).clamp(max=maxc)
    cm = torch.where(sat, torch.full_like(cm, maxc), cm)
    return torch.where(mag != 0, cm, torch.zeros_like(cm))


def quantize_blocks(m: torch.Tensor, e: torch.Tensor, element) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorized :func:`quantize_block`: ``m``, ``e`` int64 ``[..., nblocks, B]`` (``|m| < 2^62``).

    Returns ``(codes [..., nblocks, B], scales [..., nblocks])`` as int64, bit-identical to
    :func:`quantize_block` applied to every block.
    """
    c = element_consts(element)
    emax, bits = c["emax"], c["bits"]
    m = torch.as_tensor(m, dtype=torch.int64)
    e = torch.as_tensor(e, dtype=torch.int64)
    mag = m.abs()
    nz = mag != 0
    lz = e + _bit_length(mag) - 1
    very_low = torch.iinfo(torch.int64).min // 4
    maxlz = torch.where(nz, lz, torch.full_like(lz, very_low)).amax(dim=-1)
    anynz = nz.any(dim=-1)
    E = torch.where(anynz, (maxlz - emax).clamp(-E8M0_BIAS, E8M0_BIAS),
                    torch.full_like(maxlz, zero_block_exponent(emax)))
    cm = _magnitude_codes(mag, e, lz, E.unsqueeze(-1), c)
    neg = m < 0
    if c["is_int"]:
        codes = torch.where(neg, -cm, cm) & ((1 << bits) - 1)
    else:
        codes = cm | ((neg & (cm != 0)).to(torch.int64) << (bits - 1))
    return codes, E + E8M0_BIAS


# ------------------------------------------------------------------------------ seed activation formats
#: ``QFMT`` values: the output format of the quantizer (SV parameter ``QFMT``).
QFMT_MX, QFMT_M2XFP, QFMT_NVFP4, QFMT_ANDA = 0, 1, 2, 3
QFMT_NAMES = {QFMT_MX: "mx", QFMT_M2XFP: "m2xfp4_a", QFMT_NVFP4: "nvfp4", QFMT_ANDA: "anda<M>"}
M2X_SUBGROUP = 8
#: NVFP4 block-scale code transitions in units of 1/64 of amax's significand (amax / 2^t in
#: [2^L, 2^(L+1))): the UE4M3 code is 8 * (L + 4) + 3 + the number passed; True = passed at equality
#: (the upper code is even: round half to even), False = only above it.
NV_SB_THRESHOLDS = ((69, True), (75, False), (81, True), (87, False), (93, True), (102, False), (114, True),
                    (126, False))
#: E2M1 midpoints 1/4 .. 5 in units of 1/4, and whether the upper code wins a tie (it is even).
NV_EL_MIDPOINTS = ((1, False), (3, True), (5, False), (7, True), (10, False), (14, True), (20, False))
NV_SB_MIN, NV_SB_MAX = 8, 126   # UE4M3 codes of 2^-6 and 448 (torchao's clamp)
#: FP16 as the quantizer rounds to it (Anda's input): emin -14, emax 15, 10 fraction bits, max 65504.
FP16_CONSTS = {"is_int": False, "bits": 16, "mbits": 10, "emin": -14, "emax": 15, "max_code": 0x7BFF}
_VERY_LOW = torch.iinfo(torch.int64).min // 4


def _lanes(m, e):
    m = torch.as_tensor(m, dtype=torch.int64)
    e = torch.as_tensor(e, dtype=torch.int64)
    mag = m.abs()
    nz = mag != 0
    msb = _bit_length(mag) - 1
    return m, e, mag, nz, msb, e + msb


def _sig_top(mag: torch.Tensor, msb: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``bits`` bits of ``|m|`` from its leading one (an integer in [2^(bits-1), 2^bits) for a
    non-zero lane) and whether any bit below them is set."""
    sh = msb - (bits - 1)
    top = torch.where(sh >= 0, mag >> sh.clamp(0, 62), mag << (-sh).clamp(0, 62))
    rest = torch.where(sh > 0, (mag & ((torch.ones_like(mag) << sh.clamp(0, 62)) - 1)) != 0,
                       torch.zeros_like(mag, dtype=torch.bool))
    return top, rest


def _passed(v: torch.Tensor, frac: torch.Tensor, thresholds) -> torch.Tensor:
    """How many of ``thresholds`` (integer T, inclusive) the value ``v + (0 < frac-part < 1)`` reaches:
    ``v >= T`` for inclusive ones, ``v > T`` (``v == T`` with a non-zero fraction) otherwise."""
    n = torch.zeros_like(v)
    for t, incl in thresholds:
        n += ((v > t) | ((v == t) & (frac | incl))).to(torch.int64)
    return n


def nvfp4_block_scale_keys(m, e, ts_exp: int) -> torch.Tensor:
    """Per lane the UE4M3 block-scale code its magnitude alone would give (:func:`quantize_blocks_nvfp4`),
    clamped to [8, 126]; zero lanes give 8. The block's scale code is their max (rounding is monotone)."""
    m, e, mag, nz, msb, lz = _lanes(m, e)
    top, rest = _sig_top(mag, msb, 7)
    key = 8 * (lz - ts_exp + 4) + 3 + _passed(top, rest, NV_SB_THRESHOLDS)
    return torch.where(nz, key.clamp(NV_SB_MIN, NV_SB_MAX), torch.full_like(key, NV_SB_MIN))


def quantize_blocks_nvfp4(m, e, ts_exp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4 activations of exact values ``m * 2^e`` ``[..., nblocks, B]`` with the tensor scale 2^ts_exp.

    Exact rational semantics (torchao's steps with s_t = 2^t, where every float32 rounding is exact
    or cannot change the result): ``s_b = RNE_e4m3(clamp(amax / (6 * 2^t), 2^-6, 448))``,
    ``q = RNE_e2m1(min(|x| / (2^t * s_b), 6))``, both ties to even. Returns ``(codes, scales)``:
    E2M1 codes (sign bit 3, never -0) and UE4M3 codes, int64.
    """
    m, e, mag, nz, msb, lz = _lanes(m, e)
    sb = nvfp4_block_scale_keys(m, e, ts_exp).amax(dim=-1)
    b = (sb >> 3) - 7
    j = (sb & 7).unsqueeze(-1)
    es = (ts_exp + b + 3).unsqueeze(-1)      # 32 |x| / (2^t 2^b) = |m| 2^(e - es + 8)
    s = e - es + 8
    sat = lz - es > 0                        # 32 |x| / (2^t 2^b) >= 512: beyond every midpoint
    v = torch.where(s >= 0, mag << s.clamp(0, 62), mag >> (-s).clamp(0, 62))
    v = torch.where(sat | ((-s) > 62), torch.zeros_like(v), v)
    frac = (s < 0) & ((mag & ((torch.ones_like(mag) << (-s).clamp(0, 62)) - 1)) != 0)
    code = torch.zeros_like(mag)
    for mid, incl in NV_EL_MIDPOINTS:       # |x| / (2^t s_b) >= mid / 4  <=>  32 w >= mid * (8 + j)
        t = mid * (8 + j)
        code += ((v > t) | ((v == t) & (frac | incl))).to(torch.int64)
    code = torch.where(sat, torch.full_like(code, 7), code)
    code = torch.where(nz, code, torch.zeros_like(code))
    return code | (((m < 0) & (code != 0)).to(torch.int64) << 3), sb


def quantize_blocks_m2xfp(m, e) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """M2XFP activations (Elem-EM top-1) of exact values ``m * 2^e`` ``[..., nblocks, B]``, B a multiple of 8.

    E is MXFP4's shared exponent; every element is FP4 (E2M1) of |x| / 2^E, ties to even; per subgroup
    of 8 the element with the largest FP4 magnitude (lowest index on ties) is also rounded to E2M3 with
    the same E, clamped to [4c - 1, 4c + 2] (c its FP4 magnitude code); metadata = that - 4c + 1. The
    sign bit goes with the refined value (a top-1 FP4 code 0 refined to a non-zero value keeps it).
    Returns ``(codes, scales, meta [..., nblocks, B/8])``, int64, as ``M2XFPActivationFormat.encode``.
    """
    from masec.formats.element import FP4_E2M1, FP6_E2M3

    m, e, mag, nz, msb, lz = _lanes(m, e)
    if m.shape[-1] % M2X_SUBGROUP:
        raise ValueError(f"M2XFP blocks are multiples of {M2X_SUBGROUP} elements, got {m.shape[-1]}")
    _, scales = quantize_blocks(m, e, FP4_E2M1)
    Eb = (scales - E8M0_BIAS).unsqueeze(-1)
    c4 = _magnitude_codes(mag, e, lz, Eb, element_consts(FP4_E2M1))
    c6 = _magnitude_codes(mag, e, lz, Eb, element_consts(FP6_E2M3))
    sg = c4.shape[:-1] + (c4.shape[-1] // M2X_SUBGROUP, M2X_SUBGROUP)
    c4s, c6s = c4.reshape(sg), c6.reshape(sg)
    top = c4s.argmax(-1, keepdim=True)      # the first maximum: lowest index
    ct = c4s.gather(-1, top)
    c6t = torch.minimum(torch.maximum(c6s.gather(-1, top), 4 * ct - 1), 4 * ct + 2)
    meta = (c6t - 4 * ct + 1).squeeze(-1)
    is_top = torch.zeros_like(c4s, dtype=torch.bool).scatter_(-1, top, True).reshape(c4.shape)
    nonzero = torch.where(is_top, c6t.expand(sg).reshape(c4.shape) != 0, c4 != 0)
    return c4 | (((m < 0) & nonzero).to(torch.int64) << 3), scales, meta


def quantize_blocks_anda(m, e, mbits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anda ``anda<M>`` of exact values ``m * 2^e`` ``[..., ngroups, G]`` (the group is the block).

    Each value is rounded to FP16 (nearest even, saturating at 65504); with FP16 exponent field f,
    ``e16 = max(f, 1)`` and significand ``sig`` (hidden bit included), the group's exponent is
    ``S = max e16`` and each element keeps ``k = floor(sig * 2^(M - 11 - (S - e16)))``. Returns
    ``(codes, S)``: codes ``sign << M | k`` (sign only for k != 0), S in 1..30, int64, as
    ``AndaFormat(M, G).encode``.
    """
    if not 1 <= mbits <= 16:
        raise ValueError(f"anda<M> needs M in 1..16, got {mbits}")
    m, e, mag, nz, msb, lz = _lanes(m, e)
    h = _magnitude_codes(mag, e, lz, torch.zeros_like(lz), FP16_CONSTS)   # FP16 magnitude codes
    f = h >> 10
    e16 = f.clamp(min=1)
    sig = (h & 0x3FF) | ((f > 0).to(torch.int64) << 10)
    S = e16.amax(dim=-1)
    d = (S.unsqueeze(-1) - e16) + (11 - mbits)
    k = torch.where(d >= 0, sig >> d.clamp(0, 62), sig << (-d).clamp(0, 62))
    return k | (((m < 0) & (k != 0)).to(torch.int64) << mbits), S


def quantize_blocks_format(m, e, qfmt: int, element=None, ts_exp: int = 0):
    """The quantizer of mode ``qfmt`` on ``[..., nblocks, B]``: ``(codes, scales, meta)``, meta None
    except for M2XFP. ``element`` is the MX element (``QFMT_MX``) or Anda's ``int_element(M + 1)``."""
    if qfmt == QFMT_MX:
        return (*quantize_blocks(m, e, element), None)
    if qfmt == QFMT_M2XFP:
        return quantize_blocks_m2xfp(m, e)
    if qfmt == QFMT_NVFP4:
        return (*quantize_blocks_nvfp4(m, e, ts_exp), None)
    if qfmt == QFMT_ANDA:
        return (*quantize_blocks_anda(m, e, int(element.bits) - 1), None)
    raise ValueError(f"QFMT {qfmt}: mx_quantize modes are {QFMT_NAMES}")


def nvfp4_tensor_scale_exp(amax: float) -> int:
    """masec's NVFP4 tensor scale for a streamed activation: the format library's
    ``s_t = amax / (448 * 6)`` of a calibration amax, rounded up to a power of two; returns t (s_t = 2^t).
    Rounding up keeps every block scale <= 448 for inputs up to the calibrated amax."""
    import math
    from fractions import Fraction

    if not amax > 0 or not math.isfinite(amax):
        raise ValueError(f"NVFP4 tensor-scale calibration needs a positive finite amax, got {amax!r}")
    q = Fraction(amax) / 2688               # exact: the smallest t with 2^t >= q
    t = q.numerator.bit_length() - q.denominator.bit_length()
    while Fraction(2) ** t < q:
        t += 1
    while Fraction(2) ** (t - 1) >= q:
        t -= 1
    return t


def pack_lanes_me(m, e, mw: int, ew: int) -> int:
    """One ``s_x`` beat: lanes ``{e, m}`` (m in the low ``mw`` bits), lane 0 least significant."""
    lw = mw + ew
    word = 0
    for i, (mi, ei) in enumerate(zip(m, e)):
        lo = mi & ((1 << mw) - 1)
        hi = ei & ((1 << ew) - 1)
        word |= ((hi << mw) | lo) << (i * lw)
    return word


def sv_params(p: int, block: int, mw: int, ew: int, element, pipe: int | None = None,
              qfmt: int = QFMT_MX, ts_exp: int = 0) -> dict:
    """SV parameters of an ``mx_quantize`` instance (``PIPE`` only when ``pipe`` is given; ``QFMT``
    and ``TS_EXP`` only when not the MX default). ``element``: the MX element, FP4 E2M1 for
    M2XFP / NVFP4, ``int_element(M + 1)`` for Anda (:func:`output_format_params` gives it)."""
    extra = {} if qfmt == QFMT_MX else {"QFMT": int(qfmt)}
    if qfmt == QFMT_NVFP4:
        extra["TS_EXP"] = int(ts_exp)
    return {"P": p, "B": block, "MW": mw, "EW": ew, **element_sv_params(element),
            **({} if pipe is None else {"PIPE": int(pipe)}), **extra}


def output_format_params(fmt) -> tuple[int, object]:
    """``(QFMT, element)`` for a masec.formats format: ``MXFormat`` -> (0, its element),
    ``m2xfp4_a`` -> (1, FP4 E2M1), ``nvfp4`` -> (2, FP4 E2M1), ``anda<M>`` -> (3, int_element(M + 1)).
    Anything else raises ValueError (the quantizer has no such output)."""
    from masec.formats.anda import AndaFormat
    from masec.formats.element import FP4_E2M1, int_element
    from masec.formats.m2xfp import M2XFPActivationFormat
    from masec.formats.mx import MXFormat
    from masec.formats.nvfp4 import NVFP4Format

    if isinstance(fmt, M2XFPActivationFormat):
        return QFMT_M2XFP, FP4_E2M1
    if isinstance(fmt, NVFP4Format):
        return QFMT_NVFP4, FP4_E2M1
    if isinstance(fmt, AndaFormat):
        if fmt.mbits > 15:
            raise ValueError(f"mx_quantize emits anda<M> for M <= 15 (an {fmt.mbits + 1}-bit code is not an "
                             "element masec streams), got anda16")
        return QFMT_ANDA, int_element(fmt.mbits + 1)
    if not isinstance(fmt, MXFormat):
        raise ValueError(f"mx_quantize cannot emit {getattr(fmt, 'name', fmt)!r}")
    return QFMT_MX, fmt.element


def output_data_width(p: int, qfmt: int, element) -> int:
    """Bits of ``m_y_data_o``: P element codes, plus 2 metadata bits per subgroup of 8 for M2XFP."""
    return p * int(element.bits) + (p // 4 if qfmt == QFMT_M2XFP else 0)


#: Largest PIPE the template has cuts for.
MAX_PIPE = 3


def latency(pipe: int) -> int:
    """Cycles ``PIPE`` adds between a block's last input beat and its first output beat (and on
    every later beat): one input-side and one output-side stage per PIPE step, and at PIPE 3 the
    output register (cut O)."""
    if not 0 <= pipe <= MAX_PIPE:
        raise ValueError(f"PIPE {pipe}: mx_quantize has 0..{MAX_PIPE} stages")
    return 2 * pipe + (pipe >= 3)


def pipe_for_clock(clock_ns: float) -> int:
    """Pipeline depth for a clock period: none at 100 MHz or slower, more as the period shrinks.

    PIPE 0 at 100 MHz and below, 1 up to 150 MHz, 2 up to 250 MHz, 3 above. A rule of thumb, not fitted to measurements: docs/synthesis.md has what
    each depth measured.
    """
    if clock_ns >= 10.0:
        return 0
    if clock_ns >= 1000.0 / 150:
        return 1
    if clock_ns >= 4.0:
        return 2
    return 3


SPEC = KernelSpec(
    name="mx_quantize",
    template="mx_quantize.sv.j2",
    doc=("Shared MX output quantizer: P lanes of exact values m*2^e (MW-bit signed m, EW-bit signed e) "
         "per beat, B/P beats per block -> MX stream of the element format (OCP shared exponent, "
         "round to nearest even, saturation), or (QFMT) M2XFP / NVFP4 / Anda activations. "
         "Double-buffered: 1 beat/cycle, latency one block plus "
         "2 * PIPE cycles, + 1 at PIPE 3 (PIPE 0..3: elastic register stages, chosen from the clock)."),
    params=(ParamSpec("P", "lanes per beat, divides B", 4),
            ParamSpec("B", "MX block size, power of two", 32),
            ParamSpec("MW", "bits of each lane's signed mantissa m", 16),
            ParamSpec("EW", "bits of each lane's signed exponent e", 8),
            ParamSpec("ELEM_IS_INT", "1: two's complement int element, 0: sign|exp|mant minifloat", 1),
            ParamSpec("ELEM_BITS", "element code width", 8),
            ParamSpec("ELEM_MBITS", "element fraction bits (int: BITS-2)", 6),
            ParamSpec("ELEM_BIAS", "emin = 1 - ELEM_BIAS (fp: the exponent bias; int: 1)", 1),
            ParamSpec("ELEM_EMAX", "unbiased exponent of the top binade (int: 0)", 0),
            ParamSpec("ELEM_MAX_CODE", "largest finite magnitude code", 127),
            ParamSpec("PIPE", "pipeline depth 0..3 (latency + 2 * PIPE, + 1 at PIPE 3)", 0),
            ParamSpec("QFMT", "output format: 0 MX, 1 M2XFP activations (ELEM_* = FP4, P multiple of 8, "
                      "+P/4 metadata bits), 2 NVFP4 (ELEM_* = FP4, UE4M3 scale), 3 Anda (ELEM_* = "
                      "int_element(M+1), scale = S)", 0),
            ParamSpec("TS_EXP", "NVFP4: the FP32 tensor scale is 2^TS_EXP (-256..256)", 0)),
    ports=(PortSpec("s_x", "in", "plain", "P lanes of {e[EW], m[MW]} (m in the low bits)"),
           PortSpec("m_y", "out", "mx", "P lanes of ELEM_BITS-bit codes (M2XFP: then 2 metadata bits per "
                    "subgroup of 8) + 8-bit scale (E8M0; NVFP4 UE4M3; Anda S)")),
    deps=(),
    ops=(),
    model=f"{__name__}:quantize_block",
    examples=(
        {"label": "P1 B32 mxint8 MW24", "ctx": {},
         "params": {"P": 1, "B": 32, "MW": 24, "EW": 10, "ELEM_IS_INT": 1, "ELEM_BITS": 8, "ELEM_MBITS": 6,
                    "ELEM_BIAS": 1, "ELEM_EMAX": 0, "ELEM_MAX_CODE": 127}},
        {"label": "P8 B32 mxfp8_e4m3 MW24", "ctx": {},
         "params": {"P": 8, "B": 32, "MW": 24, "EW": 10, "ELEM_IS_INT": 0, "ELEM_BITS": 8, "ELEM_MBITS": 3,
                    "ELEM_BIAS": 7, "ELEM_EMAX": 8, "ELEM_MAX_CODE": 126}},
        {"label": "P32 B32 mxfp4 MW16", "ctx": {},
         "params": {"P": 32, "B": 32, "MW": 16, "EW": 10, "ELEM_IS_INT": 0, "ELEM_BITS": 4, "ELEM_MBITS": 1,
                    "ELEM_BIAS": 1, "ELEM_EMAX": 2, "ELEM_MAX_CODE": 7}},
        # pipelined: the same configurations at the PIPE of a 4 ns (2) and a 3 ns (3) clock
        {"label": "P8 B32 mxfp8_e4m3 MW24 PIPE2", "ctx": {},
         "params": {"P": 8, "B": 32, "MW": 24, "EW": 10, "ELEM_IS_INT": 0, "ELEM_BITS": 8, "ELEM_MBITS": 3,
                    "ELEM_BIAS": 7, "ELEM_EMAX": 8, "ELEM_MAX_CODE": 126, "PIPE": 2}},
        {"label": "P8 B32 mxfp8_e4m3 MW24 PIPE3", "ctx": {},
         "params": {"P": 8, "B": 32, "MW": 24, "EW": 10, "ELEM_IS_INT": 0, "ELEM_BITS": 8, "ELEM_MBITS": 3,
                    "ELEM_BIAS": 7, "ELEM_EMAX": 8, "ELEM_MAX_CODE": 126, "PIPE": 3}},
        {"label": "P32 B32 mxfp4 MW16 PIPE3", "ctx": {},
         "params": {"P": 32, "B": 32, "MW": 16, "EW": 10, "ELEM_IS_INT": 0, "ELEM_BITS": 4, "ELEM_MBITS": 1,
                    "ELEM_BIAS": 1, "ELEM_EMAX": 2, "ELEM_MAX_CODE": 7, "PIPE": 3}},
        # seed activation formats (QFMT): M2XFP, NVFP4 with s_t = 2^-8, Anda M = 6 (groups of 64)
        {"label": "P8 B32 m2xfp4_a MW24", "ctx": {},
         "params": {"P": 8, "B": 32, "MW": 24, "EW": 10, "ELEM_IS_INT": 0, "ELEM_BITS": 4, "ELEM_MBITS": 1,
                    "ELEM_BIAS": 1, "ELEM_EMAX": 2, "ELEM_MAX_CODE": 7, "QFMT": 1}},
        {"label": "P4 B16 nvfp4 MW24 TS_EXP-8", "ctx": {},
         "params": {"P": 4, "B": 16, "MW": 24, "EW": 10, "ELEM_IS_INT": 0, "ELEM_BITS": 4, "ELEM_MBITS": 1,
                    "ELEM_BIAS": 1, "ELEM_EMAX": 2, "ELEM_MAX_CODE": 7, "QFMT": 2, "TS_EXP": -8}},
        {"label": "P4 B64 anda6 MW24", "ctx": {},
         "params": {"P": 4, "B": 64, "MW": 24, "EW": 10, "ELEM_IS_INT": 1, "ELEM_BITS": 7, "ELEM_MBITS": 5,
                    "ELEM_BIAS": 1, "ELEM_EMAX": 0, "ELEM_MAX_CODE": 63, "QFMT": 3}},
        {"label": "P16 B32 m2xfp4_a MW16 PIPE3", "ctx": {},
         "params": {"P": 16, "B": 32, "MW": 16, "EW": 10, "ELEM_IS_INT": 0, "ELEM_BITS": 4, "ELEM_MBITS": 1,
                    "ELEM_BIAS": 1, "ELEM_EMAX": 2, "ELEM_MAX_CODE": 7, "QFMT": 1, "PIPE": 3}},
    ),
)
