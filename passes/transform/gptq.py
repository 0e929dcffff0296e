"""gptq: error-compensating rounding of linear weights (GPTQ, Frantar et al. 2022) in the formats
the compiler assigns.

Reads: every ``linear`` node's weight format (``NodeMeta.formats["weight"]``, set by
``assign_formats``), the model file's ``calibration_data``. Writes: each such weight ``W``
replaced by ``W'`` (a new buffer, so a weight tied to an embedding keeps its own copy) with
``fmt.quantize(W') == W'`` exactly: the parameter memories hold GPTQ's codes and every bit-exact
model reads ``W'``.

The rounding: per linear, ``H = 2 X^T X / n`` (``X`` the linear's input rows on the calibration
data) plus ``damp`` times its mean diagonal; columns (input features) are rounded one by one and
each column's error is spread over the columns not yet rounded through the Cholesky factor of
``H^-1`` (the paper's Algorithm 1, updates applied eagerly), in act-order (decreasing diagonal of
``H``). A block's parameters are fixed when its first column comes, from the block's weights as
updated so far (GPTQ's grouped quantization):
the E8M0 exponent of an MX block (16/32/64 along the input), NVFP4's E4M3 block scale (the FP32
tensor scale from the original tensor), M2XFP's shift and subgroup metadata, BitMoD's type and
FP16 scale. A block whose re-quantization moves anyway (a shrunk maximum selects another scale)
is settled by re-quantizing it (``settle``); the count is logged.

Inputs are taken from the model as it will be quantized: the canonical graph with every stream
and parameter rounded as compiled (``passes/search/emulate.py``), linears rounded in topological
waves, so a linear sees its inputs through the already-rounded earlier linears.

    w2, moved = round_weight(w, hessian(x), MXFormat(FP4_E2M1, 32))   # one matrix, settled
    gptq(gm, config)          # the compile pass (after assign_formats, calibrate_tensor_scales)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from masec.errors import InternalError, MasecError

log = logging.getLogger("masec.gptq")

#: weight rounding modes: ``nearest`` (each element rounded alone) or ``gptq``
MODES = ("nearest", "gptq")
#: GPTQ's relative dampening of H's diagonal (the paper's percdamp)
DAMP = 0.01
#: columns in decreasing order of the Hessian's diagonal (GPTQ's act-order)
ACT_ORDER = True
#: SequentialGPTQ's cache of rounded weights is cleared above this many elements
CACHE_ELEMENTS = 200_000_000
#: calibration batches used when the precision file does not say
CALIBRATION_BATCHES = 16


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise MasecError(f"--weight-rounding {mode!r}: use one of {', '.join(MODES)}")
    return mode


# ------------------------------------------------------------------------------ column quantizers
class _MXColumns:
    """MX int/fp: the block's E8M0 exponent from its amax when the block starts; a column is rounded
    onto the element grid scaled by 2^E (masec/formats/mx.py's steps 3-4 with E held fixed)."""

    def __init__(self, fmt):
        from masec.formats.mx import _round_signed_

        self.fmt = fmt
        self.group = fmt.block_size
        self.el = fmt.element
        self.rnd = lambda y: _round_signed_(y, fmt.rounding)

    def start(self, wg: torch.Tensor):
        from masec.formats.mx import exponents_from_amax

        e, _ = exponents_from_amax(wg.abs().amax(-1).contiguous().view(torch.int32), self.el)
        return e

    def column(self, e, j: int, x: torch.Tensor) -> torch.Tensor:
        from masec.formats.mx import pow2_f32

        el = self.el
        x = x.contiguous()
        if el.kind == "int":
            m = el.mbits
            o = x * pow2_f32((m - e).clamp_max(127))
            o = o * pow2_f32((m - e - 127).clamp_min(0))
            self.rnd(o)
            o.clamp_(-el.max_code, el.max_code)
            return o.mul_(pow2_f32(e - m)).add_(0.0)
        m = el.mbits
        o = x * pow2_f32(-e)
        k = o.view(torch.int32).bitwise_right_shift(23).bitwise_and_(0xFF).clamp_(min=el.emin + 127)
        o.mul_(torch.sub(254 + m, k).bitwise_left_shift_(23).view(torch.float32))
        self.rnd(o)
        o.mul_(k.sub_(m).bitwise_left_shift_(23).view(torch.float32))
        o.clamp_(-el.max_normal, el.max_normal)
        return o.mul_(pow2_f32(e)).add_(0.0)


class _NVFP4Columns:
    """NVFP4: the FP32 tensor scale of the original weight, the E4M3 block scale when the block starts."""

    def __init__(self, fmt, w: torch.Tensor):
        from masec.formats.nvfp4 import E2M1_MAX, E4M3_MAX

        self.fmt = fmt
        self.group = fmt.block_size
        amax_t = w.abs().amax()
        if fmt.tensor_scale:
            self.s_t = amax_t / (E4M3_MAX * E2M1_MAX) if amax_t > 0 else torch.tensor(1.0)
        else:
            self.s_t = torch.tensor(1.0)

    def start(self, wg: torch.Tensor):
        from masec.formats.element import FP8_E4M3
        from masec.formats.nvfp4 import E2M1_MAX, E4M3_MAX, E4M3_TINY
        from masec.formats.rounding import round_magnitudes

        amax_b = wg.abs().amax(-1)
        if self.fmt.tensor_scale:
            raw = ((amax_b / E2M1_MAX) / self.s_t).clamp(E4M3_TINY, E4M3_MAX)
        else:
            raw = (amax_b / E2M1_MAX).clamp_max(E4M3_MAX)
        s_b, _ = round_magnitudes(raw.contiguous(), FP8_E4M3, "even", bounded=False, want_codes=False)
        return s_b

    def column(self, s_b, j: int, x: torch.Tensor) -> torch.Tensor:
        from masec.formats.element import FP4_E2M1
        from masec.formats.rounding import round_magnitudes

        d = (x / (self.s_t * s_b)).abs_()
        d = torch.where(torch.isnan(d), 0.0, d)
        q, _ = round_magnitudes(d, FP4_E2M1, "even", bounded=False, want_codes=False)
        return torch.copysign(q, x).mul_(s_b).mul_(self.s_t).add_(0.0)


class _M2XFPColumns:
    """M2XFP weights: the block's shift and every subgroup's metadata (the format's own search) when
    the block starts; columns rounded to FP4 of |x| / (2^(E+b) (1 + m/4))."""

    def __init__(self, fmt):
        self.fmt = fmt
        self.group = fmt.block_size

    def start(self, wg: torch.Tensor):
        from masec.formats.m2xfp import M2XFPWeightFormat

        eb, m, _, _, _ = M2XFPWeightFormat._search_chunk(wg.contiguous())
        return torch.pow(2.0, eb.to(torch.float64)).unsqueeze(-1) * (1.0 + m.to(torch.float64) / 4)

    def column(self, scale, j: int, x: torch.Tensor) -> torch.Tensor:
        from masec.formats.element import FP4_E2M1
        from masec.formats.m2xfp import SUBGROUP
        from masec.formats.rounding import round_magnitudes

        sc = scale[:, j // SUBGROUP]
        q, _ = round_magnitudes(x.abs().to(torch.float64) / sc, FP4_E2M1, "even", bounded=False, want_codes=False)
        return torch.copysign(q.mul_(sc).to(torch.float32), x).add_(0.0)


class _BitMoDColumns:
    """BitMoD: the group's type and FP16 scale (the format's own search) when the group starts;
    columns rounded to the nearest value of that type's grid (a midpoint to the lower one)."""

    def __init__(self, fmt):
        from masec.formats.bitmod import type_table

        self.fmt = fmt
        self.group = fmt.group_size
        self.grids = []
        for t in range(4):
            grid, _ = type_table(fmt.bits, t).sort()
            self.grids.append((grid, (grid[1:] + grid[:-1]) / 2))

    def start(self, wg: torch.Tensor):
        tid, s, _, _, _ = self.fmt._search_chunk(wg.contiguous())
        return tid, s

    def column(self, state, j: int, x: torch.Tensor) -> torch.Tensor:
        tid, s = state
        w = x.to(torch.float64) / s
        out = torch.zeros_like(w)
        for t, (grid, mids) in enumerate(self.grids):
            q = grid[torch.bucketize(w, mids, right=False)] * s
            out = torch.where(tid == t, q, out)
        return out.to(torch.float32).add_(0.0)


def column_quantizer(fmt, w: torch.Tensor, where: str = ""):
    """The block-fixed column quantizer of ``fmt`` (a masec.formats object), or a MasecError."""
    from masec.formats.bitmod import BitMoDFormat
    from masec.formats.m2xfp import M2XFPWeightFormat
    from masec.formats.mx import MXFormat
    from masec.formats.nvfp4 import NVFP4Format

    if isinstance(fmt, MXFormat) and fmt.axis in (-1, 1):
        return _MXColumns(fmt)
    if isinstance(fmt, NVFP4Format) and fmt.axis in (-1, 1):
        return _NVFP4Columns(fmt, w)
    if isinstance(fmt, M2XFPWeightFormat) and fmt.axis in (-1, 1):
        return _M2XFPColumns(fmt)
    if isinstance(fmt, BitMoDFormat) and fmt.axis in (-1, 1):
        return _BitMoDColumns(fmt)
    raise MasecError(f"{where}--weight-rounding gptq: no GPTQ rounding for weight format "
                     f"{getattr(fmt, 'name', fmt)!r}; it supports MX int/fp, nvfp4, m2xfp4_w and bitmod_fp4/fp3 "
                     f"weights (use --weight-rounding nearest)")


# ----------------------------------------------------------------------------------- the rounding
def hessian(x: torch.Tensor) -> torch.Tensor:
    """``2 X^T X / n`` (float64) of input rows ``x`` (``[..., in]``)."""
    x = x.reshape(-1, x.shape[-1]).to(torch.float64)
    return 2.0 * (x.T @ x) / max(x.shape[0], 1)


def _inverse_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp mean(diag H) I)^-1; dampening grows until H is positive definite."""
    h = h.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    mean = float(torch.diagonal(h).mean())
    d = damp
    for _ in range(8):
        hd = h + d * mean * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        chol, info = torch.linalg.cholesky_ex(hd)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            u, info = torch.linalg.cholesky_ex(hinv, upper=True)
            if int(info) == 0:
                return u
        d *= 10
    raise MasecError("--weight-rounding gptq: the calibration Hessian is not positive definite even with "
                     f"dampening {d:g}; give more calibration_data")


def gptq_round(w: torch.Tensor, h: torch.Tensor, fmt, damp: float = DAMP, where: str = "",
               act_order: bool | None = None) -> torch.Tensor:
    """``W'`` (float32, shape of ``w``): ``w`` ([out, in]) rounded column by column into ``fmt`` (blocks
    along the input) with GPTQ's error compensation under Hessian ``h`` ([in, in]); not yet settled.
    ``act_order``: columns in decreasing order of H's diagonal (the paper's act-order); a block's
    parameters are fixed when its first column comes, from its columns' current values."""
    if w.dim() != 2 or h.shape != (w.shape[1], w.shape[1]):
        raise InternalError(f"gptq_round: weight {tuple(w.shape)} and Hessian {tuple(h.shape)} do not match")
    if not bool(torch.isfinite(w).all()):
        raise MasecError(f"{where}--weight-rounding gptq: the weight holds NaN or Inf")
    act_order = ACT_ORDER if act_order is None else act_order
    w32 = w.detach().to(torch.float32).cpu()
    cq = column_quantizer(fmt, w32, where)
    g = cq.group
    rows, cols = w32.shape
    n = cols + (-cols % g)
    hp = torch.zeros(n, n, dtype=torch.float64)
    hp[:cols, :cols] = h.detach().to(torch.float64).cpu()
    if act_order:   # stable sort: ties keep the column order (deterministic)
        perm = torch.sort(-torch.diagonal(hp), stable=True).indices
    else:
        perm = torch.arange(n)
    pos = torch.empty_like(perm)
    pos[perm] = torch.arange(n)
    u = _inverse_factor(hp[perm][:, perm], damp)
    W = torch.zeros(rows, n, dtype=torch.float64)
    W[:, :cols] = w32.to(torch.float64)
    W = W[:, perm].contiguous()              # permuted; updates applied eagerly to every later column
    Q = torch.zeros(rows, n, dtype=torch.float32)
    states: dict[int, object] = {}
    for i in range(n):
        col = int(perm[i])
        blk = col // g
        if blk not in states:
            states[blk] = cq.start(W[:, pos[blk * g:(blk + 1) * g]].to(torch.float32))
        x = W[:, i]
        q = cq.column(states[blk], col % g, x.to(torch.float32))
        Q[:, col] = q
        err = (x - q.to(torch.float64)) / u[i, i]
        W[:, i + 1:] -= err.unsqueeze(1) * u[i, i + 1:].unsqueeze(0)
    return Q[:, :cols].contiguous()


