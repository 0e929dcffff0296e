"""Element-wise add and multiply of two MX streams (``mx_add``, ``mx_mul``) and their bit-exact models.

Both kernels decode each lane of the two operands to an exact ``sig * 2^t`` (``mx_elem_decode``;
``t`` includes the block scale), combine them with integer arithmetic into one exact (or, for
far-apart addends, rounding-equivalent) value ``m * 2^e`` and hand it to the shared output
quantizer ``mx_quantize``. The two operands may have different element formats; the result is
in a third one. All three share the block size ``B`` and the lane count ``P``.

* add: with ``W = max(WX, WY)`` (``|sig| < 2^W``), ``SH = OUT_MBITS + W + 1``, ``ST = OUT_MBITS + 3``:
  one operand zero -> the other one; ``d = t_big - t_small <= SH`` -> ``m = (sig_big << d) + sig_small``,
  ``e = t_small`` (exact); ``d > SH`` -> ``m = (sig_big << ST) + sign(sig_small)``, ``e = t_big - ST``
  (the small addend only steers rounding; the quantized result equals that of the exact sum).
* mul: ``m = sig_x * sig_y``, ``e = t_x + t_y`` (exact).

Pipelining: the SV parameter ``PIPE`` (0..3) adds elastic register stages (1 beat/cycle under any
backpressure) in the combine datapath and is passed on to the instance's ``mx_quantize``; values do
not change. mx_add cuts after its align (PIPE >= 1: operand order, exponent difference, shift
amount, addend, e), after its shifter (PIPE >= 2) and after the decode (PIPE >= 3); mx_mul after
its multiplier operands (PIPE >= 1) and after the product (PIPE >= 2). Latency over PIPE 0:
:func:`add_latency` / :func:`mul_latency` (their own cuts plus ``mx_quantize.latency``);
``masec.passes.hw.pipeline.pipe_depth`` picks PIPE from the clock period.

Seed activation results (SV ``OUT_QFMT`` / ``OUT_TS_EXP``, mx_quantize's ``QFMT`` / ``TS_EXP``, as
mx_linear's ``Y_QFMT``), for ``mx_mul`` only: its exact product through the seed quantizer,
:func:`mul_model_format` -> ``(codes, scales, meta)`` (M2XFP subgroup metadata, else None); the
operands stay MX. ``mx_add`` shares the template's parameters but :func:`instance_config` refuses a
seed result for it: its sticky alignment window (``ST = OUT_MBITS + 3``) is sized for rounding to the
MX element, not for the seed quantizers' wider intermediate roundings (M2XFP's E2M3, Anda's FP16).

Model signature (what the compiler calls to get expected outputs)::

    codes_z, scales_z = add_model(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y, elem_out)
    codes_z, scales_z = mul_model(...same...)

codes ``[..., nblocks, B]`` (unsigned bit patterns), scales ``[..., nblocks]`` (E8M0); int64 out.
"""
from __future__ import annotations

import torch

from masec.hw_templates.kernels import mx_quantize
from masec.hw_templates.kernels.mx_quantize import element_sv_params, quantize_blocks
from masec.hw_templates.kernels.mx_relu import check_lanes, resolve_format
from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe

E8M0_BIAS = 127
EW = 10    # signed exponent width handed to mx_quantize (the RTL's EW)


# ------------------------------------------------------------------------------ element decoding
def sig_bits(elem) -> int:
    """W with |significand| < 2^W for every code (int: |k| <= 2^(bits-1); fp: hidden bit + mantissa)."""
    return elem.bits if elem.kind == "int" else elem.mbits + 1


