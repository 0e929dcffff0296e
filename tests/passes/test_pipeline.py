"""set_pipeline: PIPE per instance from the clock, and the cycle model's added latency."""
from dataclasses import replace

import pytest

import masec.passes.hw.pipeline as pipeline
from masec.errors import MasecError
from masec.hw_templates.manifest import ParamSpec, kernel
from masec.passes.hw.cycles import predict_cycles
from masec.passes.hw.pipeline import set_pipeline
from tests.passes.test_ir import residual_ir


def _with_pipe(monkeypatch, name="mx_linear", latency=lambda p: 3 * p["PIPE"], max_pipe=None):
    """Give ``name`` a PIPE parameter (PIPE 2 below 5 ns, else 0) whatever its template has today."""
    base = kernel(name)
    extra = {**base.extra, "pipe_for_clock": lambda ns: 2 if ns < 5 else 0}
    if latency is not None:
        extra["latency"] = latency
    else:
        extra.pop("latency", None)
    if max_pipe is not None:
        extra["max_pipe"] = max_pipe
    spec = replace(base, params=tuple(p for p in base.params if p.name != "PIPE") + (ParamSpec("PIPE", "", 0),),
                   extra=extra)
    real = pipeline.kernel
    monkeypatch.setattr(pipeline, "kernel", lambda k: spec if k == name else real(k))


def _linear(ir):
    return next(i for i in ir.instances.values() if i.kernel == "mx_linear")


def test_fast_clock_sets_pipe_and_delays_the_cycle_model(monkeypatch):
    # the same design at 4 ns with the linear's pipeline adding 0 and then 6 cycles (other kernels
    # get whatever their own manifest entries say, identically in both)
    _with_pipe(monkeypatch, latency=lambda p: 0)
    _, ir0, _ = residual_ir()
    set_pipeline(ir0, 4.0)
    before = predict_cycles(ir0)
    _with_pipe(monkeypatch)
    _, ir, _ = residual_ir()
    assert set_pipeline(ir, 4.0)
    lin = _linear(ir)
    assert lin.params["PIPE"] == 2 and lin.pipe_latency == 6
    after = predict_cycles(ir)
    assert after["start"][lin.name] == before["start"][lin.name] + 6
    assert after["total"] == before["total"] + 6     # the linear is on the longest path to the output
    assert not set_pipeline(ir, 4.0)                  # idempotent


def test_slow_clock_adds_nothing(monkeypatch):
    _with_pipe(monkeypatch)
    _, ir, _ = residual_ir()
    before = predict_cycles(ir)
    set_pipeline(ir, 10.0)
    assert _linear(ir).params["PIPE"] == 0 and _linear(ir).pipe_latency == 0
    assert all(i.pipe_latency == 0 for i in ir.instances.values())   # 10 ns: no kernel pipelines
    assert predict_cycles(ir) == before


def test_max_pipe_clips_and_an_explicit_pipe_is_kept(monkeypatch):
    _with_pipe(monkeypatch, max_pipe=1)
    _, ir, _ = residual_ir()
    set_pipeline(ir, 4.0)
    assert _linear(ir).params["PIPE"] == 1 and _linear(ir).pipe_latency == 3
    _, ir, _ = residual_ir()
    _linear(ir).params["PIPE"] = 0
    set_pipeline(ir, 4.0)
    assert _linear(ir).params["PIPE"] == 0 and _linear(ir).pipe_latency == 0


def test_a_pipelined_kernel_without_latency_is_an_internal_error(monkeypatch):
    _with_pipe(monkeypatch, latency=None)
    _, ir, _ = residual_ir()
    with pytest.raises(MasecError, match="internal error.*latency"):
        set_pipeline(ir, 4.0)


def test_every_registry_kernel_with_pipe_declares_its_latency():
    from masec.hw_templates.manifest import registry

    for name, spec in registry().items():
        if any(p.name == "PIPE" for p in spec.params) and name != "mx_quantize":
            assert callable(spec.extra.get("latency")), f"{name}: PIPE without SPEC.extra['latency']"
            assert spec.extra["latency"]({**{p.name: p.default for p in spec.params}, "PIPE": 0}) == 0


def test_a_slower_family_gets_a_deeper_pipeline_at_the_same_clock():
    from masec.passes.hw.pipeline import FAMILY_SLOWDOWN, pipe_depth

    assert FAMILY_SLOWDOWN["ecp5"] > FAMILY_SLOWDOWN["xc7"] > FAMILY_SLOWDOWN["xcup"] == 1.0
    # mx_quantize's rule: PIPE 0 at 100 MHz on UltraScale+, deeper on an ECP5 at the same clock
    assert pipe_depth("mx_quantize", 10.0, "xcup") == 0
    assert pipe_depth("mx_quantize", 10.0, "ecp5") == 3
    assert pipe_depth("mx_quantize", 4.0) == 2


def test_block_ram_fifos_get_their_pipe_and_reach_the_top_level():
    from masec.design import top_view
    from masec.passes.hw.pipeline import set_fifo_pipeline
    from masec.passes.hw.streams import insert_forks, size_fifos

    _, ir, _ = residual_ir()
    insert_forks(ir)
    size_fifos(ir)
    assert any(e.ram_style for e in ir.edges) and not all(e.ram_style for e in ir.edges)
    assert set_fifo_pipeline(ir, 4.0)
    assert all(e.pipe == (1 if e.ram_style else 0) for e in ir.edges)
    assert [e["pipe"] for e in top_view(ir).edges] == [e.pipe for e in ir.edges]
    assert not set_fifo_pipeline(ir, 4.0)
    set_fifo_pipeline(ir, 10.0)                      # 100 MHz on UltraScale+: none
    assert not any(e.pipe for e in ir.edges)


def test_fork_branches_and_ports_get_register_slices_at_a_fast_clock():
    # the residual IR (input -> fork -> linear / skip -> add -> output): at 4 ns every edge behind the
    # fork or from the input port has a slice before its FIFO, the edge to the output one after it;
    # each delays the cycle model by one cycle, and top.sv instantiates exactly those slices
    from masec.design import top_view
    from masec.hw_templates.render import render_template
    from masec.passes.hw.pipeline import set_fifo_pipeline
    from masec.passes.hw.streams import insert_forks, size_fifos

    _, ir, _ = residual_ir()
    insert_forks(ir)
    size_fifos(ir)
    before = predict_cycles(ir)
    assert set_fifo_pipeline(ir, 4.0)
    kind = {n: i.kernel for n, i in ir.instances.items()}
    for e in ir.edges:
        assert e.slice_in == int(kind[e.src[0]] in ("stream_fork", "input")), e
        assert e.slice_out == int(kind[e.dst[0]] == "output"), e
    assert sum(e.slice_in for e in ir.edges) == 3 and sum(e.slice_out for e in ir.edges) == 1
    after = predict_cycles(ir)
    assert after["total"] == before["total"] + 3      # input slice, fork-branch slice, output slice
    v = top_view(ir)
    top = render_template("top.sv.j2", "top", inputs=v.inputs, outputs=v.outputs, edges=v.edges,
                          instances=v.instances).text
    assert top.count("stream_reg_slice_plain #(") == 4
    assert top.count("u_slice_in_") == 3 and top.count("u_slice_out_") == 1
    set_fifo_pipeline(ir, 10.0)                      # 100 MHz on UltraScale+: no FIFO pipeline, no slices
    assert not any(e.slices for e in ir.edges)
    assert predict_cycles(ir)["total"] == before["total"]
