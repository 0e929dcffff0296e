"""fold: choose every node's lanes (elements per stream beat) for the highest throughput within a
resource budget on the target part.

Reads ``NodeMeta`` (op, shape, formats) after ``assign_formats``, the config's ``--budget F``,
``--part``, ``--parallelism`` and the precision file's ``lanes = N`` ([op.X] / [node."..."]).
Writes a :class:`masec.meta.Folding` record into every compute node (and every ``gather_rows``
corner turn of an MX stream); ``select_kernels`` and ``build_ir`` read it, ``insert_retiles``
joins nodes of different lanes with ``mx_retile``.

* Without ``--budget``: every node gets the global ``--parallelism`` (capped by the smallest block,
  default 4) unless the precision file fixes its lanes; nothing is optimized, and the report says so.
* With ``--budget F``: a mixed-integer program (HiGHS, ``highspy``) with one binary per
  (node, legal lanes): minimize the bottleneck T (the largest ideal cycles of any node, which sets
  the rate of the pipeline) subject to ``cycles(node, lanes) <= T`` and, for LUT, FF, DSP and BRAM,
  the sum of the kernels' estimates (``masec.cost_model``) <= F x the part's capacity less a
  reserve for the streams' infrastructure (FIFOs, forks, retiles, ROMs). A second solve keeps T and
  takes the cheapest such design (the sum of the resources as fractions of the budget), so nodes
  off the bottleneck are not widened for nothing. The reserve starts at 0; the whole design is then
  built and estimated (``cost_model.estimate_design``); while its total exceeds the budget, the
  reserve grows to the infrastructure the last design needed and the program is solved again.
  Lanes fixed by the precision file are fixed choices of the program.

    gm, changed = fold(gm, config)   # meta(node).folding == Folding(lanes=8, origin="budget", legal=(1, 2, 4, 8))
    summary = fold_summary(ir, config)   # per node lanes/resources/cycles, totals vs the part, fits
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from masec.errors import MasecError
from masec.meta import Folding, meta, set_meta
from masec.parts import RESOURCES, lookup_part

#: lane counts tried for every node (powers of two; the kernel's own checks keep the legal ones)
LANE_CANDIDATES = (1, 2, 4, 8, 16, 32, 64)
#: reserve rounds before giving up on fitting the infrastructure around the kernels
MAX_ROUNDS = 8


@dataclass(frozen=True)
class Option:
    """One legal lanes choice of one node: its ideal cycles and estimated resources."""
    lanes: int
    cycles: int
    res: tuple[float, ...]      # in RESOURCES order (BRAM in 36 Kb blocks, a RAMB18 counts 0.5)


def fold_nodes(gm) -> list:
    """The nodes that get a Folding: compute nodes with a kernel, and corner turns of MX streams."""
    from masec.ops import OPS

    out = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        m = meta(node)
        if m.op == "gather_rows":
            if meta(node.args[0]).formats.get("out") is not None:
                out.append(node)
        elif not OPS[m.op].layout:
            out.append(node)
    return out


def _names(node) -> tuple[str, ...]:
    m = meta(node)
    return tuple(n for n in (m.path, node.name) if n)


def lanes_override(spec, node) -> int | None:
    """``lanes = N`` for ``node`` from the precision file's ``spec`` ([node."<path or name>"] beats
    [op.<op>]); None without a file or a ``lanes`` key."""
    if spec is None:
        return None
    path = None
    for n in _names(node):   # as masec.precision.Precision.resolve: the last name with a section wins
        if n in spec.node:
            path = n
    return spec.resolve_lanes(meta(node).op, path)


def _reorder_option(node, lanes: int) -> tuple[int, dict]:
    """(ideal cycles, stream_reorder parameters) of the corner turn ``node`` at ``lanes`` lanes."""
    from masec.hw_templates.kernels import stream_reorder as R
    from masec.hwir import StreamType

    x, index, shape = node.args
    fmt = meta(x).formats["out"]
    if lanes > fmt.block_size or fmt.block_size % lanes:
        raise MasecError(f"lanes {lanes} must divide the block size {fmt.block_size}")
    t_in = StreamType(tuple(meta(x).shape), fmt, lanes)
    t_out = replace(t_in, shape=tuple(shape))
    _, params, _ = R.instance_config(t_in.bus_bits, t_in.row_beats, t_in.rows, list(index), "idx.mem")
    return max(t_in.beats, t_out.beats), params


def _estimate(kernel: str, params: dict) -> tuple[float, ...]:
    from masec.cost_model import estimate

    est = estimate(kernel, dict(params))
    return tuple(float(est.get(r, 0)) for r in RESOURCES)


def options(gm, node, config, lanes_set=LANE_CANDIDATES) -> list[Option]:
    """Every legal lanes choice of ``node`` among ``lanes_set`` with its cycles and resources."""
    from masec.passes.hw.pipeline import pipe_depth
    from masec.passes.transform.select_kernels import choose_at

    out = []
    for lanes in lanes_set:
        try:
            if meta(node).op == "gather_rows":
                cycles, params = _reorder_option(node, lanes)
                kernel = "stream_reorder"
            else:
                choice = choose_at(gm, node, config, lanes)
                cycles, params, kernel = choice.ideal_cycles, choice.params_dict, choice.kernel
        except MasecError:
            continue
        depth = pipe_depth(kernel, config.clock_ns, lookup_part(config.part).family)   # as set_pipeline will
        if depth is not None:
            params = {**dict(params), "PIPE": depth}
        out.append(Option(lanes, int(cycles), _estimate(kernel, params)))
    return out


def legal_lanes(gm, node, config) -> tuple[int, ...]:
    from masec.passes.transform.select_kernels import choose_at

    legal = []
    for lanes in LANE_CANDIDATES:
        try:
            if meta(node).op == "gather_rows":
                _reorder_option(node, lanes)
            else:
                choose_at(gm, node, config, lanes)
        except MasecError:
            continue
        legal.append(lanes)
    return tuple(legal)


def _describe(node) -> str:
    m = meta(node)
    return f"node `{node.name}` ({m.op}" + (f", {m.path}" if m.path else "") + \
        (f", {m.source}" if m.source else "") + ")"


def _refuse_illegal(node, lanes: int, legal) -> None:
    raise MasecError(f"{_describe(node)}: lanes = {lanes} is not legal for its kernel; legal lanes: "
                     f"{', '.join(map(str, legal)) or 'none'}")


def estimable(part) -> bool:
    """Whether the cost model's estimates apply to ``part`` (it is fitted to Xilinx synth_xilinx)."""
    return getattr(part, "vendor", "xilinx") == "xilinx"


