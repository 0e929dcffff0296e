"""Every kernel in the registry, in every configuration its manifest lists, is lint-clean
under ``verilator --lint-only -Wall`` (no blanket waivers)."""
import pytest

from masec.hw_templates.manifest import registry
from masec.hw_templates.render import render_with_deps
from masec.sim.runner import lint

CASES = [(name, ex) for name, spec in registry().items() for ex in spec.examples]


def test_every_kernel_lists_configurations():
    missing = [name for name, spec in registry().items() if not spec.examples]
    assert not missing, f"kernels without example configurations in their manifest entry: {missing}"


@pytest.mark.parametrize("name,example", CASES, ids=[f"{n}-{e['label']}" for n, e in CASES])
def test_kernel_configuration_lints_clean(tmp_path, name, example):
    files = render_with_deps(name, tmp_path, module_name=None, **example["ctx"])
    module = files[-1].stem
    lint(files, module, parameters=example["params"])
