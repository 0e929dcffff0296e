"""Search space: candidates and their cost, sites found in a model, grouping, objectives."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from masec.passes.search.objectives import MaxLoss, loss_of, pareto_front
from masec.passes.search.report import knee
from masec.passes.search.space import (ELEMENT_TYPES, SEED_TYPES, Candidate, build_space, candidates, default_types,
                                       discover_sites, hardware_accepts, layer_of, site_checked)


def test_candidates_and_bits():
    cands = candidates(ELEMENT_TYPES)
    assert len(cands) == 8 * 3
    c = Candidate.make("mxfp4", 64)
    assert c.fmt == "mxfp4_e2m1" and c.bits == 4 + 8 / 64 and c.key == "mxfp4_e2m1:64"
    assert Candidate.parse(c.key) == c
    assert Candidate.make("mxint6", 16).bits == 6 + 8 / 16
    bits = [c.bits for c in cands]
    assert bits == sorted(bits) and bits[0] == 4.125 and bits[-1] == 8.5


def test_default_types_follow_the_compiler():
    """Seed formats join the default space exactly when assign_formats accepts them somewhere: as a
    linear's weight or as an activation."""
    from masec.errors import MasecError
    from masec.passes.transform.assign_formats import _check_hw_format

    def compiles(name, block, lw, act=False):
        try:
            _check_hw_format(name, block, "even", "t", lw, act)
            return True
        except MasecError:
            return False

    types = default_types()
    assert types[:8] == ELEMENT_TYPES
    for t, b in SEED_TYPES.items():
        assert (t in types) == (compiles(t, b, False) or compiles(t, b, True) or compiles(t, b, False, True)), t
        assert hardware_accepts(t, b, True) == compiles(t, b, True)
        assert hardware_accepts(t, b, activation=True) == compiles(t, b, False, True)
    # today: the seed activation formats are in, and they are checked site by site
    for t in ("nvfp4", "m2xfp4_a", "anda4"):
        assert t in types and site_checked(Candidate.make(t, SEED_TYPES[t])), t
    assert not site_checked(Candidate.make("mxint8", 32)) and not site_checked(Candidate.make("m2xfp4_w", 32))


def test_linear_weight_only_formats_stay_on_linear_weights():
    """A seed weight format (M2XFP weights, BitMoD; NVFP4 as a weight) is offered to the weight groups
    of linears, never to an embedding table; a seed activation format (NVFP4, M2XFP activations,
    Anda) to no activation group until the compiler accepted it there (Space.check_seed_acts)."""
    model = Net()
    sites, _, _ = discover_sites(model, (torch.randint(0, 50, (2, 4)),))
    space = build_space(sites, "node", candidates(("mxint8", "nvfp4", "m2xfp4_w", "m2xfp4_a", "anda4"), (32,)))
    weight_only = {Candidate.make("m2xfp4_w", 32), Candidate.make("nvfp4", 16)}
    acts = {Candidate.make("m2xfp4_a", 32), Candidate.make("anda4", 64)}
    for g in space.groups:
        kinds = {space.by_key[s].kind for s in space.groups[g]}
        ops = {space.by_key[s].op for s in space.groups[g]}
        got = set(space.cands_for(g))
        assert (weight_only <= got) == (kinds == {"weight"} and ops == {"linear"}), g
        assert not (acts & got), g
        assert Candidate.make("mxint8", 32) in got
    # a check that accepts exactly one activation group offers the formats there only
    act_groups = sorted(g for g in space.groups if space.group_kind(g) == "act")
    first = act_groups[0]
    space.check_seed_acts(lambda a: None if set(a) == set(space.groups[first]) else "refused")
    for g in act_groups:
        got = set(space.cands_for(g))
        assert ((acts | {Candidate.make("nvfp4", 16)}) <= got) == (g == first), g
        if g != first:
            assert not ((acts | {Candidate.make("nvfp4", 16)}) & got), g