def budget_caps(config) -> dict[str, float]:
    cap = lookup_part(config.part).capacity()
    return {r: config.budget * cap[r] for r in RESOURCES}


def fold(gm, config):
    """Write a Folding into every node of :func:`fold_nodes`. Returns ``(gm, changed)``."""
    from masec.passes.hw.build_ir import effective_lanes

    nodes = fold_nodes(gm)
    spec = config.precision().spec if config.precision_file else None
    fixed: dict = {}
    for node in nodes:
        o = lanes_override(spec, node)
        if o is not None:
            legal = legal_lanes(gm, node, config)
            if o not in legal:
                _refuse_illegal(node, o, legal)
            fixed[node] = (o, legal)
    if config.budget is None:
        default = effective_lanes(gm, config.parallelism)
        chosen = {n: Folding(fixed[n][0], "override", fixed[n][1]) if n in fixed else Folding(default)
                  for n in nodes}
    else:
        chosen = _solve_budget(gm, config, nodes, fixed)
    changed = False
    for node, f in chosen.items():
        if meta(node).folding != f:
            set_meta(node, meta(node).with_(folding=f))
            changed = True
    return gm, changed


# ------------------------------------------------------------------------------------ the program
def _solve_budget(gm, config, nodes, fixed) -> dict:
    part = lookup_part(config.part)
    if not estimable(part):
        raise MasecError(f"--budget with --part {part.name}: the cost model is fitted to Yosys synth_xilinx "
                         f"(6-input LUTs, DSP48, RAMB36); it has no estimates for {part.family} parts; use "
                         f"--parallelism and `lanes = N` in --precision for this part")
    caps = budget_caps(config)
    opts = {}
    for node in nodes:
        o = options(gm, node, config)
        if node in fixed:
            o = [x for x in o if x.lanes == fixed[node][0]]
        if not o:
            raise MasecError(f"{_describe(node)}: no legal lanes for its kernel (tried "
                             f"{', '.join(map(str, LANE_CANDIDATES))})")
        opts[node] = o
    reserve = [0.0] * len(RESOURCES)
    for _ in range(MAX_ROUNDS):
        pick = solve_lanes([opts[n] for n in nodes], [caps[r] - reserve[k] for k, r in enumerate(RESOURCES)])
        if pick is None:
            _refuse_infeasible(config, part, nodes, opts, reserve)
        chosen = {n: Folding(opts[n][j].lanes, "override" if n in fixed else "budget",
                             fixed[n][1] if n in fixed else tuple(x.lanes for x in opts[n]))
                  for n, j in zip(nodes, pick)}
        kernels = [sum(opts[n][j].res[k] for n, j in zip(nodes, pick)) for k in range(len(RESOURCES))]
        total = _design_total(gm, config, chosen)
        over = [total[r] > caps[r] for r in RESOURCES]
        if not any(over):
            return chosen
        grown = [max(reserve[k], total[r] - kernels[k]) for k, r in enumerate(RESOURCES)]
        if grown == reserve:
            break
        reserve = grown
    worst = max(RESOURCES, key=lambda r: total[r] / max(caps[r], 1e-9))
    raise MasecError(f"--budget {config.budget} of {part.name}: the kernels fit but the design with its FIFOs, "
                     f"forks and retiles does not ({worst} {total[worst]:,.0f} > {caps[worst]:,.0f}); "
                     f"raise --budget or choose a larger --part")


