"""assign_formats: --precision resolution (default < op < node), block ties, refusals, idempotence."""
import pytest
import torch
import torch.nn as nn

from masec.config import CompileConfig
from masec.errors import MasecError
from masec.frontend import export, normalize
from masec.meta import meta
from masec.passes.analysis.shape_prop import shape_prop
from masec.passes.transform.assign_formats import assign_formats
from masec.passes.transform.canonicalize import canonicalize


def prepared(model, inputs):
    gm = export(model.eval(), inputs)
    canonicalize(gm, inputs)
    normalize(gm, "m.py")
    shape_prop(gm, inputs)
    return gm


def config(tmp_path, toml=None, **kw):
    if toml is not None:
        f = tmp_path / "p.toml"
        f.write_text(toml)
        kw["precision_file"] = str(f)
    return CompileConfig(model_file="m.py", out=str(tmp_path / "o"), **kw).validated()


def fmt(node, port="out"):
    f = meta(node).formats[port]
    return f.name, f.block_size


def by_path(gm, path):
    (n,) = [n for n in gm.graph.nodes if n.op == "call_function" and meta(n).path == path]
    return n


def by_op(gm, op):
    return [n for n in gm.graph.nodes if meta(n).op == op]


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 32)

    def forward(self, x):
        return self.fc3(self.fc2(torch.softmax(self.fc1(x), dim=-1)))


X = (torch.randn(4, 32),)


