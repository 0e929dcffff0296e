"""GELU and SiLU on MX streams (``mx_gelu``, ``mx_gelu_tanh``, ``mx_silu``): exact-index float LUT,
bit-exact model.

All three functions are ``f(x) = x * g(x)`` with ``g = Phi`` (GELU, erf form),
``g = (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2`` (GELU, tanh form: GPT-2's ``gelu_new``,
``F.gelu(approximate="tanh")``) or ``g = sigmoid`` (SiLU), and ``g(-a) = 1 - g(a)``. The kernel evaluates ``g`` from a ROM of ``h(a) = g(-a)`` (a = |x|) stored
as a small float, then multiplies by the exact input and lets the shared quantizer round.

Why a LUT indexed by the exact input (not a piecewise polynomial): an MX element has at most
``mbits + 1`` significant bits (int elements too: |k| <= 2^(bits-1) has at most ``bits - 2`` bits
after its leading one), so within one binade there are only ``2^F`` (``F = mbits``) distinct input
magnitudes. Indexing the ROM by (binade, those F bits) evaluates ``g`` *at the input value itself*:
there is no interpolation error at all, only the rounding of the stored entry (relative 2^-G) and
the three documented range cut-offs below. A polynomial would need multipliers and could not reach
the relative precision the negative tails need (there ``g`` falls like ``e^-x^2/2`` or ``e^-x``,
and an MX block of only such values is quantized relative to *them*): a float LUT entry keeps
relative precision down to the last representable MX value.

Per lane, with the exact input ``x = sig * 2^(t - 127)`` (``mx_elem_decode``, ``t`` = scale +
element exponent), ``p = msb(|sig|)``, binade ``k = t - 127 + p``, ``j`` = the F bits after the
leading one of ``|sig|``:

=================  ======================================================  =====================
region             (m, e) handed to mx_quantize                             error (relative)
=================  ======================================================  =====================
x == 0             (0, 0)                                                   exact
k < K_LO           (sig, t - 128)          f = x / 2                        <= 2 c 2^(K_LO+1)
k > K_HI, x > 0    (sig, t - 127)          f = x                            1 - g(2^(K_HI+1))
k > K_HI, x < 0    (0, 0)                  f = 0                            below every MX value
LUT, x < 0         (sig * hm, t - 127 - hs)            g = hm 2^-hs         <= 2^-G (entry RNE)
LUT, x > 0         (sig * gq, t - 127 - (G + 1))       gq = 2^(G+1) - (hm >> (hs - G - 1))
=================  ======================================================  =====================

ROM entry at index ``(k - K_LO) * 2^F + j``: ``hm`` (G+1 bits, in [2^(G-1), 2^G]) and
``hsx = hs - G - 1`` with ``hm * 2^-hs = RNE_G(h(a))``, a = (2^F + j) 2^(k - F), computed with
mpmath at 60 digits. c = g'(0) (1/sqrt(2 pi) for both GELUs, 1/4 for SiLU).
K_LO = -(G + 1); K_HI = 3 for GELU (|x| >= 16: |GELU(x) - max(x,0)| < 2^-180) and tanh GELU
(|x| >= 16: h < e^-317 < 2^-450), 6 for SiLU (|x| >= 128: < 2^-177); all below the smallest MX
value (2^-143), so the cut-offs are exact after quantization.

Pipelining: the SV parameter ``PIPE`` (0..3) adds elastic register stages (valid/ready, 1 beat/cycle
under any backpressure) and is passed on to the instance's ``mx_quantize``; the values do not change.
The ROM read is registered at every PIPE; PIPE >= 1 adds a register after the multiplier operand
(``1 - h`` or ``h``, and ``e``) and one after the product and region select (the (m, e) lanes), PIPE
>= 2 one on the ROM address, PIPE >= 3 one after the decode and one after the ROM read. :func:`latency` gives the cycles added
over PIPE 0; ``masec.passes.hw.pipeline.pipe_depth`` the PIPE for a clock period.

Model signature::

    codes_y, scales_y = act_model("gelu", codes_x, scales_x, elem_x, elem_out, g_bits=12)
"""
from __future__ import annotations

