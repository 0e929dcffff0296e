"""The shared check of a pipelined kernel's latency (issue 12): at full rate, an instance at ``PIPE``
``p`` finishes exactly ``SPEC.extra["latency"]`` cycles after the same instance at ``PIPE`` 0, so the
pipeline still takes one beat per cycle and the cycle model's latency is the RTL's."""
from masec.hw_templates.manifest import kernel


def assert_pipe_latency(name: str, cycles0: int, cycles: int, pipe: int, params: dict | None = None) -> int:
    """Print and check the full-rate cycles of kernel ``name`` at ``PIPE`` 0 (``cycles0``) and at ``pipe``
    (``cycles``) against its manifest latency at SV ``params``; returns that latency."""
    want = int(kernel(name).extra["latency"]({**(params or {}), "PIPE": pipe}))
    print(f"{name} full rate: PIPE 0 {cycles0} cycles, PIPE {pipe} {cycles} (+{cycles - cycles0}, "
          f"SPEC latency {want})")
    assert pipe == 0 or want > 0, f"{name}: PIPE {pipe} adds no latency in its manifest entry"
    assert cycles - cycles0 == want, f"{name}: PIPE {pipe} took {cycles - cycles0} more cycles, manifest {want}"
    return want
