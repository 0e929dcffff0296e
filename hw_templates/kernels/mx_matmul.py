"""MX matmul of two activation streams: C = A B^T (TRANS_B = 1, e.g. Q K^T) or C = A B (TRANS_B = 0,
e.g. scores x V), with the bounded floating accumulator and the shared output quantizer.

Dataflow (docs/kernels/mx_matmul.md): B is loaded from its stream into on-chip RAM (all of it),
then every row of A produces one row of C. For each A row, ceil(N/P_N) passes of P_N outputs; a
pass walks k = 0..K-1 and multiplies one A element by P_N B elements per cycle ("outer product":
lane j accumulates C[m, p*P_N + j]). Each product is exact (``sig_a * sig_b << (off_a + off_b)``)
and enters lane j's floating accumulator (:func:`masec.hw_templates.kernels.mx_linear.facc_step`)
with its own exponent ``Y = Sa + Sb + C``: the A element's block scale plus the B element's block
scale (B's blocks run along K for TRANS_B = 1 and along N for TRANS_B = 0, so per-product
exponents are what makes the transpose exact without re-quantizing B). Results go through
``mx_quantize`` with P_N lanes.

Seed activation formats (``AFMT`` / ``BFMT``, mx_linear's ``XFMT`` codes: 1 M2XFP activations, 2 NVFP4
with tensor scale ``2^A_TS_EXP`` / ``2^B_TS_EXP``, 3 Anda): every A and B beat is decoded on arrival by
``mx_act_decode``, the module mx_linear decodes its x with, into the element the products read, its
E8M0-equivalent block exponent and (NVFP4) the UE4M3 significand, which multiplies the element's
significand (4 more product bits per NVFP4 operand). The model reads the operands through the same
:func:`masec.hw_templates.kernels.mx_linear.decode_x_stream` (:func:`operand_terms`).

Bit-exact model: :func:`matmul_model`.
"""
from __future__ import annotations

import math

import torch

from masec.hw_templates.kernels.mx_linear import (
    XW, XTerms, decode_sig_off, decode_x_stream, elem_info, facc_step, facc_step_torch, quantize_rows, stream_block,
    stream_widths, x_stream_format,
)
from masec.hw_templates.kernels.mx_quantize import element_sv_params
from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

DEFAULT_ACC_GUARD = 8


#: bits of an NVFP4 operand's UE4M3 significand, multiplied into its element significand
NVFP4_SIG_BITS = 4


def matmul_widths(a_elem, b_elem, acc_guard: int = DEFAULT_ACC_GUARD, a_ssw: int = 0, b_ssw: int = 0) -> dict:
    """Widths of the RTL: product PW (= DW of the accumulator), AW = DW + G + 1, Y offset C.
    ``a_elem``/``b_elem`` are the decoded elements (:func:`operand_terms`); ``a_ssw``/``b_ssw`` the bits of
    a block-scale significand multiplied into them (NVFP4: 4)."""
    ai, bi = elem_info(a_elem), elem_info(b_elem)
    pw = ai.sigw + a_ssw + bi.sigw + b_ssw + ai.offmax + bi.offmax
    return {"PW": pw, "DW": pw, "AW": pw + acc_guard + 1, "G": acc_guard, "C": ai.exmin + bi.exmin - 254}


def operand_terms(fmt, codes, scales, meta=None, ts_exp: int | None = None) -> XTerms:
    """An A or B stream of ``fmt`` (MX or a seed activation format: codes [R, NB, B], scales [R, NB],
    M2XFP metadata [R, NB, B/8], NVFP4's tensor-scale exponent) as mx_matmul decodes it: mx_linear's
    :func:`decode_x_stream` (the decoded element, E8M0-equivalent exponents, NVFP4's significands)."""
    return decode_x_stream(fmt, codes, scales, meta, ts_exp)