from functools import lru_cache

import torch

from masec.hw_templates.kernels import mx_quantize
from masec.hw_templates.kernels.mx_eltwise import EW, decode_sig_exp, sig_bits
from masec.hw_templates.kernels.mx_quantize import _bit_length, element_sv_params, quantize_blocks
from masec.hw_templates.kernels.mx_relu import check_lanes, resolve_format
from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

E8M0_BIAS = 127
DEFAULT_G = 15
FUNCS = ("gelu", "silu", "gelu_tanh")
K_LO = -14
K_HI = {"gelu": 3, "silu": 6, "gelu_tanh": 3}
SLOPE0 = {"gelu": 0.3989422804014327, "silu": 0.25, "gelu_tanh": 0.3989422804014327}   # g'(0)
E_TINY = -500      # exponent of the stand-in for a non-zero value below every MX value
MAX_F = 8          # largest input mbits the kernel supports


def k_lo(g_bits: int = DEFAULT_G) -> int:
    """Lowest LUT binade (independent of G: below it the sticky x/2 path is exact)."""
    del g_bits
    return K_LO


def sticky_shift(f_bits: int, out_mbits: int) -> int:
    """ST: the sticky unit 2^-ST (relative to the input's LSB) lies below every rounding decision."""
    return f_bits + out_mbits + 4


def frac_bits(elem) -> int:
    """F: significant bits after the leading one of any element significand (= mbits)."""
    return elem.mbits


def _h_exact(func: str, a):
    """h(a) = g(-a) with mpmath (a > 0): Phi(-a) for GELU, 1 / (1 + e^a) for SiLU,
    1 / (1 + e^(2 c (a + 0.044715 a^3))), c = sqrt(2/pi), for tanh GELU."""
    import mpmath

    if func == "gelu":
        return mpmath.erfc(a / mpmath.sqrt(2)) / 2
    if func == "gelu_tanh":
        return 1 / (1 + mpmath.exp(2 * _tanh_arg(a)))
    return 1 / (1 + mpmath.exp(a))


@lru_cache(maxsize=None)
def lut(func: str, f_bits: int, g_bits: int = DEFAULT_G) -> tuple[tuple[int, int], ...]:
    """ROM contents: ``(hm, hsx)`` for index ``(k - K_LO) * 2^F + j`` (see module docstring)."""
    import mpmath

    if func not in FUNCS:
        raise ValueError(f"func must be one of {FUNCS}, got {func!r}")
    entries = []
    with mpmath.workdps(60):
        for k in range(k_lo(g_bits), K_HI[func] + 1):
            for j in range(1 << f_bits):
                a = mpmath.mpf((1 << f_bits) + j) * mpmath.mpf(2) ** (k - f_bits)
                h = _h_exact(func, a)
                q = int(mpmath.floor(mpmath.log(h, 2)))
                while mpmath.mpf(2) ** q > h:          # guard the log against rounding
                    q -= 1
                while mpmath.mpf(2) ** (q + 1) <= h:
                    q += 1
                hs = g_bits - 1 - q                      # hm = h * 2^hs in [2^(G-1), 2^G)
                scaled = h * mpmath.mpf(2) ** hs
                fl = int(mpmath.floor(scaled))
                rem = scaled - fl
                hm = fl + (1 if rem > 0.5 or (rem == 0.5 and fl & 1) else 0)   # RNE
                hm = min(hm, (1 << g_bits) - 1)   # G bits; keeps h' < 1/2 (never the binade above)
                entries.append((hm, hs - g_bits - 1))
    assert all(e[1] >= 0 for e in entries), "h >= 1/2 inside the LUT range"
    return tuple(entries)


def lut_tensors(func: str, f_bits: int, g_bits: int = DEFAULT_G) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor(lut(func, f_bits, g_bits), dtype=torch.int64)
    return t[:, 0].contiguous(), t[:, 1].contiguous()