def _refuse_infeasible(config, part, nodes, opts, reserve) -> None:
    caps = budget_caps(config)
    least = [sum(min(o.res[k] for o in opts[n]) for n in nodes) + reserve[k] for k in range(len(RESOURCES))]
    short = [f"{r} {least[k]:,.0f} > {caps[r]:,.0f}" for k, r in enumerate(RESOURCES) if least[k] > caps[r]]
    why = "; ".join(short) if short else "no combination of lanes meets every resource at once"
    extra = "" if not any(reserve) else " with the FIFOs, forks and retiles they need"
    raise MasecError(f"--budget {config.budget} of {part.name}: no design fits (the fewest lanes per node{extra} "
                     f"{'need' if short else 'do not help'}: {why}); raise --budget, choose a larger --part "
                     f"or fix fewer lanes in --precision")


def solve_lanes(options_per_node: list[list[Option]], caps: list[float], time_limit: float = 60.0):
    """One option per node: minimize the largest cycles, then the resources, within ``caps``
    (one per RESOURCES key). A MILP solved by HiGHS. Returns the chosen index per node, or None."""
    import highspy
    import numpy as np

    from masec.passes.search.ilp import _quiet_fd1

    n_nodes = len(options_per_node)
    if any(c < 0 for c in caps):
        return None
    cols, base = [], 0
    for o in options_per_node:
        cols.append(list(range(base, base + len(o))))
        base += len(o)
    n = base + 1                 # the last column is T
    t_col = base
    cyc = np.array([x.cycles for o in options_per_node for x in o], dtype=np.float64)
    res = np.array([x.res for o in options_per_node for x in o], dtype=np.float64).reshape(base, len(caps))
    t_scale = max(float(cyc.max(initial=1.0)), 1.0)
    inf = highspy.kHighsInf

    def model(t_max: float | None):
        with _quiet_fd1():
            h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", float(time_limit))
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("random_seed", 0)
        h.setOptionValue("threads", 1)
        h.addVars(n, np.zeros(n), np.concatenate([np.ones(base), [inf]]))
        h.changeColsIntegrality(base, np.arange(base, dtype=np.int32),
                                np.array([highspy.HighsVarType.kInteger] * base))
        for c in cols:                                 # one lanes choice per node
            h.addRow(1.0, 1.0, len(c), np.array(c, dtype=np.int32), np.ones(len(c)))
        for c in cols:                                 # cycles(node) <= T (in units of the largest cycles)
            idx = np.array(c + [t_col], dtype=np.int32)
            h.addRow(-inf, 0.0, len(idx), idx, np.concatenate([cyc[c] / t_scale, [-1.0]]))
        for k, cap in enumerate(caps):                 # resources within the budget (as fractions of it)
            nz = np.nonzero(res[:, k])[0]
            if cap <= 0:
                if nz.size:
                    h.addRow(-inf, 0.0, nz.size, nz.astype(np.int32), res[nz, k])
                continue
            h.addRow(-inf, 1.0, nz.size, nz.astype(np.int32), res[nz, k] / cap)
        if t_max is None:
            cost = np.zeros(n)
            cost[t_col] = 1.0
        else:
            h.changeColBounds(t_col, 0.0, t_max / t_scale + 1e-9)
            cost = np.concatenate([sum(res[:, k] / cap for k, cap in enumerate(caps) if cap > 0), [0.0]])
        h.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        x = np.array(h.getSolution().col_value)
        return [int(np.argmax(x[c])) for c in cols]

    def worst(pick):
        return max(options_per_node[i][j].cycles for i, j in enumerate(pick))

    def fits(pick):
        used = [sum(options_per_node[i][j].res[k] for i, j in enumerate(pick)) for k in range(len(caps))]
        return all(u <= cap + 1e-6 for u, cap in zip(used, caps))

    if n_nodes == 0:
        return []
    first = model(None)
    if first is None or not fits(first):
        return None
    second = model(float(worst(first)))
    if second is not None and fits(second) and worst(second) <= worst(first):
        return second
    return first