def settle(q: torch.Tensor, fmt, where: str = "") -> tuple[torch.Tensor, int]:
    """``(W', changed)``: ``q`` re-quantized until ``fmt.quantize(W') == W'`` (MX blocks never move:
    an exponent can only shrink, and the smaller one holds the same values; a seed format's scale
    may follow a shrunk block maximum). ``changed``: elements that moved."""
    changed = 0
    for _ in range(16):
        r = fmt.quantize(q)
        if torch.equal(r, q):
            return q, changed
        changed += int((r != q).sum())
        q = r
    raise InternalError(f"{where}gptq: {getattr(fmt, 'name', fmt)} re-quantization does not settle")


def round_weight(w: torch.Tensor, h: torch.Tensor, fmt, damp: float = DAMP, where: str = "") -> tuple[torch.Tensor, int]:
    """GPTQ then :func:`settle`: ``(W', elements settled)``, ``fmt.quantize(W') == W'``."""
    q = gptq_round(w, h, fmt, damp, where)
    return settle(q, fmt, where)


# ------------------------------------------------------------------- sequential rounding of a graph
class Tap(torch.nn.Module):
    """Identity that accumulates ``2 X^T X`` of its input rows while armed."""

    def __init__(self):
        super().__init__()
        self.h = None
        self.n = 0
        self.armed = False

    def forward(self, x):
        if self.armed:
            x2 = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
            hh = 2.0 * (x2.T @ x2)
            self.h = hh if self.h is None else self.h + hh
            self.n += x2.shape[0]
        return x