def widths(elem_in, elem_out, g_bits: int = DEFAULT_G) -> dict:
    """W (|sig| < 2^W), ST (sticky shift), MW = max(W + G + 3, W + ST + 2) (signed m), EW."""
    w = sig_bits(elem_in)
    st = sticky_shift(frac_bits(elem_in), elem_out.mbits)
    return {"W": w, "ST": st, "MW": max(w + g_bits + 3, w + st + 2), "EW": EW}


# ----------------------------------------------------------------------------- bit-exact model
def act_me(func: str, codes, scales, elem_in, elem_out, g_bits: int = DEFAULT_G) -> tuple[torch.Tensor, torch.Tensor]:
    """The (m, e) lanes ``mx_<func>`` hands to ``mx_quantize`` (int64, bit-exact)."""
    f = frac_bits(elem_in)
    if f > MAX_F:
        raise ValueError(f"input element {elem_in.name}: mbits {f} > {MAX_F} is not supported")
    st = sticky_shift(f, elem_out.mbits)
    klo, khi = k_lo(g_bits), K_HI[func]
    hm_t, hsx_t = lut_tensors(func, f, g_bits)
    sig, exp = decode_sig_exp(codes, elem_in)
    t = torch.as_tensor(scales).to(torch.int64).unsqueeze(-1) + exp - E8M0_BIAS   # unbiased
    mag = sig.abs()
    p = _bit_length(mag) - 1
    k = t + p
    j = ((mag << f) >> p.clamp(min=0)) & ((1 << f) - 1)
    zero = mag == 0
    neg = sig < 0
    low = ~zero & (k < klo)
    high = ~zero & (k > khi)
    inlut = ~zero & ~low & ~high
    idx = torch.where(inlut, (k - klo) * (1 << f) + j, torch.zeros_like(k))
    hm, hsx = hm_t[idx], hsx_t[idx]
    # 1 - h at G+1 fraction bits, h rounded up (ceil): g' < 1 strictly, so |f'| < |x|
    sh = hsx.clamp(max=62)
    gq = (1 << (g_bits + 1)) - ((hm + (1 << sh) - 1) >> sh)
    zeros = torch.zeros_like(sig)
    # region by region, last match wins (the regions are disjoint)
    m, e = zeros, zeros
    m = torch.where(low, (sig << st) + 1, m)                        # x/2 + tiny
    e = torch.where(low, t - 1 - st, e)
    m = torch.where(high & ~neg, (sig << st) - 1, m)                # x - tiny
    e = torch.where(high & ~neg, t - st, e)
    m = torch.where(high & neg, -torch.ones_like(sig), m)           # -tiny
    e = torch.where(high & neg, torch.full_like(sig, E_TINY), e)
    m = torch.where(inlut & neg, sig * hm, m)                       # x * h(|x|)
    e = torch.where(inlut & neg, t - (hsx + g_bits + 1), e)
    m = torch.where(inlut & ~neg, sig * gq, m)                      # x * (1 - h(|x|))
    e = torch.where(inlut & ~neg, t - (g_bits + 1), e)
    return m, e


def act_model(func: str, codes, scales, elem_in, elem_out, g_bits: int = DEFAULT_G):
    """Bit-exact model of ``mx_gelu`` / ``mx_gelu_tanh`` / ``mx_silu``.

    Args:
        func: ``"gelu"``, ``"gelu_tanh"`` or ``"silu"``.
        codes, scales: input MX tensor, codes ``[..., nblocks, B]``, E8M0 scales ``[..., nblocks]``.
        elem_in, elem_out: element formats of input and output (same block size).
        g_bits: G, mantissa bits of the ROM entries (the kernel's Jinja parameter).
    Returns:
        ``(codes, scales)`` int64 of ``f(x)`` in ``elem_out``.
    """
    m, e = act_me(func, codes, scales, elem_in, elem_out, g_bits)
    return quantize_blocks(m, e, elem_out)