def _elements(codes, scales, elem, length: int, sig=None):
    """(sig, off, scale) per element of rows [R, NB, B] -> [R, length] (padding dropped); ``sig``
    [R, NB] a block-scale significand multiplied into every element significand (NVFP4)."""
    c = torch.as_tensor(codes, dtype=torch.int64)
    s = torch.as_tensor(scales, dtype=torch.int64)
    sig_e, off = decode_sig_off(c, elem)
    sig = sig_e if sig is None else sig_e * torch.as_tensor(sig, dtype=torch.int64).unsqueeze(-1)
    sc = s.unsqueeze(-1).expand_as(c)
    R = c.shape[0]
    return (sig.reshape(R, -1)[:, :length], off.reshape(R, -1)[:, :length], sc.reshape(R, -1)[:, :length])


def matmul_accumulators(a_codes, a_scales, a_elem, b_codes, b_scales, b_elem, trans_b: bool, k_dim: int,
                        n_dim: int, acc_guard: int = DEFAULT_ACC_GUARD, a_sig=None, b_sig=None):
    """Hardware accumulators (A [M][N], X [M][N]) of mx_matmul, bit-exact (Python ints).

    a: [M, ceil(K/Ba), Ba] codes + [M, ceil(K/Ba)] scales. b: TRANS_B = 1: [N, ceil(K/Bb), Bb]
    (+ scales), rows of B^T; TRANS_B = 0: [K, ceil(N/Bb), Bb] (+ scales), B row-major.
    Products enter the accumulator in order k = 0, 1, ..., K-1. A seed-format operand is given as
    decoded by :func:`operand_terms` (codes of its decoded element, E8M0-equivalent exponents as the
    scales, ``a_sig``/``b_sig`` NVFP4's block-scale significands [rows, NB]).
    """
    w = matmul_widths(a_elem, b_elem, acc_guard, NVFP4_SIG_BITS if a_sig is not None else 0,
                      NVFP4_SIG_BITS if b_sig is not None else 0)
    sa, oa, ea = _elements(a_codes, a_scales, a_elem, k_dim, a_sig)            # [M, K]
    if trans_b:
        sb, ob, eb = _elements(b_codes, b_scales, b_elem, k_dim, b_sig)        # [N, K]
    else:
        sb, ob, eb = (t.t() for t in _elements(b_codes, b_scales, b_elem, n_dim, b_sig))  # [K, N] -> [N, K]
    M, N = sa.shape[0], sb.shape[0]
    if w["AW"] <= 61:
        A = torch.zeros(M, N, dtype=torch.int64)
        X = torch.zeros(M, N, dtype=torch.int64)
        for k in range(k_dim):
            S = (sa[:, k:k + 1] * sb[:, k].unsqueeze(0)) << (oa[:, k:k + 1] + ob[:, k].unsqueeze(0))
            Y = ea[:, k:k + 1] + eb[:, k].unsqueeze(0) + w["C"]
            A, X = facc_step_torch(A, X, S, Y, w["AW"], w["G"])
        return A.tolist(), X.tolist()
    sal, oal, eal, sbl, obl, ebl = (t.tolist() for t in (sa, oa, ea, sb, ob, eb))
    A = [[0] * N for _ in range(M)]
    X = [[0] * N for _ in range(M)]
    for m in range(M):
        for n in range(N):
            a, x = 0, 0
            for k in range(k_dim):
                S = (sal[m][k] * sbl[n][k]) << (oal[m][k] + obl[n][k])
                a, x = facc_step(a, x, S, eal[m][k] + ebl[n][k] + w["C"], w["AW"], w["G"])
            A[m][n], X[m][n] = a, x
    return A, X


