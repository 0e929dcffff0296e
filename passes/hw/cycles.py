"""predict_cycles: the IR's cycle model (analysis; reads the IR, writes nothing).

Every instance gets a start time S (its first output beat) and a finish time F (its last), in
cycles from the first input beat, from its ideal cycles C (one set of inputs at full rate) and
its buffering:

* a port ``input``: S = 0, F = its beats (one per cycle);
* ``"row"`` kernels (linear, norms, activations, softmax, rope, add/mul, forks, embedding): one
  row of latency ``C / rows``: S = max(S_in) + lat, F = max(S + C - lat, max(F_in) + lat);
* ``"tensor"`` kernels: a corner turn (``stream_reorder``) starts after its whole input,
  S = F_in + 2, F = S + C; a matmul loads one B matrix (one head) before its first output,
  S = max(S_a, S_b + beats of one B) + lat, F = max(S + C - lat, F_a + lat, F_b + lat).

An instance's pipeline registers (``pipe_latency``, from ``--clock``) delay S and F alike, and so
does each register slice on an edge (``Edge.slices``).
The total is the latest F over the outputs; the bottleneck is the instance with the largest C.
It is a model, compared with Verilator-measured cycles in ``bench/blocks.py``.

    p = predict_cycles(ir)   # {"total": 12668, "bottleneck": "layers_0_attention_matmul", ...}
"""
from __future__ import annotations

from masec.hwir import HwGraph


def predict_cycles(ir: HwGraph) -> dict:
    start: dict[str, float] = {}
    finish: dict[str, float] = {}
    for inst in ir.topo():
        ins = ir.in_edges(inst.name)
        s_in = [start[e.src[0]] + e.slices for e in ins]     # an edge's register slices delay it
        f_in = [finish[e.src[0]] + e.slices for e in ins]
        if inst.kernel == "input" or not ins:   # a port, or a source such as stream_rom
            start[inst.name], finish[inst.name] = 0.0, float(inst.out_types[0].beats)
            continue
        if inst.kernel == "output":
            start[inst.name], finish[inst.name] = max(s_in), max(f_in)
            continue
        c = float(max(inst.ideal_cycles, 1))
        rows = max(inst.out_types[0].rows, 1) if inst.out_types else 1
        lat = c / rows
        if inst.kernel == "stream_reorder":
            s = max(f_in) + 2
            f = s + c
        elif inst.kernel == "mx_matmul":
            b_edge = ins[1]
            batch = max(inst.out_types[0].rows // max(inst.params.get("M", 1), 1), 1)
            b_load = b_edge.type.beats / batch
            s = max(s_in[0], s_in[1] + b_load) + c / max(inst.out_types[0].rows, 1)
            f = max(s + c - lat, max(f_in) + lat)
        else:
            s = max(s_in) + lat
            f = max(s + c - lat, max(f_in) + lat)
        # pipeline registers (SV parameter PIPE, passes/hw/pipeline.py) delay every beat equally
        start[inst.name], finish[inst.name] = s + inst.pipe_latency, f + inst.pipe_latency
    kernels = [i for i in ir.instances.values() if not i.is_port]
    bottleneck = max(kernels, key=lambda i: i.ideal_cycles) if kernels else None
    total = max((finish[o.name] for o in ir.outputs), default=0.0)
    return {"total": int(round(total)), "bottleneck": bottleneck.name if bottleneck else "",
            "bottleneck_cycles": bottleneck.ideal_cycles if bottleneck else 0,
            "start": {k: int(round(v)) for k, v in start.items()},
            "finish": {k: int(round(v)) for k, v in finish.items()}}