def linear_waves(gm: fx.GraphModule, names) -> list[list[str]]:
    """``names`` (linear nodes) in topological waves: a node's wave follows every linear of ``names``
    it depends on (so all inputs of a wave are final once the earlier waves are rounded)."""
    names = set(names)
    depth: dict[fx.Node, int] = {}
    out: dict[int, list[str]] = {}
    for n in gm.graph.nodes:
        d = max((depth[a] for a in n.all_input_nodes if a in depth), default=0)
        if n.name in names:
            out.setdefault(d, []).append(n.name)
            d += 1
        depth[n] = d
    return [out[k] for k in sorted(out)]


@dataclass
class SequentialGPTQ:
    """Rounds the linear weights of one or more emulation graphs (``emulate.CanonicalGraph``, one per
    calibration input shape) in waves. ``cache`` maps (node, key of everything upstream) -> W', so
    assignments sharing a prefix round it once (the search)."""

    damp: float = DAMP
    cache: dict = field(default_factory=dict)
    settled: dict = field(default_factory=dict)
    _cached: int = 0

    def run(self, parts, formats: dict, upstream_key=None) -> dict[str, torch.Tensor]:
        """``parts``: [(CanonicalGraph, [input tuples])]; ``formats``: (node, port) -> TensorFormat of the
        first graph's nodes (all graphs share node names). Returns node -> W' for every linear whose
        weight has a format. ``upstream_key(node) -> hashable`` names what determines the node's inputs
        (None: no caching)."""
        g0 = parts[0][0]
        lin = [n.name for n in g0.gm.graph.nodes
               if (n.name, "weight") in formats and (n.name, "weight") in g0.params and _op(n) == "linear"]
        result: dict[str, torch.Tensor] = {}
        if not lin:
            return result
        for g, _ in parts:
            missing = [n for n in lin if (n, "weight") not in g.params]
            if missing:
                raise MasecError(f"--weight-rounding gptq: the calibration inputs' graph has no linear {missing[0]!r} "
                                 f"(calibration_data must have the example inputs' structure)")
        try:
            for wave in linear_waves(g0.gm, lin):
                keys = {n: (n, formats[(n, "weight")], upstream_key(n)) if upstream_key else None for n in wave}
                todo = [n for n in wave if keys[n] is None or keys[n] not in self.cache]
                if todo:
                    hs = self._hessians(parts, formats, result, todo)
                    for n in todo:
                        w = g0.floats[(n, "weight")]
                        where = f"node `{n}`: "
                        wq, moved = round_weight(w, hs[n], formats[(n, "weight")].parse(), self.damp, where)
                        self.settled[n] = moved
                        if moved:
                            log.info("gptq: %s: %d of %d elements settled by re-quantization", n, moved, wq.numel())
                        if keys[n] is not None:
                            self._cached += wq.numel()
                            if self._cached > CACHE_ELEMENTS:
                                self.cache.clear()
                                self._cached = wq.numel()
                            self.cache[keys[n]] = wq
                        result[n] = wq
                for n in wave:
                    if n not in result:
                        result[n] = self.cache[keys[n]]
        finally:
            for g, _ in parts:
                g._configured = None
        return result

    def _hessians(self, parts, formats, done: dict, todo: list[str]) -> dict[str, torch.Tensor]:
        from masec.passes.search.emulate import _move

        hs, ns = {}, {}
        for g, batches in parts:
            taps = g.taps()
            g.configure(None, formats, overrides={(n, "weight"): w for n, w in done.items()})
            for n in todo:
                taps[n].h, taps[n].n, taps[n].armed = None, 0, True
            try:
                with torch.no_grad():
                    for b in batches:
                        g.module(*_move(tuple(b), g.device))
            finally:
                for t in taps.values():
                    t.armed = False
            for n in todo:
                if taps[n].h is not None:
                    hs[n] = taps[n].h if n not in hs else hs[n] + taps[n].h
                    ns[n] = ns.get(n, 0) + taps[n].n
                taps[n].h = None
        out = {}
        for n in todo:
            if n not in hs or ns[n] == 0:
                raise MasecError(f"--weight-rounding gptq: node `{n}` received no calibration input rows")
            out[n] = (hs[n] / ns[n]).cpu()
        return out