def decode_sig_exp(codes, elem) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact element value ``sig * 2^exp`` of each code (``mx_elem_decode``); int64 tensors.

    fp normal: sig = +-(2^mbits + mant), exp = e - bias - mbits; subnormal: sig = +-mant,
    exp = 1 - bias - mbits; int: sig = k (two's complement), exp = -mbits. Special codes (NaN/Inf)
    decode like ordinary codes of the same bit pattern, as in the RTL.
    """
    c = torch.as_tensor(codes).to(torch.int64)
    if elem.kind == "int":
        sig = torch.where(c >= (1 << (elem.bits - 1)), c - (1 << elem.bits), c)
        return sig, torch.full_like(c, -elem.mbits)
    ef = (c >> elem.mbits) & ((1 << elem.ebits) - 1)
    mant = c & ((1 << elem.mbits) - 1)
    mag = torch.where(ef == 0, mant, mant | (1 << elem.mbits))
    sig = torch.where(((c >> (elem.bits - 1)) & 1).bool(), -mag, mag)
    exp = torch.clamp(ef, min=1) - elem.bias - elem.mbits
    return sig, exp


def _operands(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y):
    sx, ex = decode_sig_exp(codes_x, elem_x)
    sy, ey = decode_sig_exp(codes_y, elem_y)
    tx = torch.as_tensor(scales_x).to(torch.int64).unsqueeze(-1) + ex   # biased by 127
    ty = torch.as_tensor(scales_y).to(torch.int64).unsqueeze(-1) + ey
    if sx.shape != sy.shape:
        raise ValueError(f"operand shapes differ: {tuple(sx.shape)} vs {tuple(sy.shape)}")
    return sx, tx, sy, ty


# ------------------------------------------------------------------------------ add
def add_widths(elem_x, elem_y, elem_out) -> dict:
    """The RTL's widths: W, SH (largest exact alignment), ST (sticky shift), MW (width of m)."""
    w = max(sig_bits(elem_x), sig_bits(elem_y))
    sh = elem_out.mbits + w + 1
    return {"W": w, "SH": sh, "ST": elem_out.mbits + 3, "MW": w + sh + 2, "EW": EW}


def add_me(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y, elem_out) -> tuple[torch.Tensor, torch.Tensor]:
    """The (m, e) lanes ``mx_add`` hands to ``mx_quantize`` (bit-exact, int64)."""
    wd = add_widths(elem_x, elem_y, elem_out)
    sx, tx, sy, ty = _operands(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y)
    x_big = (sx != 0) & ((sy == 0) | (tx >= ty))
    big = torch.where(x_big, sx, sy)
    small = torch.where(x_big, sy, sx)
    t_big = torch.where(x_big, tx, ty)
    t_small = torch.where(x_big, ty, tx)
    d = t_big - t_small
    near = d <= wd["SH"]
    m_near = (big << d.clamp(0, wd["SH"])) + small
    m_far = (big << wd["ST"]) + torch.where(small < 0, -1, 1)
    m = torch.where(small == 0, big, torch.where(near, m_near, m_far))
    e = torch.where(small == 0, t_big, torch.where(near, t_small, t_big - wd["ST"])) - E8M0_BIAS
    return m, e


def add_model(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y, elem_out):
    """Bit-exact model of ``mx_add``: ``(codes [..., nblocks, B], scales [..., nblocks])`` of x + y in ``elem_out``."""
    m, e = add_me(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y, elem_out)
    return quantize_blocks(m, e, elem_out)


# ------------------------------------------------------------------------------ mul
def mul_widths(elem_x, elem_y) -> dict:
    return {"MW": sig_bits(elem_x) + sig_bits(elem_y) + 1, "EW": EW}


def mul_me(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y) -> tuple[torch.Tensor, torch.Tensor]:
    """The (m, e) lanes ``mx_mul`` hands to ``mx_quantize``: the exact product (int64)."""
    sx, tx, sy, ty = _operands(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y)
    return sx * sy, tx + ty - 2 * E8M0_BIAS


def mul_model(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y, elem_out):
    """Bit-exact model of ``mx_mul``: ``(codes, scales)`` of x * y quantized to ``elem_out``."""
    m, e = mul_me(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y)
    return quantize_blocks(m, e, elem_out)


def mul_model_format(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y, elem_out, out_qfmt: int = 0,
                     out_ts_exp: int = 0):
    """``mx_mul`` with its quantizer in mode ``out_qfmt`` (mx_quantize's ``QFMT``; ``elem_out`` the
    quantizer's element): ``(codes, scales, meta)``, meta M2XFP's subgroup metadata or None."""
    m, e = mul_me(codes_x, scales_x, elem_x, codes_y, scales_y, elem_y)
    return mx_quantize.quantize_blocks_format(m, e, out_qfmt, elem_out, out_ts_exp)


# ------------------------------------------------------------------------------ pipelining
#: Largest PIPE the templates have cuts for (mx_quantize's too).
MAX_PIPE = 3


def _check_pipe(pipe) -> int:
    return check_pipe(pipe, MAX_PIPE, "mx_add / mx_mul")


def add_latency(params: dict) -> int:
    """Cycles ``mx_add``'s ``PIPE`` adds over PIPE 0: one per own cut (align, shift, decode) plus
    mx_quantize's ``latency(PIPE)`` (2 * PIPE, + 1 at PIPE 3)."""
    pipe = _check_pipe(params.get("PIPE", 0))
    return pipe + mx_quantize.latency(pipe)


def mul_latency(params: dict) -> int:
    """Cycles ``mx_mul``'s ``PIPE`` adds over PIPE 0: its operand and product cuts (``min(PIPE, 2)``)
    plus mx_quantize's ``latency(PIPE)`` (2 * PIPE, + 1 at PIPE 3)."""
    pipe = _check_pipe(params.get("PIPE", 0))
    return min(pipe, 2) + mx_quantize.latency(pipe)


# ------------------------------------------------------------------------------ exact references
def exact_values_me(codes, scales, elem):
    """Each element as exact Python-int ``(m, e)`` pairs (value m * 2^e), flattened per block."""
    sig, exp = decode_sig_exp(codes, elem)
    t = torch.as_tensor(scales).to(torch.int64).unsqueeze(-1) + exp - E8M0_BIAS
    return sig, t


def reference_model(op: str, codes_x, scales_x, elem_x, codes_y, scales_y, elem_y, elem_out):
    """Unbounded-integer reference: the exact x+y or x*y of every lane (Python ints, no width
    limit), quantized block by block with ``mx_quantize.quantize_block``. Independent of the
    kernel's alignment/sticky scheme; the kernel models must equal it exactly."""
    from masec.hw_templates.kernels.mx_quantize import quantize_block

    sx, ex = exact_values_me(codes_x, scales_x, elem_x)
    sy, ey = exact_values_me(codes_y, scales_y, elem_y)
    block = sx.shape[-1]
    lead = sx.shape[:-1]
    sxl, exl = sx.reshape(-1, block).tolist(), ex.reshape(-1, block).tolist()
    syl, eyl = sy.reshape(-1, block).tolist(), ey.reshape(-1, block).tolist()
    codes, scales = [], []
    for bx, bex, by, bey in zip(sxl, exl, syl, eyl):
        ms, es = [], []
        for a, ea, b, eb in zip(bx, bex, by, bey):
            if op == "mul":
                ms.append(a * b)
                es.append(ea + eb)
            else:
                lo = min(ea, eb)
                ms.append((a << (ea - lo)) + (b << (eb - lo)))
                es.append(lo)
        c, s = quantize_block(ms, es, elem_out)
        codes.append(c)
        scales.append(s)
    return (torch.tensor(codes, dtype=torch.int64).reshape(*lead, block),
            torch.tensor(scales, dtype=torch.int64).reshape(lead))


# ------------------------------------------------------------------------------ manifest, config
def _elem_params(prefix: str, elem) -> dict:
    return {f"{prefix}IS_INT": int(elem.kind == "int"), f"{prefix}BITS": elem.bits,
            f"{prefix}MBITS": elem.mbits, f"{prefix}BIAS": elem.bias}


def sv_params(lanes: int, block: int, elem_x, elem_y, elem_out, pipe: int | None = None, out_qfmt: int = 0,
              out_ts_exp: int = 0) -> dict:
    """SV parameters of an ``mx_add`` / ``mx_mul`` instance (``PIPE`` only when ``pipe`` is given;
    ``OUT_QFMT`` / ``OUT_TS_EXP`` only for a seed result, ``elem_out`` then the quantizer's element)."""
    extra = {} if not out_qfmt else {"OUT_QFMT": int(out_qfmt)}
    if out_qfmt == mx_quantize.QFMT_NVFP4:
        extra["OUT_TS_EXP"] = int(out_ts_exp)
    return {"P": lanes, "B": block, **_elem_params("X_", elem_x), **_elem_params("Y_", elem_y),
            **element_sv_params(elem_out, prefix="OUT_"), **extra,
            **({} if pipe is None else {"PIPE": _check_pipe(pipe)})}


def instance_config(shape, fmt_x, fmt_y, fmt_out, lanes: int, op: str = "add",
                    pipe: int | None = None, y_ts_exp: int | None = None) -> tuple[dict, dict, str]:
    """``(jinja_ctx, sv_params, module_name)`` of an element-wise ``op`` ("add" | "mul") instance.

    ``pipe`` sets the ``PIPE`` SV parameter (left out: the template's default, 0).
    Formats are ``MXFormat`` objects or names; all three must share the block size. The template
    needs no Jinja context: element formats are SV parameters, so one rendered ``mx_add`` /
    ``mx_mul`` serves every instance. ``shape`` is accepted for a uniform signature. The result
    (not the operands) may be a parsed seed activation format (``OUT_QFMT``): ``m2xfp4_a`` (lanes a
    multiple of 8), ``nvfp4`` (``y_ts_exp``, its tensor-scale exponent, given exactly then), ``anda<M>``.
    """
    if op not in ("add", "mul"):
        raise ValueError(f"op must be 'add' or 'mul', got {op!r}")
    fx, fy = (resolve_format(f) for f in (fmt_x, fmt_y))
    fo = resolve_format(fmt_out) if isinstance(fmt_out, str) else fmt_out
    qfmt, el_out = mx_quantize.output_format_params(fo)
    if qfmt and op == "add":
        raise ValueError(f"mx_add's result is MX only (its sticky alignment is sized for MX elements), not {fo.name}")
    bo = fo.group_size if hasattr(fo, "group_size") else fo.block_size
    if not fx.block_size == fy.block_size == bo:
        raise ValueError(f"block sizes differ: {fx.block_size}, {fy.block_size}, {bo}")
    check_lanes(fx, lanes)
    if (qfmt == mx_quantize.QFMT_NVFP4) != (y_ts_exp is not None):
        raise ValueError("y_ts_exp (the power-of-two tensor scale 2^y_ts_exp) is given exactly for an nvfp4 result")
    if qfmt == mx_quantize.QFMT_M2XFP and lanes % mx_quantize.M2X_SUBGROUP:
        raise ValueError(f"an m2xfp4_a result needs a multiple of {mx_quantize.M2X_SUBGROUP} lanes (its metadata "
                         f"is per subgroup of {mx_quantize.M2X_SUBGROUP}), got {lanes}")
    del shape
    return {}, sv_params(lanes, fx.block_size, fx.element, fy.element, el_out, pipe, qfmt, y_ts_exp or 0), f"mx_{op}"


def _example(label, lanes, ex, ey, eo, pipe=None):
    return {"label": label + ("" if pipe is None else f" PIPE{pipe}"), "ctx": {},
            "params": sv_params(lanes, 32, ex, ey, eo, pipe)}


def _examples():
    from masec.formats.element import FP4_E2M1, FP8_E4M3, INT8
    cfgs = (("mxint8+mxint8->mxint8 P4", 4, INT8, INT8, INT8),
            ("mxfp8+mxint8->mxfp8 P8", 8, FP8_E4M3, INT8, FP8_E4M3),
            ("mxfp4+mxfp4->mxfp4 P32", 32, FP4_E2M1, FP4_E2M1, FP4_E2M1))
    # the same configurations at PIPE 0 (slow clocks) and at MAX_PIPE (a 3 ns clock)
    return tuple(_example(*c) for c in cfgs) + tuple(_example(*c, pipe=MAX_PIPE) for c in cfgs)


def _seed_mul_examples():
    """mx_mul with a seed activation result (mxint8 operands, P8): nvfp4 (block 16, 2^-4), m2xfp4_a, anda4."""
    from masec.formats.element import FP4_E2M1, INT8, int_element

    out = (("nvfp4", 16, FP4_E2M1, mx_quantize.QFMT_NVFP4), ("m2xfp4_a", 32, FP4_E2M1, mx_quantize.QFMT_M2XFP),
           ("anda4", 32, int_element(5), mx_quantize.QFMT_ANDA))
    return tuple({"label": f"mxint8*mxint8->{name} P8", "ctx": {},
                  "params": sv_params(8, b, INT8, INT8, el, None, q, -4)} for name, b, el, q in out)


_COMMON_PARAMS = (
    ParamSpec("P", "lanes per beat; divides B", 4),
    ParamSpec("B", "MX block size", 32),
    ParamSpec("X_IS_INT", "operand x element: 1 int, 0 fp", 1),
    ParamSpec("X_BITS", "operand x code width", 8),
    ParamSpec("X_MBITS", "operand x fraction bits", 6),
    ParamSpec("X_BIAS", "operand x exponent bias (0 for int)", 0),
    ParamSpec("Y_IS_INT", "operand y element: 1 int, 0 fp", 1),
    ParamSpec("Y_BITS", "operand y code width", 8),
    ParamSpec("Y_MBITS", "operand y fraction bits", 6),
    ParamSpec("Y_BIAS", "operand y exponent bias (0 for int)", 0),
    ParamSpec("OUT_IS_INT", "result element: 1 int, 0 fp", 1),
    ParamSpec("OUT_BITS", "result code width", 8),
    ParamSpec("OUT_MBITS", "result fraction bits", 6),
    ParamSpec("OUT_BIAS", "result emin = 1 - OUT_BIAS (fp: bias, int: 1)", 1),
    ParamSpec("OUT_EMAX", "result top binade exponent (int: 0)", 0),
    ParamSpec("OUT_MAX_CODE", "result largest finite magnitude code", 127),
    ParamSpec("OUT_QFMT", "result format, mx_quantize's QFMT: 0 MX, 1 M2XFP activations (P/4 metadata bits "
              "above the codes; P a multiple of 8), 2 NVFP4, 3 Anda", 0),
    ParamSpec("OUT_TS_EXP", "NVFP4 result: tensor scale 2^OUT_TS_EXP", 0),
    ParamSpec("PIPE", "pipeline depth 0..3 (own cuts + mx_quantize's; latency in extra['latency'])", 0),
)
_PORTS = (PortSpec("s_x", "in", "mx", "operand x: P lanes of X_BITS-bit codes + E8M0 scale"),
          PortSpec("s_y", "in", "mx", "operand y (same shape/lanes; consumed in lockstep with x)"),
          PortSpec("m_z", "out", "mx", "result: P lanes of OUT_BITS-bit codes + scale byte (E8M0; UE4M3 for "
                   "NVFP4, S for Anda); M2XFP metadata above the codes"))

SPECS = (
    KernelSpec(
        name="mx_elem_decode",
        template="mx_elem_decode.sv.j2",
        doc="Combinational decode of one MX element code to an exact signed significand and exponent.",
        params=(ParamSpec("IS_INT", "1 int element, 0 fp", 1), ParamSpec("BITS", "code width", 8),
                ParamSpec("MBITS", "fraction bits", 6), ParamSpec("BIAS", "fp exponent bias", 1),
                ParamSpec("SW", "signed width of sig_o", 9)),
        ports=(),
        model=f"{__name__}:decode_sig_exp",
        examples=({"label": "int8", "ctx": {}, "params": {"IS_INT": 1, "BITS": 8, "MBITS": 6, "BIAS": 0, "SW": 9}},
                  {"label": "fp8_e4m3", "ctx": {}, "params": {"IS_INT": 0, "BITS": 8, "MBITS": 3, "BIAS": 7, "SW": 5}},
                  {"label": "fp4_e2m1", "ctx": {}, "params": {"IS_INT": 0, "BITS": 4, "MBITS": 1, "BIAS": 1, "SW": 3}}),
    ),
    KernelSpec(
        name="mx_add",
        template="mx_add.sv.j2",
        doc="Element-wise x + y of two MX streams (lockstep), exact alignment up to OUT_MBITS + W + 1 "
            "bits then a sticky addend, through mx_quantize to the output format. 1 beat/cycle.",
        params=_COMMON_PARAMS,
        ports=_PORTS,
        deps=("mx_elem_decode", "mx_quantize"),
        ops=("add",),
        model=f"{__name__}:add_model",
        examples=_examples(),
        extra={"latency": add_latency, "max_pipe": MAX_PIPE},
    ),
    KernelSpec(
        name="mx_mul",
        template="mx_mul.sv.j2",
        doc="Element-wise x * y of two MX streams (lockstep), exact product through mx_quantize to the "
            "output format. 1 beat/cycle.",
        params=_COMMON_PARAMS,
        ports=_PORTS,
        deps=("mx_elem_decode", "mx_quantize"),
        ops=("mul",),
        model=f"{__name__}:mul_model",
        examples=_examples() + _seed_mul_examples(),
        extra={"latency": mul_latency, "max_pipe": MAX_PIPE},
    ),
)