def gelu_model(codes, scales, elem_in, elem_out, g_bits: int = DEFAULT_G):
    return act_model("gelu", codes, scales, elem_in, elem_out, g_bits)


def silu_model(codes, scales, elem_in, elem_out, g_bits: int = DEFAULT_G):
    return act_model("silu", codes, scales, elem_in, elem_out, g_bits)


def gelu_tanh_model(codes, scales, elem_in, elem_out, g_bits: int = DEFAULT_G):
    return act_model("gelu_tanh", codes, scales, elem_in, elem_out, g_bits)


def _tanh_arg(x):
    """sqrt(2/pi) * (x + 0.044715 x^3) in mpmath (the tanh GELU's inner function, odd in x)."""
    import mpmath

    return mpmath.sqrt(2 / mpmath.pi) * (x + mpmath.mpf("0.044715") * x ** 3)


def g_float64(func: str, x: torch.Tensor) -> torch.Tensor:
    """g(x) in float64 with relative accuracy ~1e-16 down the negative tails
    (Phi(x) = erfc(-x / sqrt 2) / 2; sigmoid; tanh GELU as sigmoid(2 c (x + 0.044715 x^3)))."""
    x = x.to(torch.float64)
    if func == "gelu":
        return torch.special.erfc(-x * 0.7071067811865476) / 2
    if func == "gelu_tanh":
        return torch.sigmoid(2 * 0.7978845608028654 * (x + 0.044715 * x ** 3))
    return torch.sigmoid(x)


def float_reference(func: str, x: torch.Tensor) -> torch.Tensor:
    """float64 GELU (erf or tanh form) / SiLU, x * g(x)."""
    x = x.to(torch.float64)
    return x * g_float64(func, x)


def reference_me(func: str, codes, scales, elem_in, prec: int = 96) -> tuple[list, list]:
    """Exact-to-``prec``-bits (m, e) of f(x) for every input element, from mpmath (arbitrary
    exponent range: no underflow in the tails). Returns flat Python-int lists in element order.

    Correct rounding of these equals correct rounding of the true f(x) unless f(x) lies within
    2^-prec (relative) of a rounding decision point, which a transcendental value does not.
    """
    import mpmath

    sig, exp = decode_sig_exp(codes, elem_in)
    t = (torch.as_tensor(scales).to(torch.int64).unsqueeze(-1) + exp - E8M0_BIAS).reshape(-1).tolist()
    sig = sig.reshape(-1).tolist()
    cache: dict = {}
    ms, es = [], []
    with mpmath.workprec(prec + 40):
        for sg, te in zip(sig, t):
            if sg == 0:
                ms.append(0)
                es.append(0)
                continue
            key = (sg, te)
            if key not in cache:
                x = mpmath.mpf(sg) * mpmath.mpf(2) ** te
                if abs(x) < 1:
                    # f = x/2 + x*o(x), o = g - 1/2 odd, so x*o(x) > 0: no cancellation near 0
                    if func == "gelu":
                        o = mpmath.erf(x / mpmath.sqrt(2)) / 2
                    elif func == "gelu_tanh":
                        o = mpmath.tanh(_tanh_arg(x)) / 2
                    else:
                        o = mpmath.tanh(x / 2) / 2
                    d = x * o
                    if mpmath.mag(d) < mpmath.mag(x) - prec + 8:   # x/2 plus a sliver below the precision
                        cache[key] = ((sg << (prec + 20)) + 1, te - 1 - prec - 20)
                        fx = None
                    else:
                        fx = x / 2 + d
                elif sg > 0:
                    h = _h_exact(func, x)
                    if mpmath.mag(h) < -prec + 8:   # x minus a sliver below the precision
                        cache[key] = ((sg << (prec + 20)) - 1, te - prec - 20)
                        fx = None
                    else:
                        fx = x * (1 - h)
                else:
                    fx = x * _h_exact(func, -x)
                if fx is None:
                    pass
                elif mpmath.mag(fx) < -4000:   # far below every MX value: keep only its sign
                    cache[key] = (-1 if sg < 0 else 1, -4000)
                else:
                    q = int(mpmath.floor(mpmath.log(abs(fx), 2)))
                    cache[key] = (int(mpmath.nint(fx * mpmath.mpf(2) ** (prec - q))), q - prec)
            mm, ee = cache[key]
            ms.append(mm)
            es.append(ee)
    return ms, es