def _op(n):
    m = n.meta.get("masec")
    return getattr(m, "op", None)


# ------------------------------------------------------------------------------- the compile pass
def calibration_batches(module, name: str = "calibration_data", limit: int = CALIBRATION_BATCHES) -> list[tuple]:
    """The first ``limit`` input tuples of the model file's ``calibration_data``; a MasecError if absent."""
    calib = getattr(module, name, None)
    if callable(calib):
        calib = calib()
    if calib is None:
        raise MasecError(f"--weight-rounding gptq needs `{name}` in the model file (an iterable of input tuples, "
                         f"as for masec search)")
    if not hasattr(calib, "__iter__"):
        raise MasecError(f"`{name}` must be an iterable of input tuples")
    out = []
    for b in calib:
        if len(out) >= limit:
            break
        out.append((b,) if isinstance(b, torch.Tensor) else tuple(b))
    if not out:
        raise MasecError(f"--weight-rounding gptq: `{name}` is empty")
    return out


def merge_batches(batches: list[tuple]) -> list[tuple]:
    """The calibration batches as one batch (concatenated along dim 0) when every batch is a tuple of
    tensors of equal shapes, so a wave of GPTQ runs one forward; else unchanged."""
    b0 = batches[0]
    if len(batches) < 2 or not all(
            len(b) == len(b0) and all(isinstance(t, torch.Tensor) and isinstance(u, torch.Tensor) and t.dim() >= 1
                                      and t.shape == u.shape and t.dtype == u.dtype for t, u in zip(b, b0))
            for b in batches):
        return list(batches)
    return [tuple(torch.cat([b[i] for b in batches], 0) for i in range(len(b0)))]