class Block(nn.Module):
    def __init__(self, d=32, h=64):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.w1 = nn.Linear(d, h)
        self.w3 = nn.Linear(d, h)
        self.w2 = nn.Linear(h, d)
        self.wo = nn.Linear(d, d)

    def forward(self, x):
        n = self.norm(x)
        y = self.w2(F.silu(self.w1(n)) * self.w3(n))
        return x + self.wo(y.reshape(-1, y.shape[-1]).view(y.shape))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.layers = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(32, 50, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, ids):
        x = self.emb(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_discover_sites_and_grouping():
    net = Net().eval()
    ids = torch.randint(0, 50, (2, 5))
    sites, traced, _ = discover_sites(net, (ids,))
    assert traced
    by = {s.key: s for s in sites}
    # the tied embedding/classifier weight is one site with an alias
    assert by["weight:emb"].aliases == ("head",) and "weight:head" not in by
    assert by["weight:emb"].numel == 50 * 32 and by["weight:emb"].op == "embedding"
    # q/k/v-style fan-out: w1 and w3 read the norm's output -> one activation site
    s = by["act:layers.0.norm"]
    assert s.op == "layer_norm" and s.consumers == ("layers.0.w1", "layers.0.w3") and s.numel == 2 * 5 * 32
    # the gate multiply is a function: named by its fx node
    mul = [k for k in by if k.startswith("act:mul")]
    assert len(mul) == 2 and by[mul[0]].op == "mul" and by[mul[0]].consumers == ("layers.0.w2",)
    # wo's input goes through view/reshape back to w2
    assert by["act:layers.0.w2"].consumers == ("layers.0.wo",) and by["act:layers.0.w2"].op == "linear"
    assert by["act:layers.0.w2"].layer == "layers.0"
    weights = [s for s in sites if s.kind == "weight"]
    acts = [s for s in sites if s.kind == "act"]
    assert len(weights) == 1 + 2 * 4 and len(acts) == 2 * 3 + 1

    node = build_space(sites, "node")
    assert len(node.groups) == len(sites)
    layer = build_space(sites, "layer")
    assert set(layer.groups) == {"weight:model", "weight:layers.0", "weight:layers.1", "act:layers.0",
                                 "act:layers.1", "act:model"}
    assert by["act:mul"].layer == "layers.0" and by["act:mul_1"].layer == "layers.1"
    typ = build_space(sites, "type")
    assert set(typ.groups) == {"weight:linear", "weight:embedding", "act:layer_norm", "act:mul", "act:linear",
                                 "act:add"}
    # act:layers.1.w2 feeds nothing in layers.0; the final head reads the last residual add
    assert "act:add_1" in by and by["act:add_1"].consumers == ("head",)
    with pytest.raises(ValueError):
        build_space(sites, "row")


def test_avg_bits_weighted_by_size():
    net = Net().eval()
    sites, _, _ = discover_sites(net, (torch.randint(0, 50, (2, 5)),))
    space = build_space(sites, "type")
    a = space.uniform(Candidate.make("mxint8", 32))
    assert space.avg_bits(a) == pytest.approx(8.25)
    a["weight:embedding"] = Candidate.make("mxint4", 32)
    n_emb = 50 * 32
    want = (n_emb * 4.25 + (space.total_numel - n_emb) * 8.25) / space.total_numel
    assert space.avg_bits(a) == pytest.approx(want)
    assert space.expand(a)["weight:emb"] == Candidate.make("mxint4", 32)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.b(self.a(x))
        return self.b(self.a(-x))


def test_untraceable_model_gets_one_activation_group():
    sites, traced, why = discover_sites(Untraceable(), (torch.ones(2, 8),))
    assert not traced and why
    by = {s.key: s for s in sites}
    # b's input is module a's output (found at run time); a's input comes from no module
    assert by["act:a"].consumers == ("b",) and by["act:a"].op == "linear"
    space = build_space(sites, "node")
    assert space.groups["act:linear_inputs"] == ["act:in:a"]


def test_layer_of():
    assert layer_of("layers.3.attention.wq") == "layers.3"
    assert layer_of("encoder.fc") == "encoder"
    assert layer_of("fc1") == "model" and layer_of(None) == "model"


def test_objectives():
    assert MaxLoss.parse("2%") == MaxLoss(0.02, True)
    assert MaxLoss.parse("0.5") == MaxLoss(0.5, False)
    assert MaxLoss.parse(None) is None
    with pytest.raises(Exception, match="max-loss"):
        MaxLoss.parse("two percent")
    assert loss_of(4.1, 4.0) == pytest.approx(0.025)
    assert loss_of(0.9, 1.0, higher_is_better=True) == pytest.approx(0.1)
    assert loss_of(4.1, 4.0, relative=False) == pytest.approx(0.1)
    pts = [{"avg_bits": 4, "metric": 5.0, "loss": 0.25}, {"avg_bits": 5, "metric": 4.2, "loss": 0.05},
           {"avg_bits": 6, "metric": 4.5, "loss": 0.12}, {"avg_bits": 8, "metric": 4.0, "loss": 0.0}]
    front = pareto_front(pts)
    assert [p["avg_bits"] for p in front] == [4, 5, 8]
    assert knee(front)["avg_bits"] == 5
    assert [p["avg_bits"] for p in pareto_front(pts, higher_is_better=True)] == [4]
    assert not math.isnan(knee(front[:1])["avg_bits"])


def test_kl_proxy_for_logits():
    from masec.passes.search.objectives import Proxy

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(40, 16)
            self.head = nn.Linear(16, 40)

        def forward(self, ids):
            return self.head(self.emb(ids))          # [batch, seq, vocab] logits

    torch.manual_seed(0)
    lm = LM().eval()
    batches = [(torch.randint(0, 40, (1, 6)),) for _ in range(3)]
    p = Proxy(lm, batches)
    assert p.kind == "kl" and p.merged and p() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        lm.head.weight.mul_(1.1)
    assert p() > 0
    assert Proxy(lm, batches, kind="mse").kind == "mse"
    assert Proxy(nn.Linear(4, 4), [(torch.ones(2, 4),)]).kind == "mse"   # 2-D output: mse
    with pytest.raises(Exception, match="proxy"):
        Proxy(lm, batches, kind="l1")
