"""The search space: which tensors get a format (sites), which formats they may get (candidates),
and how sites are tied together (groups).

* A **weight site** is one parameter tensor: the ``weight`` of an ``nn.Linear`` or ``nn.Embedding``
  (a parameter shared by several modules, e.g. a tied embedding/classifier, is one site).
* An **activation site** is one tensor that feeds ``nn.Linear`` inputs. With a torch.fx-traceable
  model the site is named after the node producing it (walking back through view/reshape/transpose and relu,
  which passes its input's codes on in hardware):
  its module path for a module, its fx node name for a function (``mul_1``), the input's name for
  a model input. Several linears fed by one tensor (q/k/v) share the site. Its format is the
  producer's output format in the precision file (``[node."<producer>"] act``), so the hardware
  and its emulation (emulate.py) round the stream once, where it is made. An untraceable model
  gets one activation group for all linear inputs (written as ``[default] act``, which then also
  sets every stream the search does not choose).
* A **candidate** is an element type and a block size, e.g. ``mxfp4_e2m1:32``; its cost is the
  format's bits per element (element bits + 8 / block size for MX).
* **Grouping** (``by``): ``node`` gives each site its own choice, ``layer`` ties the weights (and
  separately the activations) of one layer (``layers.3``), ``type`` ties all sites of one op.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.fx
import torch.nn as nn

#: element types searched by default (OCP MX int and fp elements)
ELEMENT_TYPES = ("mxint8", "mxint6", "mxint4", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4")
BLOCK_SIZES = (16, 32, 64)
GROUPINGS = ("type", "layer", "node")


@lru_cache(maxsize=None)
def get_format(name: str, block_size: int):
    from masec.formats import parse_format

    return parse_format(name, block_size=block_size)


@dataclass(frozen=True, order=True)
class Candidate:
    """An element type (canonical format name) and a block size."""

    fmt: str
    block: int

    @classmethod
    def make(cls, name: str, block: int) -> "Candidate":
        return cls(get_format(name, block).name, int(block))

    @classmethod
    def parse(cls, key: str) -> "Candidate":
        name, _, block = key.rpartition(":")
        return cls.make(name, int(block))

    @property
    def key(self) -> str:
        return f"{self.fmt}:{self.block}"

    @property
    def bits(self) -> float:
        return float(get_format(self.fmt, self.block).bits_per_element)

    @property
    def format(self):
        return get_format(self.fmt, self.block)

    def __str__(self) -> str:
        return self.key


#: seed formats (docs/formats.md) at the grouping they are defined with; searched by default only
#: where the compiler builds hardware for them (``hardware_accepts``), so the space grows as their
#: kernels land (today: NVFP4, M2XFP and BitMoD as the weight of a linear; NVFP4, M2XFP and Anda as
#: activations made by a linear or a model input and read only by linears, checked site by site)
SEED_TYPES = {"nvfp4": 16, "m2xfp4_w": 32, "m2xfp4_a": 32, "bitmod_fp4": 128, "bitmod_fp3": 128, "anda4": 64}


@lru_cache(maxsize=None)
def hardware_accepts(name: str, block: int, linear_weight: bool = False, activation: bool = False) -> bool:
    """True when ``masec compile`` accepts format ``name`` at ``block`` (as a linear's weight when
    ``linear_weight``; as an activation tensor when ``activation``, where a seed activation format is
    then still checked against the tensor's producer and readers, :meth:`Space.check_seed_acts`):
    asks assign_formats, the pass that refuses formats without hardware."""
    from masec.errors import MasecError
    from masec.passes.transform.assign_formats import _check_hw_format

    try:
        try:
            _check_hw_format(name, block, "even", "search", linear_weight, activation)
        except TypeError:          # an assign_formats without per-port formats
            if activation:
                return False
            _check_hw_format(name, block, "even", "search")
    except MasecError:
        return False
    return True


def site_checked(c: "Candidate") -> bool:
    """A seed activation format (``nvfp4``, ``m2xfp4_a``, ``anda<M>``): accepted on an activation only
    where the compiler builds its producer and readers, so each activation group asks the compiler
    (:meth:`Space.check_seed_acts`) before it is offered."""
    return hardware_accepts(c.fmt, c.block, activation=True) and not hardware_accepts(c.fmt, c.block)


def default_types() -> tuple[str, ...]:
    """The OCP MX element types plus every seed format that has a hardware kernel (anywhere, as a
    linear's weight, or as an activation)."""
    return ELEMENT_TYPES + tuple(t for t, b in SEED_TYPES.items()
                                 if hardware_accepts(t, b) or hardware_accepts(t, b, True)
                                 or hardware_accepts(t, b, activation=True))


def allowed(c: "Candidate", kind: str, ops, act_ok=()) -> bool:
    """May candidate ``c`` be given to tensors of ``kind`` produced/used by ``ops``? A format the
    hardware takes only as a linear's weight is kept to weight groups of linears; a seed activation
    format (:func:`site_checked`) goes to an activation group only when its key is in ``act_ok``
    (the compiler accepted it there); every other candidate (also a software-only format the user
    asked for) goes everywhere."""
    if hardware_accepts(c.fmt, c.block):
        return True
    w = hardware_accepts(c.fmt, c.block, True)
    a = hardware_accepts(c.fmt, c.block, activation=True)
    if not (w or a):
        return True
    if kind == "weight":
        return w and all(op == "linear" for op in ops)
    return a and c.key in act_ok


def candidates(types=None, blocks=BLOCK_SIZES) -> list[Candidate]:
    """Every (type, block) pair, sorted by bits then name (deterministic). ``types=None``:
    ``default_types()``. A seed format (``SEED_TYPES``) comes at its own grouping only."""
    types = default_types() if types is None else types
    cands = set()
    for t in types:
        base = t.lower()
        if base in SEED_TYPES:
            cands.add(Candidate.make(t, SEED_TYPES[base]))
        else:
            cands.update(Candidate.make(t, b) for b in blocks)
    return sorted(cands, key=lambda c: (c.bits, c.fmt, c.block))


@dataclass
class Site:
    key: str                 # unique id: "weight:<path>" / "act:<path>"
    kind: str                # "weight" | "act"
    path: str | None         # module path (weights) / producing node's path (acts); None = untraceable
    op: str                  # canonical op: linear/embedding for weights, the producer's op for acts
    numel: int               # elements of the tensor (activations: per call on example_inputs)
    aliases: tuple[str, ...] = ()     # other module paths sharing this weight
    consumers: tuple[str, ...] = ()   # linear module paths whose input this activation is
    layer: str = ""

    @property
    def paths(self) -> tuple[str, ...]:
        return ((self.path,) if self.path else ()) + self.aliases


@dataclass
class Space:
    sites: list[Site]
    groups: dict[str, list[str]]             # group key -> site keys (sorted)
    cands: list[Candidate]
    by: str
    traced: bool = True
    site_group: dict[str, str] = field(default_factory=dict)
    #: group -> keys of the seed activation candidates the compiler accepts there (check_seed_acts)
    seed_acts: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self):
        self.site_group = {s: g for g, ss in self.groups.items() for s in ss}
        self.by_key = {s.key: s for s in self.sites}
        self.total_numel = sum(s.numel for s in self.sites)
        self._cands_by_group: dict[str, list[Candidate]] = {}

    def group_numel(self, g: str) -> int:
        return sum(self.by_key[s].numel for s in self.groups[g])

    def group_kind(self, g: str) -> str:
        return self.by_key[self.groups[g][0]].kind

    def cands_for(self, g: str) -> list[Candidate]:
        """The candidates group ``g`` may take (``allowed``: linear-weight-only formats are kept
        to weight groups of linears, seed activation formats to the activation groups where the
        compiler accepted them, ``seed_acts``)."""
        hit = self._cands_by_group.get(g)
        if hit is None:
            sites = [self.by_key[s] for s in self.groups[g]]
            hit = [c for c in self.cands
                   if allowed(c, sites[0].kind, {s.op for s in sites}, self.seed_acts.get(g, ()))]
            self._cands_by_group[g] = hit
        return hit

    def check_seed_acts(self, refusal) -> dict[str, dict[str, str | None]]:
        """Offer each seed activation candidate (:func:`site_checked`) to the activation groups
        where ``masec compile`` builds it: ``refusal(site_assignment)`` (the compiler's own check,
        ``Emulator.refusal``: assign_formats and, with lanes, kernel selection) gets the group's
        sites in the candidate, every other tensor in the precision file's ``[default]``; None
        means accepted. A group never asked (no check, e.g. the ``linear`` emulation) gets none.
        Returns {group: {candidate key: None or the compiler's refusal}}."""
        seeds = [c for c in self.cands if site_checked(c)]
        verdicts: dict[str, dict[str, str | None]] = {}
        for g, ss in self.groups.items():
            if not seeds or self.group_kind(g) != "act":
                continue
            verdicts[g] = {c.key: refusal({s: c for s in ss}) for c in seeds}
        self.seed_acts = {g: tuple(k for k, why in v.items() if why is None) for g, v in verdicts.items()}
        self.seed_acts = {g: v for g, v in self.seed_acts.items() if v}
        self._cands_by_group.clear()
        return verdicts

    def expand(self, assignment: dict[str, Candidate]) -> dict[str, Candidate]:
        """Group assignment -> site assignment."""
        return {s: assignment[g] for g, ss in self.groups.items() for s in ss}

    def avg_bits(self, assignment: dict[str, Candidate]) -> float:
        """Average bits per element over all sites, weighted by tensor size (incl. the block scale)."""
        tot = sum(self.group_numel(g) * c.bits for g, c in assignment.items())
        return tot / max(self.total_numel, 1)

    def uniform(self, cand: Candidate) -> dict[str, Candidate]:
        return {g: cand for g in self.groups}

    def to_keys(self, assignment: dict[str, Candidate]) -> dict[str, str]:
        return {g: assignment[g].key for g in sorted(assignment)}

    def from_keys(self, keys: dict[str, str]) -> dict[str, Candidate]:
        return {g: Candidate.parse(keys[g]) for g in self.groups}


# --------------------------------------------------------------------------------------------
# discovery

_SHAPE_FUNCS = {"view", "reshape", "transpose", "permute", "contiguous", "flatten", "squeeze", "unsqueeze",
                "to", "float", "type_as", "clone", "detach"}


def _module_ops() -> dict:
    try:
        from masec.frontend import MODULE_OPS
        return dict(MODULE_OPS)
    except Exception:  # pragma: no cover - frontend being rewritten
        ops = {nn.Linear: "linear", nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Softmax: "softmax",
               nn.LayerNorm: "layer_norm", nn.Embedding: "embedding"}
        if hasattr(nn, "RMSNorm"):
            ops[nn.RMSNorm] = "rms_norm"
        return ops


def _function_ops() -> tuple[dict, dict]:
    try:
        from masec.frontend import FUNCTION_OPS, METHOD_OPS
        return dict(FUNCTION_OPS), dict(METHOD_OPS)
    except Exception:  # pragma: no cover
        import torch.nn.functional as F
        return ({F.linear: "linear", operator.add: "add", operator.mul: "mul", torch.matmul: "matmul",
                 operator.matmul: "matmul", F.silu: "silu", F.softmax: "softmax"},
                {"add": "add", "mul": "mul", "matmul": "matmul", "softmax": "softmax"})


def _is_relu(gm, node, module_ops, func_ops, meth_ops) -> bool:
    if node.op == "call_module":
        return _module_op(gm.get_submodule(node.target), module_ops) == "relu"
    if node.op == "call_function":
        return func_ops.get(node.target, getattr(node.target, "__name__", "")) in ("relu", "relu_")
    if node.op == "call_method":
        return meth_ops.get(node.target, str(node.target)) in ("relu", "relu_")
    return False


def _producer(gm, node, module_ops, func_ops, meth_ops):
    """(path, op) of the node producing ``node``, skipping shape-only ops and relu: the hardware's relu
    passes its input's codes on (assign_formats gives it its input's format), so the stream's format
    is its producer's."""
    seen = 0
    while seen < 64:
        seen += 1
        if node.op == "call_method" and node.target in _SHAPE_FUNCS and node.args:
            node = node.args[0]
            continue
        if node.op == "call_function" and getattr(node.target, "__name__", "") in _SHAPE_FUNCS and node.args:
            node = node.args[0]
            continue
        if node.args and isinstance(node.args[0], torch.fx.Node) and _is_relu(gm, node, module_ops, func_ops,
                                                                               meth_ops):
            node = node.args[0]
            continue
        break
    if node.op == "placeholder":
        return str(node.target), "input"
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        op = next((o for t, o in module_ops.items() if isinstance(mod, t)), type(mod).__name__.lower())
        return str(node.target), op
    if node.op == "call_function":
        return node.name, func_ops.get(node.target, getattr(node.target, "__name__", "function"))
    if node.op == "call_method":
        return node.name, meth_ops.get(node.target, str(node.target))
    return node.name, node.op


def layer_of(path: str | None) -> str:
    """The layer a path belongs to: up to the first numeric component (``layers.3``), else its first
    component; ``model`` for top-level tensors."""
    if not path:
        return "model"
    parts = path.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0] if len(parts) > 1 else "model"


