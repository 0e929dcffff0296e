"""set_pipeline: every kernel instance's pipeline depth (SV parameter ``PIPE``) from the clock.

A kernel that can register its datapath declares ``ParamSpec("PIPE", ...)`` in its manifest entry
and, in ``SPEC.extra``:

* ``"max_pipe"``: the largest PIPE its template has cuts for; :func:`pipe_depth` clips to it;
* ``"pipe_for_clock"`` (only for a rule of its own): ``clock_ns -> PIPE`` for UltraScale+ (default:
  :func:`masec.hw_templates.kernels.mx_quantize.pipe_for_clock`); other families' periods are scaled
  by :data:`FAMILY_SLOWDOWN` first;
* ``"latency"``: ``params -> cycles`` that depth adds over ``PIPE = 0`` (nested kernels included),
  refusing a PIPE outside ``0..max_pipe`` through :func:`check_pipe`.

The pass writes ``inst.params["PIPE"]`` (so the top level instantiates it and the cost model sees
it) and ``inst.pipe_latency`` (the cycle model adds it to the instance's start and finish). A slow
clock gives ``PIPE = 0``: exactly the unpipelined RTL, with no register it does not need. A
``PIPE`` already in the instance's parameters (a test, or a folding choice) is kept.

    set_pipeline(ir, clock_ns=4.0, family="xcup")   # True when anything changed
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from masec.errors import MasecError
from masec.hw_templates.manifest import kernel

if TYPE_CHECKING:
    from masec.hwir import HwGraph


#: How many times slower a family's logic and routing are than UltraScale+ (``xcup``) at the same
#: logic depth: a kernel's ``pipe_for_clock`` rule (written for UltraScale+) sees ``clock_ns /
#: factor``. A rule of thumb, checked against the post-route ECP5 measurements in docs/kernels.md:
#: an ECP5 at 100 MHz needs the pipeline an UltraScale+ needs near 350 MHz.
FAMILY_SLOWDOWN = {"xcup": 1.0, "xc7": 1.4, "ecp5": 3.5}


def check_pipe(pipe, max_pipe: int, who: str) -> int:
    """``pipe`` as an int (None counts as 0) when a template with cuts up to ``max_pipe`` has it, else
    ValueError naming ``who`` (the kernels' latency functions and instance configs call this)."""
    pipe = int(pipe or 0)
    if not 0 <= pipe <= max_pipe:
        raise ValueError(f"PIPE {pipe}: {who} takes 0..{max_pipe} (the stages its template has)")
    return pipe


def pipe_depth(kernel_name: str, clock_ns: float, family: str = "xcup") -> int | None:
    """``PIPE`` of ``kernel_name`` at a clock period of ``clock_ns`` on a part of ``family``; None for
    a kernel without one."""
    from masec.hw_templates.kernels.mx_quantize import pipe_for_clock

    spec = kernel(kernel_name)
    if not any(p.name == "PIPE" for p in spec.params):
        return None
    rule = spec.extra.get("pipe_for_clock", pipe_for_clock)
    depth = int(rule(clock_ns / FAMILY_SLOWDOWN.get(family, 1.0)))
    if "max_pipe" in spec.extra:
        depth = min(depth, int(spec.extra["max_pipe"]))
    return depth


def pipe_latency(kernel_name: str, params: dict) -> int:
    """Cycles the pipeline of an instance of ``kernel_name`` with SV ``params`` adds over PIPE 0."""
    spec = kernel(kernel_name)
    fn = spec.extra.get("latency")
    if fn is None:
        if int(params.get("PIPE", 0) or 0):
            raise MasecError(f"internal error: kernel {kernel_name} has a PIPE parameter but no latency in "
                             f"its manifest entry (SPEC.extra['latency'])")
        return 0
    return int(fn(params))


def set_pipeline(ir: HwGraph, clock_ns: float, family: str = "xcup") -> bool:
    changed = False
    for inst in ir.instances.values():
        if inst.is_port:
            continue
        depth = pipe_depth(inst.kernel, clock_ns, family)
        if depth is None:
            continue
        if "PIPE" not in inst.params:
            inst.params["PIPE"] = depth
            changed = True
        lat = pipe_latency(inst.kernel, inst.params)
        if lat != inst.pipe_latency:
            inst.pipe_latency = lat
            changed = True
    return changed


def set_fifo_pipeline(ir: HwGraph, clock_ns: float, family: str = "xcup") -> bool:
    """The ``PIPE`` of every edge's ``stream_fifo`` (after ``size_fifos`` chose its RAM style): only a
    block-RAM FIFO has a register to add; its latency does not change (docs/kernels/stream_fifo.md).

    At a clock that pipelines the FIFOs, the edges whose handshake would otherwise run combinationally
    across the die also get a ``stream_reg_slice`` (one cycle each, ``Edge.slices``): between a fork and
    each branch's FIFO (the fork's ready is the AND of its branches', and a residual branch's FIFO sits
    where the branch joins, far from the fork), between a top-level input port and its FIFO, and
    between a FIFO and a top-level output port (so the FIFOs are not pulled to the IO pins)."""
    depth = pipe_depth("stream_fifo", clock_ns, family) or 0
    changed = False
    for e in ir.edges:
        want = depth if e.ram_style else 0
        s_in = int(bool(depth) and ir.instances[e.src[0]].kernel in ("stream_fork", "input"))
        s_out = int(bool(depth) and ir.instances[e.dst[0]].kernel == "output")
        if (e.pipe, e.slice_in, e.slice_out) != (want, s_in, s_out):
            e.pipe, e.slice_in, e.slice_out = want, s_in, s_out
            changed = True
    return changed
