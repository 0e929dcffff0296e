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

Pipelining: the SV parameter ``PIPE`` (0..3) puts elastic register stages after the block-buffer
read, the per-lane decode and the shifter on the output side, and after the per-lane leading one,
on the input beat and after the beat's max tree on the input side; the values
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


def quantize_blocks(m: torch.Tensor, e: torch.Tensor, element) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorized :func:`quantize_block`: ``m``, ``e`` int64 ``[..., nblocks, B]`` (``|m| < 2^62``).

    Returns ``(codes [..., nblocks, B], scales [..., nblocks])`` as int64, bit-identical to
    :func:`quantize_block` applied to every block.
    """
    c = element_consts(element)
    emin, emax, mb, maxc, bits = c["emin"], c["emax"], c["mbits"], c["max_code"], c["bits"]
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
    Eb = E.unsqueeze(-1)
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
    cm = torch.where(nz, cm, torch.zeros_like(cm))
    neg = m < 0
    if c["is_int"]:
        codes = torch.where(neg, -cm, cm) & ((1 << bits) - 1)
    else:
        codes = cm | ((neg & (cm != 0)).to(torch.int64) << (bits - 1))
    return codes, E + E8M0_BIAS


def pack_lanes_me(m, e, mw: int, ew: int) -> int:
    """One ``s_x`` beat: lanes ``{e, m}`` (m in the low ``mw`` bits), lane 0 least significant."""
    lw = mw + ew
    word = 0
    for i, (mi, ei) in enumerate(zip(m, e)):
        lo = mi & ((1 << mw) - 1)
        hi = ei & ((1 << ew) - 1)
        word |= ((hi << mw) | lo) << (i * lw)
    return word


def sv_params(p: int, block: int, mw: int, ew: int, element, pipe: int | None = None) -> dict:
    """SV parameters of an ``mx_quantize`` instance (``PIPE`` only when ``pipe`` is given)."""
    return {"P": p, "B": block, "MW": mw, "EW": ew, **element_sv_params(element),
            **({} if pipe is None else {"PIPE": int(pipe)})}


#: Largest PIPE the template has cuts for.
MAX_PIPE = 3


def latency(pipe: int) -> int:
    """Cycles ``PIPE`` adds between a block's last input beat and its first output beat (and on
    every later beat): one input-side and one output-side stage per PIPE step."""
    if not 0 <= pipe <= MAX_PIPE:
        raise ValueError(f"PIPE {pipe}: mx_quantize has 0..{MAX_PIPE} stages")
    return 2 * pipe


def pipe_for_clock(clock_ns: float) -> int:
    """Pipeline depth for a clock period: none at 100 MHz or slower, more as the period shrinks.

    PIPE 0 at 100 MHz and below, 1 up to 150 MHz, 2 up to 250 MHz, 3 above. A rule of thumb, not
    fitted to measurements: docs/synthesis.md has what each depth measured (the decode stage still
    limits PIPE 3 on ECP5).
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
         "round to nearest even, saturation). Double-buffered: 1 beat/cycle, latency one block plus "
         "2 * PIPE cycles (PIPE 0..3: elastic register stages, chosen from the clock)."),
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
            ParamSpec("PIPE", "pipeline depth 0..3 (latency + 2 * PIPE)", 0)),
    ports=(PortSpec("s_x", "in", "plain", "P lanes of {e[EW], m[MW]} (m in the low bits)"),
           PortSpec("m_y", "out", "mx", "P lanes of ELEM_BITS-bit codes + E8M0 scale")),
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
    ),
)
