"""The per-kernel cost model: LUT, FF, DSP and BRAM of a kernel configuration without Yosys.

Pure Python and fast (microseconds per call), for passes that size the design (folding: lanes
per node under a resource budget) and for the report. Per kernel:

* **LUT, FF**: a small linear model ``sum(c_i * f_i)`` in meaningful features of the kernel's SV
  parameters (lanes, element bits, lanes x element bits, dimensions, memory bits; see
  :func:`features`), fitted by least squares to Yosys ``synth_xilinx`` results by
  ``bench/cost_model.py``; the coefficients ship as ``cost_model.json`` beside this module.
* **DSP**: counted from the RTL's multipliers (:func:`dsp`): the products Yosys maps to DSP48
  slices (both operands at least 2 bits and the product at least 9 bits, ``synth_xilinx``'s
  ``mul2dsp`` limits), one slice per product up to 27x18 bits.
* **BRAM**: the RTL's memories (:func:`memories`) tiled onto RAMB36/RAMB18 shapes the way Yosys'
  ``memory_libmap`` does (:func:`bram_tiles`); a memory too small for block RAM costs none.

The held-out error of the fit (LUT, FF) and the exact-match rate of DSP and BRAM are in
``docs/cost_model.md``.

    estimate("mx_add", {"P": 8, "B": 32, "X_BITS": 8, ...})   # {"LUT": 3805, "FF": 320, "DSP": 0, "BRAM": 0, ...}
    estimate_design(ir)["total"]                             # {"LUT": ..., "FF": ..., "DSP": ..., "BRAM": ...}
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from masec.errors import MasecError

RESOURCES = ("LUT", "FF", "DSP", "BRAM")
FIT_FILE = Path(__file__).with_name("cost_model.json")
#: Kernels that share one fitted model (same RTL skeleton, a different function table).
MODEL_GROUP = {"mx_gelu": "mx_act", "mx_silu": "mx_act", "mx_gelu_tanh": "mx_act"}
_PORTS = ("input", "output")
_fit_override: dict | None = None


# ---------------------------------------------------------------------------------------------
# Parameters -> features

def _i(params: dict, key: str, default: int = 0) -> int:
    v = params.get(key, default)
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _fp(params: dict, prefix: str) -> int:
    """1 when the element ``prefix`` (X_, W_, ...) is a float format."""
    return 0 if _i(params, prefix + "IS_INT", 1) else 1


def _sig(params: dict, prefix: str) -> int:
    """Significand bits of an element: int codes are their own significand; fp: mbits + hidden bit + sign."""
    bits = _i(params, prefix + "BITS", 8)
    return bits if _i(params, prefix + "IS_INT", 1) else _i(params, prefix + "MBITS", 3) + 2


def _prod_bits(params: dict, prefix: str) -> int:
    """An operand's share of the exact product's width (mx_matmul's PW): int bits, or fp significand
    + 2^ebits - 2 (the exponent range folded into the fixed-point product)."""
    if _i(params, prefix + "IS_INT", 1):
        return _i(params, prefix + "BITS", 8)
    e = _i(params, prefix + "BITS", 8) - 1 - _i(params, prefix + "MBITS", 3)
    return _i(params, prefix + "MBITS", 3) + 2 + (1 << e) - 2


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def _matmul_view(params: dict) -> dict:
    """``mx_matmul``'s parameters with each seed operand (``AFMT``/``BFMT``) as the element its
    products read after ``mx_act_decode``: M2XFP (1) an int7 lane, NVFP4 (2) the E2M1 significand
    times the 4-bit scale significand (4 bits wider); MX and Anda (3) as streamed."""
    p = dict(params)
    for side in ("A", "B"):
        fmt = _i(p, f"{side}FMT")
        if fmt == 1:
            p.update({f"{side}_IS_INT": 1, f"{side}_BITS": 7})
        elif fmt == 2:
            p.update({f"{side}_BITS": _i(p, f"{side}_BITS", 8) + 4, f"{side}_MBITS": _i(p, f"{side}_MBITS", 3) + 4})
    return p


def _matmul_word(params: dict, side: str) -> int:
    """Bits of one stored A-buffer / B-RAM word: the decoded lanes, the block exponent (E8M0, or 12
    bits for a seed operand) and NVFP4's 4-bit scale significand."""
    fmt = _i(params, f"{side}FMT")
    lanes = _i(params, f"P_{side}", 1) * (7 if fmt == 1 else _i(params, f"{side}_BITS", 8))
    return lanes + (12 if fmt else 8) + (4 if fmt == 2 else 0)


def features(kernel: str, params: dict) -> dict[str, float]:
    """The features of the LUT/FF model of ``kernel`` at SV parameters ``params`` (constant first)."""
    k, p = kernel, params
    if k == "mx_linear":
        macs = _i(p, "P_IN", 1) * _i(p, "P_OUT", 1)
        fp = max(_fp(p, "X_"), _fp(p, "W_"))
        lmul = _i(p, "LMUL")
        rom_logic = sum(w * d for w, d, rom in memories(k, p) if bram_tiles(w, d, rom) == 0)
        return {"1": 1.0, "macs": macs, "macs_sigbits": macs * (_sig(p, "X_") + _sig(p, "W_")) * (1 - lmul),
                "macs_fp": macs * fp, "macs_lmul": macs * lmul, "p_out": _i(p, "P_OUT", 1),
                "p_y_outbits": _i(p, "P_Y", _i(p, "P_OUT", 1)) * _i(p, "Y_BITS", 8),
                "rom_logic_kbit": rom_logic / 1024.0,
                "p_out_prodbits": _i(p, "P_OUT", 1) * (_prod_bits(p, "X_") + _prod_bits(p, "W_"))}
    if k == "mx_matmul":
        p = _matmul_view(p)
        pn = _i(p, "P_N", 1)
        fp = max(_fp(p, "A_"), _fp(p, "B_"))
        return {"1": 1.0, "p_n": pn, "p_n_prodbits": pn * (_prod_bits(p, "A_") + _prod_bits(p, "B_")),
                "p_n_fp": pn * fp}
    if k in ("mx_add", "mx_mul"):
        lanes = _i(p, "P", 1)
        nfp = _fp(p, "X_") + _fp(p, "Y_") + _fp(p, "OUT_")
        return {"1": 1.0, "p": lanes, "p_bits": lanes * (_i(p, "X_BITS", 8) + _i(p, "Y_BITS", 8) + _i(p, "OUT_BITS", 8)),
                "p_fp": lanes * nfp}
    if MODEL_GROUP.get(k) == "mx_act":
        lanes = _i(p, "P", 1)
        return {"1": 1.0, "p": lanes, "p_bits": lanes * (_i(p, "X_BITS", 8) + _i(p, "OUT_BITS", 8)),
                "p_fp": lanes * (_fp(p, "X_") + _fp(p, "OUT_"))}
    if k in ("mx_rmsnorm", "mx_layernorm"):
        lanes = _i(p, "P", 1)
        return {"1": 1.0, "p": lanes, "p_bits": lanes * (_i(p, "X_BITS", 8) + _i(p, "Y_BITS", 8)),
                "blocks": _cdiv(_i(p, "N", 64), _i(p, "B", 32))}
    if k == "mx_softmax":
        lanes = _i(p, "P", 1)
        return {"1": 1.0, "p": lanes, "p_fp": lanes * (_fp(p, "X_") + _fp(p, "Y_")),
                "n_kbit": _i(p, "N", 64) * 32 / 1024.0}
    if k == "mx_rope":
        lanes = _i(p, "P", 1)
        return {"1": 1.0, "p": lanes, "p_bits": lanes * (_i(p, "IN_BITS", 8) + _i(p, "OUT_BITS", 8)),
                "p_fp": lanes * (_fp(p, "IN_") + _fp(p, "OUT_"))}
    if k == "mx_embedding":
        return {"1": 1.0, "beat_bits": _i(p, "P", 1) * _i(p, "W", 8),
                "addr_bits": math.log2(max(2, _embedding_depth(p)))}
    if k == "mx_cast":
        lanes = _i(p, "P", 1)
        return {"1": 1.0, "p": lanes, "p_fp_in": lanes * _fp(p, "IN_"), "p_fp_out": lanes * _fp(p, "OUT_"),
                "p_bits": lanes * (_i(p, "IN_BITS", 8) + _i(p, "OUT_BITS", 8))}
    if k == "mx_quantize":
        lanes = _i(p, "P", 1)
        return {"1": 1.0, "p": lanes, "p_fp": lanes * _fp(p, "ELEM_"), "p_bits": lanes * _i(p, "ELEM_BITS", 8)}
    if k == "mx_retile":
        w, pi, po = _i(p, "W", 8), _i(p, "P_IN", 1), _i(p, "P_OUT", 1)
        return {"1": 1.0, "wide_bits": max(pi, po) * w, "sum_bits": (pi + po) * w,
                "up_bits": po * w * math.log2(po / pi) if po > pi else 0.0}
    if k == "mx_relu":
        return {"1": 1.0, "bits": _i(p, "P", 1) * _i(p, "W", 8)}
    if k == "stream_fifo":
        w, d, ram = _i(p, "WIDTH", 8), _i(p, "DEPTH", 2), _i(p, "RAM_STYLE")
        reg = d <= 2 and not ram
        return {"1": 1.0, "reg_bits": w if reg else 0, "lutram_bits": 0 if (reg or ram) else w * d / 64.0,
                "addr": 0 if reg else math.log2(max(2, d)), "bram": 1.0 if ram else 0.0,
                "bram_out_bits": w if ram else 0}
    if k == "stream_fork":
        return {"1": 1.0, "n": _i(p, "N_OUTPUTS", 2)}
    if k == "stream_reorder":
        return {"1": 1.0, "addr": math.log2(max(2, 2 * _i(p, "N_IN", 1) * _i(p, "UNIT_BEATS", 1))),
                "idx": _i(p, "N_OUT", 1) * math.log2(max(2, _i(p, "N_IN", 1))) / 64.0}
    if k == "stream_rom":
        w, d = _i(p, "WIDTH", 8), _i(p, "DEPTH", 1)
        in_bram = bram_tiles(w, d, True) > 0
        return {"1": 1.0, "logic_kbit": 0.0 if in_bram else w * d / 1024.0, "addr": math.log2(max(2, d))}
    raise MasecError(f"no cost model for kernel {kernel!r}; known: {', '.join(sorted(KNOWN))}")


#: Per model group, the feature whose width the pipeline registers of ``PIPE`` scale with (the first
#: one present; else lanes): products for the linear and matmul, lanes x element bits elsewhere.
PIPE_WIDTH = {"mx_linear": ("macs_sigbits", "macs"), "mx_matmul": ("p_n_prodbits",), "mx_add": ("p_bits",),
              "mx_mul": ("p_bits",), "mx_act": ("p_bits",), "mx_rmsnorm": ("p_bits",), "mx_layernorm": ("p_bits",),
              "mx_softmax": ("p",), "mx_rope": ("p_bits",), "mx_cast": ("p_bits",), "mx_quantize": ("p_bits",),
              "mx_retile": ("sum_bits",), "mx_relu": ("bits",), "mx_embedding": ("beat_bits",)}


def pipe_features(kernel: str, params: dict) -> dict[str, float]:
    """Features of the pipeline's cost over ``PIPE = 0``: ``PIPE`` and ``PIPE`` x the kernel's datapath
    width (:data:`PIPE_WIDTH`). Both are 0 at ``PIPE = 0`` (the base model's regime)."""
    pipe = _i(params, "PIPE")
    if not pipe:
        return {"pipe": 0.0, "pipe_w": 0.0}
    f = features(kernel, params)
    keys = PIPE_WIDTH.get(MODEL_GROUP.get(kernel, kernel), ())
    width = next((f[k] for k in keys if f.get(k)),
                 float(_i(params, "P", _i(params, "P_OUT", 1)) * _i(params, "W", _i(params, "WIDTH", 1))))
    return {"pipe": float(pipe), "pipe_w": pipe * float(width)}


KNOWN = ("mx_linear", "mx_matmul", "mx_add", "mx_mul", "mx_gelu", "mx_silu", "mx_gelu_tanh", "mx_rmsnorm",
         "mx_layernorm", "mx_softmax", "mx_rope", "mx_embedding", "mx_cast", "mx_quantize", "mx_retile", "mx_relu",
         "stream_fifo", "stream_fork", "stream_reorder", "stream_rom")


# ---------------------------------------------------------------------------------------------
# DSP: products mapped to DSP48 slices

def _mul_dsp(a_bits: int, b_bits: int) -> int:
    """DSP48 slices of one signed a x b product under synth_xilinx (mul2dsp: A <= 27, B <= 18 per
    slice; operands below 2 bits or products below 9 bits stay in LUTs)."""
    a, b = max(a_bits, b_bits), min(a_bits, b_bits)
    if b < 2 or a + b < 9:
        return 0
    return _cdiv(a, 27) * _cdiv(b, 18) if a > 27 or b > 18 else 1


def _not_pow2(v: int) -> int:
    return int(v > 0 and v & (v - 1) != 0)


def _linear_view(params: dict) -> dict:
    """``mx_linear``'s parameters with x and W as the elements its products read: an M2XFP x
    (``XFMT`` 1) decoded to int7 lanes, a BitMoD W (``WFMT`` 3) to a 6- (fp4) or 4-bit (fp3) int."""
    p = dict(params)
    if _i(p, "XFMT") == 1:
        p.update({"X_IS_INT": 1, "X_BITS": 7})
    if _i(p, "WFMT") == 3:
        p.update({"W_IS_INT": 1, "W_BITS": 6 if _i(p, "W_BITS", 8) == 4 else 4})
    return p


def _linear_dsp(p: dict) -> int:
    """``mx_linear``'s DSP48s, from the widths of its RTL (``mx_linear.sv.j2``'s localparams): P_IN x P_OUT
    products of the decoded x and W significands (:func:`_linear_view`); per output lane the block sum
    times the block-scale significand(s) (NVFP4 W: 4 bits, BitMoD: 11, NVFP4 x: 4) and, with an NVFP4 W,
    the accumulator times the 24-bit FP32 tensor-scale significand.
    Checked against Yosys on bench/seed_formats_hw.py's twelve 64x64 configurations."""
    v = _linear_view(p)
    nvf, bmd, xnv = _i(p, "WFMT") == 2, _i(p, "WFMT") == 3, _i(p, "XFMT") == 2
    macs = _i(p, "P_IN", 1) * _i(p, "P_OUT", 1) * _mul_dsp(_sig(v, "X_"), _sig(v, "W_"))
    ssw = (4 if nvf else 11 if bmd else 0) + (4 if xnv else 0)
    per_out = 1 if ssw else 0          # the block-scale product: one DSP48 after Yosys' width reduction
    if nvf:                            # (AW + 25)-bit accumulator x 25-bit tensor-scale significand
        aw = (_prod_bits(v, "X_") + _prod_bits(v, "W_") + int(math.log2(max(_i(p, "B", 32), 1))) + ssw
              + _i(p, "ACC_GUARD", 4) + 1)
        per_out += _mul_dsp(aw + 25, 25)
    return macs + _i(p, "P_OUT", 1) * per_out


def dsp(kernel: str, params: dict) -> int:
    """DSP48 slices of ``kernel`` at ``params``, counted from the multipliers of its RTL."""
    k, p = kernel, params
    lanes = _i(p, "P", 1)
    if k == "mx_linear":   # one x*w product per MAC (L-Mul: adders only), seed formats: see _linear_dsp
        if _i(p, "LMUL"):
            return 0
        return _linear_dsp(p)
    if k == "mx_matmul":   # P_N MACs (seed operands: the decoded significands)
        p = _matmul_view(p)
        return _i(p, "P_N", 1) * _mul_dsp(_sig(p, "A_"), _sig(p, "B_"))
    if k == "mx_mul":      # one significand product per lane
        return lanes * _mul_dsp(_sig(p, "X_"), _sig(p, "Y_"))
    if MODEL_GROUP.get(k) == "mx_act":   # per lane: the table interpolation product (one DSP48 each on
        return lanes                      # every configuration of the calibration sweep)
    if k == "mx_rope":     # per pair of lanes: x*cos, x*sin for both elements
        return 2 * lanes
    if k == "mx_softmax":  # per lane: u = s*x*log2(e), exp2 and the normalizing product; 2 per row
        return 5 * lanes + 2
    if k == "mx_rmsnorm":  # per lane: x^2 and the two output products; 6 in the rsqrt; sqrt(N) unless a power of 2
        return 3 * lanes + 6 + _not_pow2(_i(p, "SQN_M"))
    if k == "mx_layernorm":  # per lane also the mean products and beta
        return 7 * lanes + 8 + _not_pow2(_i(p, "SQN_M"))
    return 0


# ---------------------------------------------------------------------------------------------
# BRAM: memories tiled onto RAMB36 / RAMB18

#: (depth, width) shapes of a RAMB36 and a RAMB18 in simple dual-port mode (UG573).
RAMB36_SHAPES = ((512, 72), (1024, 36), (2048, 18), (4096, 9), (8192, 4), (16384, 2), (32768, 1))
RAMB18_SHAPES = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))
#: ROMs below this many bits stay in logic, RAMs of at most RAM_MIN_BITS in LUT-RAM (Yosys' libmap
#: on the calibration sweep: a 24 x 128 RAM maps to a RAMB18, a 16 x 128 one to LUT-RAM).
BRAM_MIN_BITS = 4096
RAM_MIN_BITS = 2048


