"""Stream reorder (corner turn): a tensor of units in, the same units in another order out.

A tensor arrives as ``n_in`` *units* of ``unit_beats`` beats (a unit is one row of the last axis,
i.e. whole MX blocks) and leaves as ``len(idx)`` units: output unit ``j`` is a copy of input unit
``idx[j]``. Repeats are allowed (grouped-query attention reads one K/V head several times, it is
stored once) and input units may go unused. The buffer is double-buffered block RAM, so tensor
``t+1`` is written while tensor ``t`` is read out (1 beat/cycle when ``len(idx) == n_in``).

Uses by the compiler (``idx`` from the helpers below; the unit is the last axis)::

    [T, H, D] -> [H, T, D]          transpose_index(T, H)
    [B, T, H, D] -> [B, H, T, D]    permute_index((B, T, H), (0, 2, 1))
    GQA K [T, Hkv, D] -> [H, T, D]  permute_index((T, Hkv), (1, 0), repeat=(1, H // Hkv))

    (out / "reorder.mem").write_text(index_mem_text(idx, n_in))
    ctx, params, module = instance_config(width, unit_beats, n_in, idx, mem_file="reorder.mem")
    out_beats = model(in_beats, unit_beats, idx, n_in)

Bit-exact model: :func:`model` (beats are opaque integers or lists, copied unchanged).

Pipelining: at ``PIPE = 1`` no block RAM output drives logic: the IDX ROM runs two units ahead
and its word is copied into a plain register before the address adder (at ``PIPE = 0`` a long IDX
in block RAM fed the adder and the data RAM's address, 100.6 MHz on ECP5), and a plain output
register follows the data RAM's read register. Same beats, 1 beat/cycle (also across tensors:
the RAM is still read in the cycle its address is issued), latency + :func:`latency` = 1 cycle
(docs/kernels/stream_reorder.md).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from masec.hw_templates.manifest import KernelSpec, ParamSpec, PortSpec
from masec.passes.hw.pipeline import check_pipe


# ---- index helpers --------------------------------------------------------------------------

def permute_index(shape: Sequence[int], perm: Sequence[int],
                  repeat: tuple[int, int] | None = None) -> list[int]:
    """IDX that permutes a grid of units of shape ``shape`` (row-major) into axis order ``perm``.

    Equal to ``torch.arange(prod(shape)).reshape(shape).repeat_interleave(f, dim=a).permute(perm)
    .flatten()`` with ``repeat = (a, f)`` (``a`` an axis of ``shape``, may be negative): the input
    axis ``a`` is repeated-interleaved ``f`` times before the permutation, so every unit along it
    is read ``f`` times in a row (grouped-query attention: one K/V head serves ``f`` query heads).
    Without ``repeat`` it is ``arange(...).reshape(shape).permute(perm).flatten()``.
    """
    shape = tuple(int(s) for s in shape)
    perm = tuple(int(p) for p in perm)
    nd = len(shape)
    if nd < 1 or any(s < 1 for s in shape):
        raise ValueError(f"permute_index: shape {shape} must have at least one axis, all >= 1")
    perm = tuple(p + nd if p < 0 else p for p in perm)
    if sorted(perm) != list(range(nd)):
        raise ValueError(f"permute_index: perm {perm} is not a permutation of the {nd} axes of {shape}")
    rep_axis, factor = -1, 1
    if repeat is not None:
        rep_axis, factor = int(repeat[0]), int(repeat[1])
        if rep_axis < 0:
            rep_axis += nd
        if not 0 <= rep_axis < nd or factor < 1:
            raise ValueError(f"permute_index: repeat {repeat} needs an axis of {shape} and a factor >= 1")
    out_shape = [shape[p] * (factor if p == rep_axis else 1) for p in perm]
    strides = [math.prod(shape[a + 1:]) for a in range(nd)]
    idx = []
    for pos in _row_major(out_shape):
        flat = 0
        for k, p in enumerate(perm):
            i = pos[k] // factor if p == rep_axis else pos[k]
            flat += i * strides[p]
        idx.append(flat)
    return idx


def transpose_index(outer: int, inner: int) -> list[int]:
    """IDX of a corner turn: input unit order ``(i, j)`` (``i < outer``, ``j < inner``, ``j`` fastest)
    -> output order ``(j, i)``, e.g. ``[T, H, D] -> [H, T, D]`` is ``transpose_index(T, H)``."""
    return permute_index((outer, inner), (1, 0))


def _row_major(shape):
    if not shape:
        yield ()
        return
    for i in range(shape[0]):
        for rest in _row_major(shape[1:]):
            yield (i, *rest)


def _check_idx(idx, n_in: int) -> list[int]:
    idx = [int(i) for i in idx]
    if n_in < 1:
        raise ValueError(f"stream_reorder needs n_in >= 1, got {n_in}")
    if not idx:
        raise ValueError("stream_reorder needs at least one output unit (idx is empty)")
    bad = [(j, i) for j, i in enumerate(idx) if not 0 <= i < n_in]
    if bad:
        j, i = bad[0]
        raise ValueError(f"stream_reorder: idx[{j}] = {i} is not an input unit (n_in {n_in})")
    return idx


# ---- model ----------------------------------------------------------------------------------

def model(beats: list, unit_beats: int, idx: Sequence[int], n_in: int | None = None) -> list:
    """Bit-exact model: the output beats for the input ``beats``.

    ``beats`` is one tensor (``n_in`` omitted: ``n_in = len(beats) / unit_beats``) or several
    tensors of ``n_in * unit_beats`` beats back to back; each tensor's output unit ``j`` is its input
    unit ``idx[j]``. Beats are copied unchanged (any value: int, list, ...).
    """
    if unit_beats < 1:
        raise ValueError(f"stream_reorder needs unit_beats >= 1, got {unit_beats}")
    if n_in is None:
        if not beats or len(beats) % unit_beats:
            raise ValueError(f"{len(beats)} beats are not a whole number of {unit_beats}-beat units")
        n_in = len(beats) // unit_beats
    idx = _check_idx(idx, n_in)
    per = n_in * unit_beats
    if len(beats) % per:
        raise ValueError(f"{len(beats)} beats are not a whole number of tensors of {n_in} x {unit_beats} beats")
    out = []
    for t in range(0, len(beats), per):
        for i in idx:
            out.extend(beats[t + i * unit_beats: t + (i + 1) * unit_beats])
    return out


def index_width(n_in: int) -> int:
    """Bits of one IDX word (the ROM's word width)."""
    return max(1, (int(n_in) - 1).bit_length())


def index_mem_text(idx: Sequence[int], n_in: int) -> str:
    """``$readmemh`` image of IDX for ``IDX_MEM``: one zero-padded hex word per line, in order."""
    idx = _check_idx(idx, n_in)
    digits = -(-index_width(n_in) // 4)
    return "".join(f"{i:0{digits}x}\n" for i in idx)


def ideal_cycles(n_in: int, n_out: int, unit_beats: int, n_tensors: int = 1) -> int:
    """Lower bound on the cycles from the first input beat to the last output beat at full rate.

    The first tensor must be in before its first beat leaves (``n_in * unit_beats`` cycles); then
    each tensor takes the longer of its input and output, and the last one its output. The RTL adds
    2 cycles (the full flag and the registered RAM read), plus :func:`latency` at ``PIPE = 1``.
    """
    d_in, d_out = n_in * unit_beats, n_out * unit_beats
    return d_in + d_out + (n_tensors - 1) * max(d_in, d_out)


def instance_config(width: int, unit_beats: int, n_in: int, idx: Sequence[int], mem_file: str = ""):
    """``(jinja_ctx, sv_params, module_name)`` of a reorder of ``n_in`` units of ``unit_beats``
    ``width``-bit beats into the units ``idx``.

    ``mem_file`` is the IDX image (path as the simulator / synthesis tool will see it) written with
    :func:`index_mem_text`; the module is the same for every ``idx`` (one SV module, no Jinja context).
    """
    if width < 1 or unit_beats < 1:
        raise ValueError(f"stream_reorder needs width >= 1 and unit_beats >= 1, got {width}, {unit_beats}")
    idx = _check_idx(idx, n_in)
    params = {"WIDTH": int(width), "UNIT_BEATS": int(unit_beats), "N_IN": int(n_in), "N_OUT": len(idx),
              "IDX_MEM": str(mem_file)}
    return {}, params, "stream_reorder"


# ---- pipelining -----------------------------------------------------------------------------

#: Largest PIPE the template has cuts for: ``pipe_depth`` gives 1 for any clock faster than 100 MHz
#: (the long-IDX configuration meets 100.6 MHz at PIPE 0).
MAX_PIPE = 1


def latency(params: dict) -> int:
    """Cycles ``PIPE`` adds over ``PIPE = 0`` to every output beat: the plain output register."""
    pipe = check_pipe(params.get("PIPE", 0), MAX_PIPE, "stream_reorder")
    return pipe


# ---- manifest -------------------------------------------------------------------------------

def _example(label: str, width: int, unit_beats: int, shape, perm, repeat=None, pipe=0):
    idx = permute_index(shape, perm, repeat)
    n_in = math.prod(shape)
    _, params, _ = instance_config(width, unit_beats, n_in, idx, "idx.mem")
    if pipe:
        params["PIPE"] = pipe
    return {"label": label, "ctx": {}, "params": params,
            "files": {"idx.mem": functools.partial(index_mem_text, idx, n_in)}}


SPEC = KernelSpec(
    name="stream_reorder",
    template="stream_reorder.sv.j2",
    doc="Corner turn / reorder buffer: N_IN units of UNIT_BEATS beats in, N_OUT units out, output unit j "
        "= input unit IDX[j] ($readmemh IDX_MEM); double-buffered block RAM, 1 beat/cycle, latency one "
        "tensor + 2 + PIPE cycles (PIPE 1: no block RAM output drives logic).",
    params=(ParamSpec("WIDTH", "bits per beat ({scale, codes} for an MX stream)", 8),
            ParamSpec("UNIT_BEATS", "beats per unit (one row of the last axis)", 1),
            ParamSpec("N_IN", "units per input tensor", 2),
            ParamSpec("N_OUT", "units per output tensor (len(IDX))", 2),
            ParamSpec("IDX_MEM", "IDX image (index_mem_text), read with $readmemh", ""),
            ParamSpec("PIPE", "0 or 1: IDX word and output data from plain registers (latency + 1)", 0)),
    ports=(PortSpec("s_x", "in", "plain", "input tensor, units in arrival order"),
           PortSpec("m_y", "out", "plain", "output tensor, units in IDX order")),
    model=f"{__name__}:model",
    examples=(
        _example("W40 [T16,H4] -> [H4,T16] U1", 40, 1, (16, 4), (1, 0)),
        _example("W72 [T64,H8] -> [H8,T64] U4", 72, 4, (64, 8), (1, 0)),
        _example("W40 GQA [T32,Hkv2] -> [H8,T32] U2", 40, 2, (32, 2), (1, 0), (1, 4)),
        _example("W40 [T16,H4] -> [H4,T16] U1 PIPE1", 40, 1, (16, 4), (1, 0), pipe=1),
        _example("W72 [T64,H8] -> [H8,T64] U4 PIPE1", 72, 4, (64, 8), (1, 0), pipe=1),
        _example("W40 GQA [T32,Hkv2] -> [H8,T32] U2 PIPE1", 40, 2, (32, 2), (1, 0), (1, 4), pipe=1),
    ),
    extra={"latency": latency, "max_pipe": MAX_PIPE},
)