def test_uniform_format_everywhere(tmp_path):
    gm = prepared(Head(), X)
    gm, changed = assign_formats(gm, config(tmp_path, format="mxfp8_e4m3"))
    assert changed
    for n in gm.graph.nodes:
        for port, f in meta(n).formats.items():
            assert (f.name, f.block_size) == ("mxfp8_e4m3", 32), (n.name, port)
    (x,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert fmt(x) == ("mxfp8_e4m3", 32)


def test_precision_file_default_op_node_by_module_path_and_by_node_name(tmp_path):
    gm = prepared(Head(), X)
    fc3_name = by_path(gm, "fc3").name
    toml = f"""
[default]
act = "mxint8"
weight = "mxint8"
[op.softmax]
act = "mxfp8_e4m3"
[op.linear]
weight = "mxfp6_e2m3"
[node."fc2"]
weight = "mxfp4"
[node."{fc3_name}"]
act = "mxint6"
weight = "mxint4"
"""
    gm, _ = assign_formats(gm, config(tmp_path, toml))
    fc1, fc2, fc3 = (by_path(gm, p) for p in ("fc1", "fc2", "fc3"))
    (sm,) = by_op(gm, "softmax")
    assert fmt(fc1) == ("mxint8", 32) and fmt(fc1, "weight") == ("mxfp6_e2m3", 32)   # op beats default
    assert fmt(sm) == ("mxfp8_e4m3", 32)
    assert fmt(fc2, "weight") == ("mxfp4_e2m1", 32) and fmt(fc2) == ("mxint8", 32)         # node beats op
    assert fmt(fc3) == ("mxint6", 32) and fmt(fc3, "weight") == ("mxint4", 32)         # by node name
    assert fmt(fc1, "bias") == ("mxfp6_e2m3", 32)


def test_head_split_shrinks_the_block_to_head_dim(tmp_path):
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.wq = nn.Linear(64, 64, bias=False)
            self.wo = nn.Linear(64, 64, bias=False)

        def forward(self, x):
            B, T, C = x.shape
            q = self.wq(x).view(B, T, 8, 8).transpose(1, 2)       # head_dim 8
            q = torch.relu(q)
            return self.wo(q.transpose(1, 2).reshape(B, T, C))

    gm = prepared(Heads(), (torch.randn(1, 4, 64),))
    gm, _ = assign_formats(gm, config(tmp_path))
    wq, wo = by_path(gm, "wq"), by_path(gm, "wo")
    (relu,) = by_op(gm, "relu")
    # the view (B, T, 64) -> (B, T, 8, 8) needs a block dividing both last dims: 8 for the whole tied group
    assert fmt(wq) == ("mxint8", 8) and fmt(relu) == ("mxint8", 8)
    for g in by_op(gm, "gather_rows") + by_op(gm, "view"):
        assert fmt(g)[1] == 8
    # the linear weight block follows its input's block
    assert fmt(wo, "weight") == ("mxint8", 8)
    (x,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert fmt(x) == ("mxint8", 32) and fmt(wq, "weight") == ("mxint8", 32)


def test_linear_weight_block_follows_its_input(tmp_path):
    gm = prepared(Head(), X)
    gm, _ = assign_formats(gm, config(tmp_path, "[op.input]\nblock_size = 16\n"))
    (x,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    fc1 = by_path(gm, "fc1")
    assert fmt(x) == ("mxint8", 16) and fmt(fc1, "weight") == ("mxint8", 16)
    assert fmt(by_path(gm, "fc2"), "weight")[1] == 32


def test_residual_add_ties_both_operands(tmp_path):
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 32)

        def forward(self, x):
            return x + self.fc(x)

    gm = prepared(Res(), X)
    gm, _ = assign_formats(gm, config(tmp_path, '[node."fc"]\nblock_size = 8\n'))
    (x,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    (add,) = by_op(gm, "add")
    assert fmt(x)[1] == fmt(add)[1] == fmt(by_path(gm, "fc"))[1] == 8


def test_norm_weight_block_follows_its_stream(tmp_path):
    """A searched precision file may give a norm's weight its own block size; the norm kernel streams
    the weight beside x block for block, so the weight takes the stream's block (it used to be left
    at 64 and select_kernels refused the node)."""
    class Norm(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(32)
            self.fc = nn.Linear(32, 32)

        def forward(self, x):
            return self.fc(self.norm(x))

    gm = prepared(Norm(), X)
    gm, _ = assign_formats(gm, config(tmp_path, '[default]\nblock_size = 32\n[node."norm"]\nweight = "mxint6"\n'
                                                'block_size = 64\n'))
    (norm,) = by_op(gm, "layer_norm")
    (x,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert fmt(norm, "weight") == ("mxint6", 32) and fmt(norm)[1] == fmt(x)[1] == 32
    assert all(f.block_size == 32 for f in meta(norm).formats.values())


@pytest.mark.parametrize("bad", ["m2xfp4_a", "anda4", "int8", "fp_e4m3"])
def test_formats_without_kernels_are_refused_naming_the_node(tmp_path, bad):
    gm = prepared(Head(), X)
    fc2 = by_path(gm, "fc2")
    with pytest.raises(MasecError) as exc:
        assign_formats(gm, config(tmp_path, f'[node."fc2"]\nweight = "{bad}"\n'))
    msg = str(exc.value)
    assert "\n" not in msg.strip()
    why = "built only for activations" if bad in ("m2xfp4_a", "anda4") else "no hardware kernels"
    assert f"node `{fc2.name}`" in msg and "linear" in msg and bad in msg and why in msg


def test_unknown_format_name_is_refused_naming_the_key(tmp_path):
    """The precision file is validated before any pass: the message names the file's section and key."""
    gm = prepared(Head(), X)
    with pytest.raises(MasecError, match=r"--precision: .*\[op.softmax\] act = 'mxbogus'"):
        assign_formats(gm, config(tmp_path, '[op.softmax]\nact = "mxbogus"\n'))


def test_idempotent(tmp_path):
    gm = prepared(Head(), X)
    cfg = config(tmp_path, '[op.softmax]\nact = "mxfp8_e4m3"\n[node."fc2"]\nweight = "mxfp4"\n')
    gm, changed = assign_formats(gm, cfg)
    assert changed
    before = {n.name: dict(meta(n).formats) for n in gm.graph.nodes}
    gm, changed = assign_formats(gm, cfg)
    assert not changed
    assert {n.name: dict(meta(n).formats) for n in gm.graph.nodes} == before


@pytest.mark.parametrize("wname,block", [("m2xfp4_w", 32), ("nvfp4", 16), ("bitmod_fp4", 128), ("bitmod_fp3", 32)])
def test_seed_weight_formats_on_a_linear(tmp_path, wname, block):
    """The seed weight formats mx_linear builds are accepted as a linear's weight; its bias takes the
    node's activation format; M2XFP/NVFP4 tie their block with the input's, a BitMoD group does not."""
    gm = prepared(Head(), X)
    gm, _ = assign_formats(gm, config(tmp_path, f'[node."fc2"]\nweight = "{wname}"\nweight_block_size = {block}\n'))
    fc2 = by_path(gm, "fc2")
    assert fmt(fc2, "weight") == (wname, block)
    assert fmt(fc2, "bias") == fmt(fc2, "out")
    x_block = fmt(fc2.args[0])[1]
    assert x_block == (32 if wname.startswith("bitmod") else block)


def test_seed_weight_format_elsewhere_is_refused(tmp_path):
    """A seed weight format on a port without its datapath (a norm's weight) is refused in one line."""
    class Norm(nn.Module):
        def __init__(self):
            super().__init__()
            self.n = nn.LayerNorm(32)
            self.fc = nn.Linear(32, 32)

        def forward(self, x):
            return self.fc(self.n(x))

    gm = prepared(Norm(), X)
    with pytest.raises(MasecError) as exc:
        assign_formats(gm, config(tmp_path, '[default]\nweight = "nvfp4"\n'))
    msg = str(exc.value)
    assert "\n" not in msg.strip() and "nvfp4" in msg and "only as the weight of a linear" in msg
