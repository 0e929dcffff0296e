"""The kernel registry: one :class:`KernelSpec` per hardware kernel.

Each kernel lives in ``hw_templates/kernels/<kernel>.py``, which defines ``SPEC`` (its manifest
entry) beside the bit-exact software model of what the RTL computes. Templates live in
``hw_templates/sv/<module>.sv.j2``. :func:`registry` discovers every kernel module, so adding a
kernel touches no shared file. The backend and the tests read the same registry.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass(frozen=True)
class ParamSpec:
    name: str
    doc: str
    default: object = None


@dataclass(frozen=True)
class PortSpec:
    name: str          # stream prefix, e.g. "s_x" or "m_y"
    direction: str     # "in" | "out"
    kind: str = "mx"   # "mx" (data + scale) | "plain" (data only)
    doc: str = ""


@dataclass(frozen=True)
class KernelSpec:
    name: str                          # kernel name == top module name of its template
    template: str                      # file in hw_templates/sv/
    doc: str
    params: tuple[ParamSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    deps: tuple[str, ...] = ()         # other kernels this one instantiates
    ops: tuple[str, ...] = ()          # canonical graph ops it implements (empty: infrastructure)
    model: str = ""                    # "module:function" of the bit-exact model
    # Configurations for the resource table (bench/kernel_resources.py): each a dict
    # {"label": str, "ctx": {jinja context}, "params": {SV parameter overrides}} at 2-3 parallelisms.
    examples: tuple[dict, ...] = field(default=(), compare=False, hash=False)
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@lru_cache(maxsize=1)
def registry() -> dict[str, KernelSpec]:
    """All kernels, by name, in a stable (sorted) order."""
    from masec.hw_templates import kernels

    specs: dict[str, KernelSpec] = {}
    for info in sorted(pkgutil.iter_modules(kernels.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"{kernels.__name__}.{info.name}")
        for spec in getattr(mod, "SPECS", ()) or ((mod.SPEC,) if hasattr(mod, "SPEC") else ()):
            if spec.name in specs:
                raise RuntimeError(f"kernel {spec.name} registered twice ({info.name})")
            specs[spec.name] = spec
    return dict(sorted(specs.items()))


def kernel(name: str) -> KernelSpec:
    reg = registry()
    if name not in reg:
        raise KeyError(f"no kernel named {name!r}; known kernels: {', '.join(reg)}")
    return reg[name]


def kernels_for_op(op: str) -> list[KernelSpec]:
    return [k for k in registry().values() if op in k.ops]


def dependency_closure(names) -> list[str]:
    """Kernel names needed to build ``names``, dependencies first, deterministic."""
    order: list[str] = []

    def visit(n):
        if n in order:
            return
        for d in kernel(n).deps:
            visit(d)
        order.append(n)

    for n in sorted(names):
        visit(n)
    return order