def linear_producers(model: nn.Module) -> tuple[dict[str, tuple[str, str]] | None, str]:
    """{linear module path: (producer path, producer op)} via torch.fx, or (None, reason)."""
    import torch.fx as fx

    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # untraceable: one activation group
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    module_ops = _module_ops()
    func_ops, meth_ops = _function_ops()
    out: dict[str, tuple[str, str]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Linear) and node.args:
            arg = node.args[0]
            if isinstance(arg, fx.Node):
                out.setdefault(str(node.target), _producer(gm, arg, module_ops, func_ops, meth_ops))
    return out, ""


_CLASS_OPS = {"rmsnorm": "rms_norm", "layernorm": "layer_norm", "silu": "silu", "gelu": "gelu", "relu": "relu",
              "softmax": "softmax", "embedding": "embedding", "linear": "linear"}


def _module_op(mod, module_ops) -> str:
    for t, o in module_ops.items():
        if isinstance(mod, t):
            return o
    name = type(mod).__name__.lower().replace("_", "")
    return _CLASS_OPS.get(name, type(mod).__name__.lower())


def _tensor_key(t: torch.Tensor):
    return (t.data_ptr(), t.numel(), t.dtype, t.device)


def discover_sites(model: nn.Module, example_inputs: tuple) -> tuple[list[Site], bool, str]:
    """Weight and activation sites of ``model`` (activation sizes measured on ``example_inputs``).

    Activation producers come from torch.fx; for a model fx cannot trace, from one forward pass:
    a linear input that is (a view of) some module's output is named after that module; the rest
    (outputs of functions) share one group."""
    weights: dict[int, Site] = {}
    order: list[int] = []
    linears: list[str] = []
    for path, mod in model.named_modules(remove_duplicate=False):
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            if isinstance(mod, nn.Linear) and path not in linears:
                linears.append(path)
            p = mod.weight
            op = "linear" if isinstance(mod, nn.Linear) else "embedding"
            if id(p) in weights:
                s = weights[id(p)]
                if path != s.path and path not in s.aliases:
                    s.aliases = s.aliases + (path,)
                continue
            weights[id(p)] = Site(f"weight:{path}", "weight", path, op, p.numel(), layer=layer_of(path))
            order.append(id(p))
    # one forward: activation sizes at every linear, and which module produced each linear input
    module_ops = _module_ops()
    sizes: dict[str, int] = {}
    runtime_producer: dict[str, tuple[str, str]] = {}
    produced: dict[tuple, tuple[str, str]] = {}
    keep_alive: list[torch.Tensor] = []
    mods = dict(model.named_modules(remove_duplicate=False))
    handles = []
    for path in linears:
        def pre(_m, args, path=path):
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                sizes.setdefault(path, args[0].numel())
                hit = produced.get(_tensor_key(args[0]))
                if hit is not None:
                    runtime_producer.setdefault(path, hit)
        handles.append(mods[path].register_forward_pre_hook(pre))
    for path, mod in mods.items():
        if not path:
            continue

        def post(m, args, out, path=path):
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                keep_alive.append(out)
                op = _module_op(m, module_ops)
                src = produced.get(_tensor_key(args[0])) if op == "relu" and args and \
                    isinstance(args[0], torch.Tensor) else None     # relu passes its input's codes on
                produced.setdefault(_tensor_key(out), src or (path, op))
        handles.append(mod.register_forward_hook(post))
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    keep_alive.clear()
    producers, why = linear_producers(model)
    if producers is None:
        producers = runtime_producer
    acts: dict[str, Site] = {}
    for path in linears:
        if path not in sizes:
            continue  # never called on the example inputs
        if path in producers:
            ppath, pop = producers[path]
            key = f"act:{ppath}"
            if key not in acts:
                # a function node's name says nothing of its layer: use its first consumer's
                acts[key] = Site(key, "act", ppath, pop, sizes[path], layer=layer_of(path))
            acts[key].consumers = acts[key].consumers + (path,)
        else:
            key = f"act:in:{path}"
            acts[key] = Site(key, "act", None, "linear_input", sizes[path], consumers=(path,), layer=layer_of(path))
    sites = [weights[i] for i in order] + list(acts.values())
    return sites, why == "", why


def build_space(sites: list[Site], by: str = "node", cands: list[Candidate] | None = None,
                traced: bool = True) -> Space:
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    groups: dict[str, list[str]] = {}
    for s in sites:
        if s.kind == "act" and s.path is None:
            g = "act:linear_inputs"          # untraceable: one group, written as [default] act
        elif by == "node":
            g = s.key
        elif by == "layer":
            g = f"{s.kind}:{s.layer}"
        else:
            g = f"{s.kind}:{s.op}"
        groups.setdefault(g, []).append(s.key)
    groups = {g: sorted(v) for g, v in sorted(groups.items())}
    return Space(sites, groups, cands if cands is not None else candidates(), by, traced)
