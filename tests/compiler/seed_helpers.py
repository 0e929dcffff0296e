"""Helpers of the seed-format compiler tests: compile a model with a precision file, simulate it."""
from pathlib import Path

from masec.backend import compile_model
from masec.config import CompileConfig
from masec.simulate import simulate

MLP = Path(__file__).parents[2] / "examples" / "mlp" / "model.py"


def compile_with(tmp_path, toml: str, name: str, model=MLP, **kw):
    """Compile ``model`` with the precision file ``toml`` into ``tmp_path / name``: (out, result)."""
    prec = tmp_path / f"{name}.toml"
    prec.write_text(toml)
    out = tmp_path / name
    res = compile_model(CompileConfig(model_file=str(model), out=str(out), precision_file=str(prec), **kw))
    return out, res


def sim_ok(out, seed):
    """``masec sim`` of ``out`` passes (every output element equals the bit-exact reference)."""
    s = simulate(out, seed=seed)
    assert s.result.ok, s.result.message
    full = s.result.run("full_rate")
    print(f"{out.name}: seed {seed}; full_rate {full['cycles']} cycles, ideal {full['ideal_cycles']}")
