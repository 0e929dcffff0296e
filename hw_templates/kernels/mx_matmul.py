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

Bit-exact model: :func:`matmul_model`.
"""
from __future__ import annotations

import math

import torch

from masec.hw_templates.kernels.mx_linear import (
    XW, decode_sig_off, elem_info, facc_step, facc_step_torch, quantize_rows,
)
from masec.hw_templates.kernels.mx_quantize import element_sv_params
from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

DEFAULT_ACC_GUARD = 8


def matmul_widths(a_elem, b_elem, acc_guard: int = DEFAULT_ACC_GUARD) -> dict:
    """Widths of the RTL: product PW (= DW of the accumulator), AW = DW + G + 1, Y offset C."""
    ai, bi = elem_info(a_elem), elem_info(b_elem)
    pw = ai.sigw + bi.sigw + ai.offmax + bi.offmax
    return {"PW": pw, "DW": pw, "AW": pw + acc_guard + 1, "G": acc_guard, "C": ai.exmin + bi.exmin - 254}


def _elements(codes, scales, elem, length: int):
    """(sig, off, scale) per element of MX rows [R, NB, B] -> [R, length] (padding dropped)."""
    c = torch.as_tensor(codes, dtype=torch.int64)
    s = torch.as_tensor(scales, dtype=torch.int64)
    sig, off = decode_sig_off(c, elem)
    sc = s.unsqueeze(-1).expand_as(c)
    R = c.shape[0]
    return (sig.reshape(R, -1)[:, :length], off.reshape(R, -1)[:, :length], sc.reshape(R, -1)[:, :length])


def matmul_accumulators(a_codes, a_scales, a_elem, b_codes, b_scales, b_elem, trans_b: bool, k_dim: int,
                        n_dim: int, acc_guard: int = DEFAULT_ACC_GUARD):
    """Hardware accumulators (A [M][N], X [M][N]) of mx_matmul, bit-exact (Python ints).

    a: [M, ceil(K/Ba), Ba] codes + [M, ceil(K/Ba)] scales. b: TRANS_B = 1: [N, ceil(K/Bb), Bb]
    (+ scales), rows of B^T; TRANS_B = 0: [K, ceil(N/Bb), Bb] (+ scales), B row-major.
    Products enter the accumulator in order k = 0, 1, ..., K-1.
    """
    w = matmul_widths(a_elem, b_elem, acc_guard)
    sa, oa, ea = _elements(a_codes, a_scales, a_elem, k_dim)            # [M, K]
    if trans_b:
        sb, ob, eb = _elements(b_codes, b_scales, b_elem, k_dim)        # [N, K]
    else:
        sb, ob, eb = (t.t() for t in _elements(b_codes, b_scales, b_elem, n_dim))  # [K, N] -> [N, K]
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
                 k_dim: int, n_dim: int, acc_guard: int = DEFAULT_ACC_GUARD) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit-exact model of mx_matmul: (C codes [M, ceil(N/Bo), Bo], C scales [M, ceil(N/Bo)]).

    See :func:`matmul_accumulators` for the operand layouts; ``out_block`` is C's block size
    along N. Any leading batch dimensions must be looped over by the caller (one matmul = one
    B load).
    """
    A, X = matmul_accumulators(a_codes, a_scales, a_elem, b_codes, b_scales, b_elem, trans_b, k_dim, n_dim,
                               acc_guard)
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
                    p_b: int, p_n: int, acc_guard: int = DEFAULT_ACC_GUARD) -> tuple[dict, dict, str]:
    """(jinja_ctx, sv_params, module_name) of an mx_matmul instance computing one [M, K] x B per B load.

    ``a_fmt``/``b_fmt``/``out_fmt`` are masec.formats MXFormats; ``p_a``, ``p_b`` the lanes of the
    A and B streams, ``p_n`` the output lanes (MACs per cycle). TRANS_B = 0 needs ``p_b == p_n``.
    """
    if trans_b == 0 and p_b != p_n:
        raise ValueError(f"mx_matmul with B row-major (TRANS_B=0) streams B with P_N lanes: P_B {p_b} != P_N {p_n}")
    params = {"M": m_dim, "K": k_dim, "N": n_dim, "TRANS_B": int(bool(trans_b)), "P_A": p_a, "P_B": p_b,
              "P_N": p_n, "BA": a_fmt.block_size, "BB": b_fmt.block_size, "BC": out_fmt.block_size,
              **_elem_params(a_fmt.element, "A_"), **_elem_params(b_fmt.element, "B_"),
              **element_sv_params(out_fmt.element, "Y_"), "ACC_GUARD": acc_guard}
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
#: Largest PIPE the template has cuts for (3: mx_matmul's own cuts stop at 2, mx_quantize's go to 3).
MAX_PIPE = 3


def latency(params: dict) -> int:
    """``SPEC.extra["latency"]``: cycles ``PIPE`` adds over ``PIPE = 0`` at SV ``params``: the decode
    cut (1), the product cut (2) and mx_quantize's ``2 * PIPE``."""
    from masec.hw_templates.kernels.mx_quantize import latency as quantize_latency

    pipe = check_pipe(params.get("PIPE", 0), MAX_PIPE, "mx_matmul")
    return min(pipe, 2) + quantize_latency(pipe)


def _example(label, m, k, n, a, b, o, trans_b, p_a, p_b, p_n, pipe=0):
    from masec.formats import parse_format
    _, params, _ = instance_config(m, k, n, parse_format(a), parse_format(b), parse_format(o), trans_b, p_a, p_b, p_n)
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
            ParamSpec("A_*/B_*", "element formats of A and B (IS_INT, BITS, MBITS, BIAS)", None),
            ParamSpec("Y_*", "output element (mx_quantize ELEM_*)", None),
            ParamSpec("ACC_GUARD", "accumulator guard bits (AW = PW + ACC_GUARD + 1)", DEFAULT_ACC_GUARD),
            ParamSpec("PIPE", "pipeline depth 0..3 (latency + latency(params))", 0)),
    ports=(PortSpec("s_a", "in", "mx", "A rows [M, K]"), PortSpec("s_b", "in", "mx", "B ([N, K] or [K, N])"),
           PortSpec("m_y", "out", "mx", "C rows [M, N], P_N lanes")),
    deps=("mx_facc", "mx_quantize"),
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
    ),
    extra={"latency": latency, "max_pipe": MAX_PIPE},
)