def matmul_model(a_codes, a_scales, a_elem, b_codes, b_scales, b_elem, out_elem, out_block: int, trans_b: bool,
                 k_dim: int, n_dim: int, acc_guard: int = DEFAULT_ACC_GUARD, a_sig=None,
                 b_sig=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit-exact model of mx_matmul: (C codes [M, ceil(N/Bo), Bo], C scales [M, ceil(N/Bo)]).

    See :func:`matmul_accumulators` for the operand layouts (seed-format operands decoded by
    :func:`operand_terms`); ``out_block`` is C's block size along N. Any leading batch dimensions
    must be looped over by the caller (one matmul = one B load).
    """
    A, X = matmul_accumulators(a_codes, a_scales, a_elem, b_codes, b_scales, b_elem, trans_b, k_dim, n_dim,
                               acc_guard, a_sig, b_sig)
    return quantize_rows(A, X, out_elem, out_block)


def exact_matmul(a_codes, a_scales, a_elem, b_codes, b_scales, b_elem, trans_b: bool, k_dim: int, n_dim: int):
    """Exact rational C[m][n] (fractions.Fraction) of the decoded operands."""
    from fractions import Fraction

    def vals(codes, scales, el, length):
        t = [Fraction(v) if math.isfinite(v) else None for v in el.value_table().tolist()]
        c = torch.as_tensor(codes, dtype=torch.int64)
        s = torch.as_tensor(scales, dtype=torch.int64)
        rows = []
        for rc, rs in zip(c.tolist(), s.tolist()):
            row = []
            for blk, sc in zip(rc, rs):
                row.extend(t[k] * Fraction(2) ** (sc - 127) for k in blk)
            rows.append(row[:length])
        return rows

    a = vals(a_codes, a_scales, a_elem, k_dim)
    if trans_b:
        b = vals(b_codes, b_scales, b_elem, k_dim)
        return [[sum(x * y for x, y in zip(ar, br)) for br in b] for ar in a]
    b = vals(b_codes, b_scales, b_elem, n_dim)
    return [[sum(ar[k] * b[k][n] for k in range(k_dim)) for n in range(n_dim)] for ar in a]


def _elem_params(el, prefix):
    i = elem_info(el)
    return {f"{prefix}IS_INT": int(i.is_int), f"{prefix}BITS": i.bits, f"{prefix}MBITS": i.mbits,
            f"{prefix}BIAS": i.bias if not i.is_int else 0}


def instance_config(m_dim: int, k_dim: int, n_dim: int, a_fmt, b_fmt, out_fmt, trans_b: bool, p_a: int,
                    p_b: int, p_n: int, acc_guard: int = DEFAULT_ACC_GUARD, a_ts_exp: int | None = None,
                    b_ts_exp: int | None = None) -> tuple[dict, dict, str]:
    """(jinja_ctx, sv_params, module_name) of an mx_matmul instance computing one [M, K] x B per B load.

    ``a_fmt``/``b_fmt`` are masec.formats MXFormats or seed activation formats (``AFMT``/``BFMT``:
    ``m2xfp4_a`` with lanes a multiple of 8, ``nvfp4`` with the power-of-two tensor scale
    ``2^a_ts_exp`` / ``2^b_ts_exp`` (required), ``anda<M>``, M <= 15); ``out_fmt`` an MXFormat; ``p_a``,
    ``p_b`` the lanes of the A and B streams, ``p_n`` the output lanes (MACs per cycle). TRANS_B = 0
    needs ``p_b == p_n``. MX instances keep exactly their former parameter list. ValueError otherwise.
    """
    from masec.formats.mx import MXFormat
    from masec.hw_templates.kernels.mx_quantize import QFMT_MX, QFMT_NVFP4

    if trans_b == 0 and p_b != p_n:
        raise ValueError(f"mx_matmul with B row-major (TRANS_B=0) streams B with P_N lanes: P_B {p_b} != P_N {p_n}")
    if not isinstance(out_fmt, MXFormat):
        raise ValueError(f"mx_matmul's output is an MX format, not {getattr(out_fmt, 'name', out_fmt)!r}")
    ops = []
    for who, f, lanes, ts in (("A", a_fmt, p_a, a_ts_exp), ("B", b_fmt, p_b, b_ts_exp)):
        try:
            q, el = x_stream_format(f)
        except ValueError as exc:
            raise ValueError(f"mx_matmul operand {who}: {exc}".replace("mx_linear decodes", "mx_matmul decodes")) \
                from None
        stream_widths(f, lanes)   # M2XFP: lanes a multiple of 8
        if (q == QFMT_NVFP4) != (ts is not None):
            raise ValueError(f"the tensor-scale exponent of {who} (2^{who.lower()}_ts_exp) is given exactly for an "
                             f"nvfp4 {who}")
        if ts is not None and not -256 <= int(ts) <= 256:
            raise ValueError(f"the nvfp4 {who} tensor scale exponent must be -256..256, got {ts}")
        ops.append((q, el, ts))
    (aq, a_el, _), (bq, b_el, _) = ops
    params = {"M": m_dim, "K": k_dim, "N": n_dim, "TRANS_B": int(bool(trans_b)), "P_A": p_a, "P_B": p_b,
              "P_N": p_n, "BA": stream_block(a_fmt), "BB": stream_block(b_fmt), "BC": out_fmt.block_size,
              **_elem_params(a_el, "A_"), **_elem_params(b_el, "B_"),
              **element_sv_params(out_fmt.element, "Y_"), "ACC_GUARD": acc_guard}
    for who, (q, _, ts) in zip("AB", ops):
        if q != QFMT_MX:   # MX instances keep exactly their former parameter list
            params[f"{who}FMT"] = int(q)
            if q == QFMT_NVFP4:
                params[f"{who}_TS_EXP"] = int(ts)
    return {}, params, "mx_matmul"


def load_cycles(k_dim: int, n_dim: int, b_block: int, trans_b: bool, p_b: int) -> int:
    """Beats of the B stream (one load per matmul)."""
    if trans_b:
        return n_dim * (-(-k_dim // b_block)) * b_block // p_b
    return k_dim * (-(-n_dim // b_block)) * b_block // p_b


def ideal_cycles(m_dim: int, k_dim: int, n_dim: int, p_n: int, b_block: int = 32, trans_b: bool = True,
                 p_b: int | None = None) -> int:
    """B load beats + M * ceil(N/P_N) * K compute cycles (P_N MACs per cycle)."""
    return load_cycles(k_dim, n_dim, b_block, trans_b, p_b or p_n) + m_dim * (-(-n_dim // p_n)) * k_dim


# ----------------------------------------------------------------------------- pipelining (PIPE)
#: Largest PIPE the template has cuts for (3: the 4-stage accumulator step and mx_quantize's cut O).
MAX_PIPE = 3


def interleave(params: dict) -> int:
    """Passes issued round robin (= stages of the accumulator step) at SV ``params``: the largest of 4
    (PIPE 3), 2 (PIPE >= 2) and 1 that divides NPN = ceil(N / P_N) (the template's IL; a parameter
    left out has the template's default, N 64, P_N 8)."""
    pipe = check_pipe(params.get("PIPE", 0), MAX_PIPE, "mx_matmul")
    npn = -(-int(params.get("N", 64)) // int(params.get("P_N", 8)))
    most = 4 if pipe >= 3 else 2 if pipe >= 2 else 1
    return next(il for il in (4, 2, 1) if il <= most and npn % il == 0)


def latency(params: dict) -> int:
    """``SPEC.extra["latency"]``: cycles ``PIPE`` adds over ``PIPE = 0`` at SV ``params``: the decode
    cut (1), the product cut (2), the accumulator step's extra stages (``interleave - 1``), the register
    slice in front of mx_quantize (1 at PIPE >= 1) and mx_quantize's ``latency(PIPE)`` (2 * PIPE, + 1 at
    PIPE 3)."""
    from masec.hw_templates.kernels.mx_quantize import latency as quantize_latency

    pipe = check_pipe(params.get("PIPE", 0), MAX_PIPE, "mx_matmul")
    return min(pipe, 2) + interleave(params) - 1 + (1 if pipe else 0) + quantize_latency(pipe)


def _example(label, m, k, n, a, b, o, trans_b, p_a, p_b, p_n, pipe=0, a_ts_exp=None, b_ts_exp=None):
    from masec.formats import parse_format
    _, params, _ = instance_config(m, k, n, parse_format(a), parse_format(b), parse_format(o), trans_b, p_a, p_b, p_n,
                                   a_ts_exp=a_ts_exp, b_ts_exp=b_ts_exp)
    if pipe:
        params["PIPE"] = pipe
    return {"label": label, "ctx": {}, "params": params}


SPEC = KernelSpec(
    name="mx_matmul",
    template="mx_matmul.sv.j2",
    doc="C = A B^T (TRANS_B=1) or A B (TRANS_B=0) of two MX streams: B loaded into RAM, then per A row "
        "ceil(N/P_N) passes of K cycles with P_N exact products per cycle, each into its lane's bounded "
        "floating accumulator with its own exponent; output through mx_quantize (P_N lanes); PIPE 0..3 adds "
        "latency(params) cycles.",
    params=(ParamSpec("M", "rows of A per B load", 8), ParamSpec("K", "reduction length", 64),
            ParamSpec("N", "columns of C", 64),
            ParamSpec("TRANS_B", "1: B streams [N, K] (blocks along K); 0: B streams [K, N] (blocks along N)", 1),
            ParamSpec("P_A", "A stream lanes (divides BA)", 8), ParamSpec("P_B", "B stream lanes (divides BB)", 8),
            ParamSpec("P_N", "output lanes = MACs per cycle (divides BC)", 8),
            ParamSpec("BA/BB/BC", "block sizes of A (along K), B (along K or N), C (along N)", 32),
            ParamSpec("A_*/B_*", "element formats of A and B as streamed (IS_INT, BITS, MBITS, BIAS)", None),
            ParamSpec("AFMT/BFMT", "A / B stream format: 0 MX, 1 M2XFP activations (P/4 metadata bits above the "
                      "codes), 2 NVFP4, 3 Anda (mx_linear's XFMT codes; seed instances only)", 0),
            ParamSpec("A_TS_EXP/B_TS_EXP", "NVFP4 A / B: tensor scale 2^*_TS_EXP", 0),
            ParamSpec("Y_*", "output element (mx_quantize ELEM_*)", None),
            ParamSpec("ACC_GUARD", "accumulator guard bits (AW = PW + ACC_GUARD + 1)", DEFAULT_ACC_GUARD),
            ParamSpec("PIPE", "pipeline depth 0..3 (latency + latency(params))", 0)),
    ports=(PortSpec("s_a", "in", "mx", "A rows [M, K]"), PortSpec("s_b", "in", "mx", "B ([N, K] or [K, N])"),
           PortSpec("m_y", "out", "mx", "C rows [M, N], P_N lanes")),
    deps=("mx_act_decode", "mx_delay", "mx_facc", "mx_quantize"),
    ops=("matmul",),
    model=f"{__name__}:matmul_model",
    examples=(
        _example("QK^T 8x16x8 mxint8 P_N4", 8, 16, 8, "mxint8", "mxint8", "mxint8", True, 8, 8, 4),
        _example("scores x V 8x8x16 mxfp8_e4m3 P_N8", 8, 8, 16, "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3",
                 False, 8, 8, 8),
        # pipelined: the PIPE of a 5 ns (2) and a 3 ns (3) clock
        _example("QK^T 8x16x8 mxint8 P_N4 PIPE2", 8, 16, 8, "mxint8", "mxint8", "mxint8", True, 8, 8, 4, pipe=2),
        _example("scores x V 8x8x16 mxfp8_e4m3 P_N8 PIPE3", 8, 8, 16, "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3",
                 False, 8, 8, 8, pipe=3),
        # the LLaMA block's Q K^T at --clock 10 on ECP5 (NPN 4: the accumulator step in four stages)
        _example("QK^T 16x8x16 mxint8 P_N4 PIPE3", 16, 8, 16, "mxint8", "mxint8", "mxint8", True, 4, 4, 4, pipe=3),
        # seed activation operands (AFMT / BFMT), both transposes
        _example("QK^T 8x32x8 nvfp4 x m2xfp4_a P_N8", 8, 32, 8, "nvfp4", "m2xfp4_a", "mxint8", True, 8, 8, 8,
                 a_ts_exp=-2),
        _example("scores x V 8x16x16 anda4 x nvfp4 P_N8 PIPE3", 8, 16, 16, "anda4", "nvfp4", "mxint8", False, 8, 8, 8,
                 pipe=3, b_ts_exp=3),
    ),
    extra={"latency": latency, "max_pipe": MAX_PIPE},
)