def bram_tiles(width: int, depth: int, rom: bool = False) -> float:
    """36 Kb block RAMs for a ``width`` x ``depth`` memory: the cheapest column split onto RAMB36
    shapes, the narrow rest of the width on a RAMB18 (0.5) when that is cheaper. A RAM of at most 64
    words or 2 Kb, and a ROM of fewer than 512 words or under 4 Kb, stay in LUT-RAM or logic (as Yosys
    maps them)."""
    bits = width * depth
    if width <= 0 or depth <= 64 or bits <= RAM_MIN_BITS or (rom and (depth < 512 or bits < BRAM_MIN_BITS)):
        return 0.0
    best = math.inf
    for d36, w36 in RAMB36_SHAPES:
        rows = _cdiv(depth, d36)
        full, rest = divmod(width, w36)
        cost = rows * full
        if rest:
            half = min((_cdiv(depth, d18) * _cdiv(rest, w18) * 0.5 for d18, w18 in RAMB18_SHAPES), default=math.inf)
            cost += min(rows * _cdiv(rest, w36), half)
        best = min(best, cost)
    return float(best)


def _embedding_depth(p: dict) -> int:
    b = _i(p, "B", 32)
    return _i(p, "VOCAB", 1) * _cdiv(_i(p, "DIM", 1), b) * (b // max(_i(p, "P", 1), 1))


def _act_table(func: str, frac_bits: int) -> tuple[int, int]:
    """(width, depth) of the function table an activation kernel holds per lane: one word
    ``{hm (G bits), hs (8 bits)}`` per input binade k in [K_LO, K_HI] and fraction j < 2^frac_bits."""
    from masec.hw_templates.kernels.mx_act import DEFAULT_G, K_HI, k_lo

    return DEFAULT_G + 8, (K_HI[func] - k_lo(DEFAULT_G) + 1) << frac_bits


def memories(kernel: str, params: dict) -> list[tuple[int, int, bool]]:
    """(width, depth, is_rom) of every memory of ``kernel``'s RTL that may become block RAM (per copy)."""
    k, p = kernel, params
    if k == "stream_fifo":
        return [(_i(p, "WIDTH"), _i(p, "DEPTH"), False)] if _i(p, "RAM_STYLE") else []
    if k == "stream_reorder":  # double buffer of whole tensors
        return [(_i(p, "WIDTH"), 2 * _i(p, "N_IN") * _i(p, "UNIT_BEATS", 1), False)]
    if k == "stream_rom":
        return [(_i(p, "WIDTH"), _i(p, "DEPTH"), True)]
    if k == "mx_embedding":    # one word per beat: P codes + the block scale
        return [(_i(p, "P", 1) * _i(p, "W", 8) + 8, _embedding_depth(p), True)]
    if k == "mx_rope":         # one word per beat: P/2 (cos, sin) pairs
        lanes = _i(p, "P", 1)
        return [(max(lanes // 2, 1) * 2 * _i(p, "CS_W", 16), _i(p, "MAX_POS", 1) * _i(p, "HEAD_DIM", 2) // lanes, True)]
    if k == "mx_matmul":       # the B RAM (TRANS_B: one bank per output lane) and the A row buffer
        pb, bb = _i(p, "P_B", 1), _i(p, "BB", 32)
        bwd = _matmul_word(p, "B")
        n, kk = _i(p, "N", 1), _i(p, "K", 1)
        nab = _cdiv(kk, _i(p, "BA", 32)) * _i(p, "BA", 32) // max(_i(p, "P_A", 1), 1)
        abuf = (_matmul_word(p, "A"), 2 << max(1, math.ceil(math.log2(max(nab, 1)))), False)
        if _i(p, "TRANS_B"):
            npn, nkb = _cdiv(n, _i(p, "P_N", 1)), _cdiv(kk, bb) * bb // pb
            return [abuf] + [(bwd, npn * nkb, False)] * _i(p, "P_N", 1)
        return [abuf, (bwd, kk * (_cdiv(n, bb) * bb // pb), False)]
    if k == "mx_linear":       # W_MEM: P_OUT x P_IN codes per word; WS_MEM: P_OUT scales per word
        p_in, p_out = _i(p, "P_IN", 1), _i(p, "P_OUT", 1)
        passes = _cdiv(_i(p, "OUT", 1), p_out)
        return [(p_out * p_in * _i(p, "W_BITS", 8), passes * _cdiv(_i(p, "IN", 1), p_in), True),
                (p_out * 8, passes * _cdiv(_i(p, "IN", 1), _i(p, "B", 32)), True)]
    if MODEL_GROUP.get(k) == "mx_act":  # one function table per lane
        w, d = _act_table(k[3:], _i(p, "X_MBITS", 3))
        return [(w, d, True)] * _i(p, "P", 1)
    return []


def bram(kernel: str, params: dict) -> float:
    """36 Kb block RAMs of ``kernel`` at ``params``: its memories tiled as :func:`bram_tiles`."""
    return float(sum(bram_tiles(w, d, rom) for w, d, rom in memories(kernel, params)))


# ---------------------------------------------------------------------------------------------
# The fit and the estimates

def load_fit() -> dict:
    """The shipped fit (``cost_model.json``), or the one :func:`set_fit` installed."""
    return _fit()


def set_fit(doc: dict | None) -> None:
    """Use ``doc`` instead of the shipped fit (``bench/cost_model.py`` while refitting); None restores it."""
    global _fit_override
    _fit_override = doc
    _estimate_cached.cache_clear()


@lru_cache(maxsize=1)
def _shipped() -> dict:
    try:
        return json.loads(FIT_FILE.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _fit() -> dict:
    return _fit_override if _fit_override is not None else _shipped()


def _num(v: float):
    return int(v) if float(v).is_integer() else v


def estimate(kernel: str, params: dict, n_outputs: int | None = None) -> dict:
    """LUT, FF, DSP, BRAM (36 Kb units) of one ``kernel`` instance with SV parameters ``params``.

    ``n_outputs`` is a fork's output count (a Jinja parameter of ``stream_fork``, not an SV one).
    Ports (``input``/``output``) cost nothing; an unknown kernel raises :class:`MasecError`.
    """
    if kernel in _PORTS:
        return {"LUT": 0, "FF": 0, "DSP": 0, "BRAM": 0}
    key = tuple(sorted((k, v) for k, v in params.items() if isinstance(v, (int, str, float, bool))))
    return dict(_estimate_cached(kernel, key, n_outputs))


@lru_cache(maxsize=4096)
def _estimate_cached(kernel: str, key: tuple, n_outputs: int | None) -> tuple:
    params = dict(key)
    if n_outputs is not None:
        params["N_OUTPUTS"] = n_outputs
    f = features(kernel, params)
    group = _fit().get("groups", {}).get(MODEL_GROUP.get(kernel, kernel))
    if group is None:
        raise MasecError(f"the cost model has no fit for kernel {kernel!r}; run `python bench/cost_model.py "
                         f"--kernel {kernel}`")
    pipe = group.get("pipe")   # the pipeline's cost over PIPE 0 (bench/cost_model_pipe.py), when fitted
    pf = pipe_features(kernel, params) if pipe else {}
    out = {}
    for res in ("LUT", "FF"):
        val = sum(c * f.get(n, 0.0) for c, n in zip(group[res], group["features"]))
        if pipe:
            val += sum(c * pf.get(n, 0.0) for c, n in zip(pipe[res], pipe["features"]))
        out[res] = max(0, int(round(val)))
    out["DSP"] = dsp(kernel, params)
    out["BRAM"] = _num(bram(kernel, params))
    return tuple(out.items())


def estimate_instance(inst) -> dict:
    """:func:`estimate` of a hardware-IR instance (``masec.hwir.Instance``), plus its ideal cycles."""
    if inst.is_port:
        return {"LUT": 0, "FF": 0, "DSP": 0, "BRAM": 0, "cycles": 0}
    n_out = len(inst.out_ports) if inst.kernel == "stream_fork" else None
    return {**estimate(inst.kernel, inst.params, n_out), "cycles": inst.ideal_cycles}


def fifo_params(edge, bus_bits: int | None = None) -> dict:
    """The SV parameters of the ``stream_fifo`` on an IR edge (as ``masec.design`` instantiates it)."""
    width = bus_bits if bus_bits is not None else edge.type.bus_bits
    return {"WIDTH": width, "DEPTH": edge.depth, "RAM_STYLE": edge.ram_style,
            **({"PIPE": edge.pipe} if edge.pipe else {})}


def edge_estimates(ir) -> dict:
    """The estimate of the FIFO on every IR edge (``fifo_eK``) and of its register slices
    (``slice_in_eK`` / ``slice_out_eK``, estimated as the two-entry register FIFO they are built like:
    two W-bit registers and a W-bit mux)."""
    out = {}
    for k, e in enumerate(ir.edges):
        out[f"fifo_e{k}"] = {**estimate("stream_fifo", fifo_params(e)), "cycles": 0}
        for side in (s for s in ("in", "out") if getattr(e, f"slice_{s}")):
            out[f"slice_{side}_e{k}"] = {**estimate("stream_fifo", {"WIDTH": e.type.bus_bits, "DEPTH": 2}),
                                         "cycles": 0}
    return out


def estimate_design(ir) -> dict:
    """Per instance (kernel instances, the FIFO on every edge and its register slices) and the total."""
    nodes = {}
    total = dict.fromkeys(RESOURCES, 0)
    for inst in ir.instances.values():
        if inst.is_port:
            continue
        nodes[inst.name] = estimate_instance(inst)
    nodes.update(edge_estimates(ir))
    for est in nodes.values():
        for r in RESOURCES:
            total[r] += est[r]
    return {"total": {r: _num(v) for r, v in total.items()}, "nodes": nodes}