def graph_parts(model, batches, device, graph=None) -> list:
    """[(emulation graph, [batches])]: the batches merged (:func:`merge_batches`) when the model takes the
    merged batch, else one graph per distinct input shape. ``graph(inputs)`` makes a graph
    (default: ``emulate.CanonicalGraph``); ``masec compile`` and the search's Emulator both come here."""
    from masec.passes.search.emulate import CanonicalGraph

    make = graph or (lambda b: CanonicalGraph(model, b, torch.device(device)))
    merged = merge_batches(batches)
    if len(merged) == 1 and len(batches) > 1:
        try:
            return [(make(merged[0]), merged)]
        except Exception as exc:  # noqa: BLE001 - a model that takes no batch: one forward per batch
            log.info("gptq: calibration batches not merged (%s)", str(exc).splitlines()[0] if str(exc) else exc)
    by_shape: dict = {}
    for b in batches:
        key = tuple((tuple(t.shape), str(t.dtype)) if isinstance(t, torch.Tensor) else repr(t) for t in b)
        by_shape.setdefault(key, []).append(b)
    return [(make(bs[0]), bs) for bs in by_shape.values()]


def gptq(gm: fx.GraphModule, config, model=None, module=None, device: str = "cpu") -> dict[str, int]:
    """The compile pass: every linear weight of ``gm`` rounded by GPTQ in its assigned format (see the
    module docstring). Returns node -> elements settled by re-quantization."""
    from masec.frontend import load_model_namespace

    if model is None or module is None:
        model, _inputs, module = load_model_namespace(config.model_file, config.model_name, config.inputs_name)
    batches = calibration_batches(module, limit=getattr(config, "calibration_batches", CALIBRATION_BATCHES))
    formats = {}
    for n in gm.graph.nodes:
        m = n.meta.get("masec")
        if m is not None and m.op == "linear" and "weight" in m.formats:
            formats[(n.name, "weight")] = m.formats["weight"]
            for port, f in m.formats.items():
                formats[(n.name, port)] = f
    for n in gm.graph.nodes:      # every stream as compiled (activation formats, NVFP4 tensor scales)
        m = n.meta.get("masec")
        if m is not None:
            for port, f in m.formats.items():
                formats.setdefault((n.name, port), f)
    model.eval()
    parts = graph_parts(model, batches, device)
    seq = SequentialGPTQ()
    new = seq.run(parts, formats)
    for n in list(gm.graph.nodes):
        if n.name not in new:
            continue
        old = n.args[1]
        name = f"_masec_gptq_{n.name}"
        gm.register_buffer(name, new[n.name].clone())
        with gm.graph.inserting_before(n):
            ga = gm.graph.get_attr(name)
        ga.meta = dict(old.meta)
        n.update_arg(1, ga)
        if not old.users:
            gm.graph.erase_node(old)
    gm.recompile()
    log.info("gptq: %d linear weights rounded on %d calibration batches", len(new), len(batches))
    return dict(seq.settled)