def reference_model(func: str, codes, scales, elem_in, elem_out) -> tuple[torch.Tensor, torch.Tensor]:
    """MX quantization (``mx_quantize.quantize_block``, exact) of the mpmath f(x): the ideal output."""
    from masec.hw_templates.kernels.mx_quantize import quantize_block

    codes = torch.as_tensor(codes)
    block = codes.shape[-1]
    ms, es = reference_me(func, codes, scales, elem_in)
    oc, os_ = [], []
    for i in range(0, len(ms), block):
        c, s_ = quantize_block(ms[i:i + block], es[i:i + block], elem_out)
        oc.append(c)
        os_.append(s_)
    return (torch.tensor(oc, dtype=torch.int64).reshape(codes.shape),
            torch.tensor(os_, dtype=torch.int64).reshape(codes.shape[:-1]))


# ----------------------------------------------------------------------------- pipelining
#: Largest PIPE the template has cuts for (mx_quantize's too).
MAX_PIPE = 3


def _check_pipe(pipe) -> int:
    return check_pipe(pipe, MAX_PIPE, "the activation kernels")


def latency(params: dict) -> int:
    """Cycles ``PIPE`` adds over PIPE 0: the kernel's own cuts (G and M at PIPE >= 1, I at >= 2, X and
    W at >= 3: 0, 2, 3, 5) plus mx_quantize's ``latency(PIPE)`` (2 * PIPE, + 1 at PIPE 3)."""
    pipe = _check_pipe(params.get("PIPE", 0))
    return (0, 2, 3, 5)[pipe] + mx_quantize.latency(pipe)


# ----------------------------------------------------------------------------- config, manifest
def jinja_ctx(func: str, elem_in, g_bits: int = DEFAULT_G) -> dict:
    f = frac_bits(elem_in)
    entries = lut(func, f, g_bits)
    hs_bits = max(1, max(e[1] for e in entries).bit_length())
    return {"func": func, "frac_bits": f, "g_bits": g_bits, "k_lo": k_lo(g_bits), "k_hi": K_HI[func],
            "hs_bits": hs_bits, "lut": [(hm << hs_bits) | hsx for hm, hsx in entries]}


def module_name(func: str, elem_in, g_bits: int = DEFAULT_G) -> str:
    """The ROM depends only on (func, F, G): one module per such triple."""
    return f"mx_{func}_f{frac_bits(elem_in)}_g{g_bits}"


def sv_params(lanes: int, block: int, elem_in, elem_out, pipe: int | None = None) -> dict:
    """SV parameters of an activation instance (``PIPE`` only when ``pipe`` is given)."""
    return {"P": lanes, "B": block, "X_IS_INT": int(elem_in.kind == "int"), "X_BITS": elem_in.bits,
            "X_MBITS": elem_in.mbits, "X_BIAS": elem_in.bias, **element_sv_params(elem_out, prefix="OUT_"),
            **({} if pipe is None else {"PIPE": _check_pipe(pipe)})}


