"""precision.toml: resolve precedence, deterministic round trip, validation errors."""
import pytest

from masec.errors import MasecError
from masec.passes.search.precision_file import (PrecisionError, PrecisionSpec, Section, dump_precision,
                                                load_precision, parse_precision)

EXAMPLE = '''
[default]
act = "mxint8"        # every activation tensor
weight = "mxfp4"
block_size = 32
[op.softmax]
act = "mxfp8_e4m3"
[node."layers.0.attention.wq"]
weight = "mxint8"
block_size = 16
[node.mul_1]
act = "mxint6"
act_block_size = 64
'''


def test_resolve_precedence():
    spec = parse_precision(EXAMPLE, "p.toml")
    assert spec.resolve("linear", "layers.1.attention.wq", "weight") == ("mxfp4", 32)
    assert spec.resolve("linear", "layers.0.attention.wq", "weight") == ("mxint8", 16)
    # the node's block size applies to its output too; the format comes from [default]
    assert spec.resolve("linear", "layers.0.attention.wq", "out") == ("mxint8", 16)
    assert spec.resolve("softmax", "softmax", "out") == ("mxfp8_e4m3", 32)
    assert spec.resolve("softmax", "softmax", "act") == ("mxfp8_e4m3", 32)
    assert spec.resolve("rms_norm", "norm", "weight") == ("mxfp4", 32)
    assert spec.resolve("mul", "mul_1", "out") == ("mxint6", 64)
    assert spec.resolve("mul", "mul_1", "bias") == ("mxfp4", 32)
    # nothing set at all: mxint8 with its default block
    assert PrecisionSpec().resolve("linear", "x", "weight") == ("mxint8", 32)


def test_round_trip(tmp_path):
    spec = parse_precision(EXAMPLE, "p.toml")
    text = dump_precision(spec, header="made by a test\nsecond line")
    assert text.startswith("# made by a test\n# second line\n")
    p = tmp_path / "precision.toml"
    p.write_text(text)
    back = load_precision(p)
    assert back == spec
    assert dump_precision(back, header="made by a test\nsecond line") == text
    # odd node names survive quoting
    spec.node['weird "name"\\x'] = Section(weight="mxint4", block_size=64)
    assert parse_precision(dump_precision(spec)) == spec


@pytest.mark.parametrize("text, needle", [
    ('[default]\nact = "mxint9x"\n', "act = 'mxint9x'"),
    ('[default]\nblock_size = 24\n', "power of two"),
    ('[default]\nblock_size = true\n', "power of two"),
    ('[default]\nact = 8\n', "format name string"),
    ('[default]\nformat = "mxint8"\n', "unknown key `format`"),
    ('[op.conv]\nact = "mxint8"\n', "unknown op `conv`"),
    ('[layers]\nact = "mxint8"\n', "unknown top-level key `layers`"),
    ('[default\nact = "mxint8"\n', "not valid TOML"),
    ('[node."a.b"]\nweight_block_size = 3\n', 'node."a.b"'),
    ('node = 3\n', "must be tables"),
])
def test_validation_errors(tmp_path, text, needle):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(PrecisionError) as e:
        load_precision(p)
    msg = str(e.value)
    assert str(p) in msg and needle in msg
    assert isinstance(e.value, MasecError)


def test_missing_file(tmp_path):
    with pytest.raises(PrecisionError, match="no such precision file"):
        load_precision(tmp_path / "nope.toml")