def _design_total(gm, config, chosen: dict) -> dict:
    """Estimated LUT/FF/DSP/BRAM of the whole design with the lanes ``chosen`` (kernels, FIFOs, forks,
    retiles, ROMs): the IR is built as the compiler builds it and estimated by the cost model."""
    from masec.cost_model import estimate_design

    for node, f in chosen.items():
        set_meta(node, meta(node).with_(folding=f))
    ir = build_design_ir(gm, config)
    total = estimate_design(ir)["total"]
    return {r: float(total.get(r, 0)) for r in RESOURCES}


def build_design_ir(gm, config):
    """The IR passes after folding, as the compiler runs them (select_kernels .. set_fifo_pipeline):
    every kernel and block-RAM FIFO at the PIPE the clock asks for, so the budget is checked against
    the registers the design will have."""
    from masec.passes.hw.build_ir import build_ir
    from masec.passes.hw.insert_retiles import insert_retiles
    from masec.passes.hw.pipeline import set_fifo_pipeline, set_pipeline
    from masec.passes.hw.streams import insert_forks, size_fifos
    from masec.passes.transform.select_kernels import select_kernels

    family = lookup_part(config.part).family
    select_kernels(gm, config)
    ir = build_ir(gm, config, full=False)
    insert_forks(ir)
    insert_retiles(ir)
    set_pipeline(ir, config.clock_ns, family)
    size_fifos(ir)
    set_fifo_pipeline(ir, config.clock_ns, family)
    return ir


# ------------------------------------------------------------------------------------- the report
def _num(v):
    v = round(float(v), 1)
    return int(v) if v.is_integer() else v


def fold_summary(ir, config) -> dict:
    """What the report prints about folding: per instance lanes, estimated resources and ideal
    cycles; the bottleneck; the design's estimated totals against the part and the budget."""
    from masec.cost_model import estimate_design
    from masec.passes.hw.cycles import predict_cycles

    part = lookup_part(config.part)
    cap = part.capacity()
    note = "" if estimable(part) else (f"the cost model is fitted to Yosys synth_xilinx; its figures are not "
                                       f"{part.family} resources (run `masec synth` for this part)")
    try:
        est = estimate_design(ir)
    except MasecError as exc:   # the cost model cannot estimate a kernel: say so, estimate nothing
        est, note = None, f"no estimates: {exc}"
    per = est.get("nodes", {}) if est else {}
    pred = predict_cycles(ir)
    rows = []
    for inst in ir.instances.values():
        if inst.is_port:
            continue
        r = per.get(inst.name)
        rows.append({"instance": inst.name, "node": inst.node, "kernel": inst.kernel,
                     "lanes": inst.out_types[0].lanes if inst.out_types else 0,
                     "resources": {k: _num(r.get(k, 0)) for k in RESOURCES} if r else None,
                     "ideal_cycles": inst.ideal_cycles})
    out = {"mode": "", "part": part.name, "budget": config.budget, "capacity": cap, "estimable": estimable(part),
           "note": note, "bottleneck": pred["bottleneck"], "bottleneck_cycles": pred["bottleneck_cycles"],
           "predicted_cycles": pred["total"], "nodes": rows}
    budget = config.budget
    if budget is None:
        out["mode"] = (f"no --budget: every node has --parallelism {config.parallelism} lanes (capped by the "
                       f"smallest block; the default is 4) unless the precision file fixes `lanes`")
    else:
        out["mode"] = (f"--budget {budget}: lanes per node chosen by HiGHS for the smallest bottleneck within "
                       f"{budget} x the {part.name} resources (cost model estimates)")
    if est is None:
        return {**out, "limit": None, "total": None, "utilization": None, "fits_part": None, "within_budget": None}
    total = {k: _num(est["total"].get(k, 0)) for k in RESOURCES}
    limit = {k: (budget * cap[k] if budget is not None else float(cap[k])) for k in RESOURCES}
    return {**out, "limit": {k: round(v, 3) for k, v in limit.items()}, "total": total,
            "utilization": {k: round(total[k] / cap[k], 6) for k in RESOURCES},
            "fits_part": {k: total[k] <= cap[k] for k in RESOURCES},
            "within_budget": {k: total[k] <= limit[k] for k in RESOURCES}}