def instance_config(shape, fmt_in, fmt_out, lanes: int, func: str = "gelu",
                    g_bits: int = DEFAULT_G, pipe: int | None = None) -> tuple[dict, dict, str]:
    """``(jinja_ctx, sv_params, module_name)`` of an ``mx_gelu`` / ``mx_gelu_tanh`` / ``mx_silu`` instance.

    ``pipe`` sets the ``PIPE`` SV parameter (left out: the template's default, 0).
    Render with ``render("mx_" + func, module_name, **jinja_ctx)``; instances whose input
    elements share mbits (and G) share one rendered module.
    """
    if func not in FUNCS:
        raise ValueError(f"func must be one of {FUNCS}, got {func!r}")
    fi, fo = resolve_format(fmt_in), resolve_format(fmt_out)
    if fi.block_size != fo.block_size:
        raise ValueError(f"block sizes differ: {fi.block_size} vs {fo.block_size}")
    check_lanes(fi, lanes)
    del shape
    return (jinja_ctx(func, fi.element, g_bits), sv_params(lanes, fi.block_size, fi.element, fo.element, pipe),
            module_name(func, fi.element, g_bits))


def _examples(func):
    from masec.formats.element import FP4_E2M1, FP8_E4M3, INT8
    out = []
    cfgs = (("mxint8->mxint8 P4", 4, INT8, INT8), ("mxfp8->mxfp8 P8", 8, FP8_E4M3, FP8_E4M3),
            ("mxfp4->mxfp4 P32", 32, FP4_E2M1, FP4_E2M1))
    # at PIPE 0 (slow clocks) and at MAX_PIPE (a 3 ns clock)
    for pipe in (None, MAX_PIPE):
        for label, lanes, ei, eo in cfgs:
            out.append({"label": label + ("" if pipe is None else f" PIPE{pipe}"), "ctx": jinja_ctx(func, ei),
                        "params": sv_params(lanes, 32, ei, eo, pipe)})
    return tuple(out)


_PARAMS = (
    ParamSpec("P", "lanes per beat; divides B", 4),
    ParamSpec("B", "MX block size", 32),
    ParamSpec("X_IS_INT", "input element: 1 int, 0 fp", 1),
    ParamSpec("X_BITS", "input code width", 8),
    ParamSpec("X_MBITS", "input fraction bits; must equal the Jinja frac_bits of the ROM", 6),
    ParamSpec("X_BIAS", "input exponent bias (0 for int)", 0),
    ParamSpec("OUT_IS_INT", "output element: 1 int, 0 fp", 1),
    ParamSpec("OUT_BITS", "output code width", 8),
    ParamSpec("OUT_MBITS", "output fraction bits", 6),
    ParamSpec("OUT_BIAS", "output emin = 1 - OUT_BIAS (fp: bias, int: 1)", 1),
    ParamSpec("OUT_EMAX", "output top binade exponent (int: 0)", 0),
    ParamSpec("OUT_MAX_CODE", "output largest finite magnitude code", 127),
    ParamSpec("PIPE", "pipeline depth 0..3 (own cuts + mx_quantize's; latency in extra['latency'])", 0),
)
_PORTS = (PortSpec("s_x", "in", "mx", "input: P lanes of X_BITS-bit codes + E8M0 scale"),
          PortSpec("m_y", "out", "mx", "output: P lanes of OUT_BITS-bit codes + E8M0 scale"))
_TITLE = {"gelu": "GELU (erf form)", "silu": "SILU", "gelu_tanh": "GELU (tanh form)"}
_CTX_DOC = {"jinja": "func, frac_bits (= input mbits), g_bits (G), k_lo, k_hi, hs_bits, lut (ROM words)"}

SPECS = tuple(
    KernelSpec(
        name=f"mx_{func}",
        template=f"mx_{func}.sv.j2",
        doc=f"{_TITLE[func]} on an MX stream: exact decode, ROM of g(-|x|) as a (G+1)-bit float indexed by the "
            "input's exact (binade, mantissa), x * g(x) through mx_quantize. 1 beat/cycle.",
        params=_PARAMS,
        ports=_PORTS,
        deps=("mx_elem_decode", "mx_quantize"),
        ops=(func,),
        model=f"{__name__}:{func}_model",
        examples=_examples(func),
        extra={**_CTX_DOC, "latency": latency, "max_pipe": MAX_PIPE},
    )
    for func in FUNCS
)
