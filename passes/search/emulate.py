"""Fast float emulation of an assignment: the model computed with the hardware's number formats.

Two modes (``Emulator(model, space, mode=...)``):

``"hardware"`` (the default): what ``masec compile`` builds. The model is exported and
canonicalized once per input shape (the compiler's own front end: ``export``, ``canonicalize``,
``normalize``, ``shape_prop``); an assignment becomes the precision file the search would write
(:func:`spec_from_assignment`), and the compiler's ``assign_formats`` pass gives every tensor
port its format, with the hardware's block ties (a head split forcing blocks of 8, a norm's gain
tied to its stream, ...). The canonical graph then runs in float with a fake quantizer (the
``masec.formats`` object of the port's format) after every node that makes a stream -- linears,
matmuls, softmax, norms, RoPE, SiLU/GELU, add/mul, the embedding, float model inputs, streamed
constants -- and with every parameter port (linear weights and biases, norm gains) quantized in
its format. Layout ops (view, gather_rows) and relu pass codes through, as in hardware. Each
kernel's result is its exact float result rounded once into the output format; on stories260K at
uniform mxint8 that equals the bit-exact kernel models for every element of embedding, linear,
matmul, add, mul and gather_rows, and for all but 0.05-0.3 % of elements of rms_norm, softmax,
RoPE and SiLU, whose kernels compute internally in fixed point (tables, base-2 exponentials).

``"linear"``: the former quick emulation: weights of nn.Linear/nn.Embedding and the inputs of
nn.Linear only (forward pre-hooks). It misses every other stream (bench/search_gap.py measured
+2.4 % emulated vs +16.5 % hardware-exact perplexity at one stories260K point); it remains for
models masec cannot compile.

A partial assignment (the sensitivity analysis quantizes one group, the rest float) quantizes
exactly the ports whose format comes from an assigned site; ports left to the precision file's
``[default]`` stay float. ``apply({})`` (or ``restore()``) gives the user's float model back.

    with Emulator(model, space, example_inputs=inputs) as emu:
        emu.apply(site_assignment)         # site key -> Candidate
        evaluate(model)                    # model(...) now runs the emulated canonical graph
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from types import SimpleNamespace

import torch
import torch.fx as fx
import torch.nn as nn
import torch.utils._pytree as pytree

from masec.errors import MasecError
from masec.passes.search.precision_file import PrecisionSpec, Section
from masec.passes.search.space import Candidate, Space

log = logging.getLogger("masec.search")

MODES = ("hardware", "linear")
_EMULATORS = itertools.count()
#: the two fills of ``[default]`` that tell assigned ports from defaulted ones in a partial assignment
_FILL_A, _FILL_B = ("mxint8", 32), ("mxint6", 32)


def _move(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_move(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _move(v, device) for k, v in x.items()}
    return x


def spec_from_assignment(space: Space, site_assign: dict[str, Candidate],
                         base: tuple[str, int] = ("mxint8", 32)) -> PrecisionSpec:
    """The precision file of a site assignment: [default] = ``base``; one [node] per assigned
    tensor (sites missing from ``site_assign`` get no section)."""
    spec = PrecisionSpec(default=Section(act=base[0], weight=base[0], block_size=base[1]))
    per_node: dict[str, dict[str, Candidate]] = {}
    for s in space.sites:
        c = site_assign.get(s.key)
        if c is None:
            continue
        if s.path is None:      # untraceable model: all linear inputs share [default] act
            spec.default.act = c.fmt
            if c.block != base[1]:
                spec.default.act_block_size = c.block
            continue
        for p in s.paths:
            per_node.setdefault(p, {})[s.kind] = c
    for path, ports in per_node.items():
        sec = Section()
        for kind, c in ports.items():
            setattr(sec, kind, c.fmt)
        blocks = {c.block for c in ports.values()}
        if len(blocks) == 1:
            sec.block_size = blocks.pop()
        else:
            sec.act_block_size = ports["act"].block
            sec.weight_block_size = ports["weight"].block
        spec.node[path] = sec
    return spec


class MXFakeQuant:
    """``MXFormat.quantize`` for the emulation's hot path: the same float32 operations
    (masec/formats/mx.py, steps 1-4 of its docstring) on the whole tensor at once, with the
    element's constants computed once, so the result is bit-identical (tests/passes/search/
    test_search_emulate.py checks every searched element type and block) at a fraction of the
    Python overhead. Blocks run along the last axis; inputs must be finite (the kernels compute
    finite values only). Other formats (NVFP4, BitMoD, ...) use their own ``quantize``."""

    def __init__(self, fmt):
        from masec.formats.mx import MXFormat

        if not isinstance(fmt, MXFormat) or fmt.axis not in (-1,) or fmt.rounding not in ("even", "trunc"):
            raise ValueError(f"MXFakeQuant: {getattr(fmt, 'name', fmt)} is not an MX format along the last axis "
                             f"with rounding even/trunc")
        el = fmt.element
        self.fmt = fmt
        self.block = fmt.block_size
        self.is_int = el.kind == "int"
        self.m = el.mbits
        self.emax = el.emax
        self.emin_field = el.emin + 127
        self.max_code = float(el.max_code)
        self.max_normal = float(el.max_normal)
        self.round = torch.round if fmt.rounding == "even" else torch.trunc

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from masec.formats.mx import pow2_f32

        shape, b = x.shape, self.block
        x = x.to(torch.float32)
        n = shape[-1] if x.dim() else 1
        pad = -n % b
        xb = (torch.nn.functional.pad(x, (0, pad)) if pad else x).reshape(-1, b)
        amax = xb.abs().amax(-1).view(torch.int32)
        ef = amax >> 23
        fl = torch.where(ef == 0, torch.where(amax == 0, -126, -127), ef - 127)
        e = (fl - self.emax).clamp_(-127, 127).unsqueeze(-1)
        if self.is_int:
            o = xb * pow2_f32((self.m - e).clamp_max(127))
            lo = (self.m - e - 127).clamp_min(0)
            if bool((lo > 0).any()):
                o = o * pow2_f32(lo)
            o = self.round(o).clamp_(-self.max_code, self.max_code)
            o = o * pow2_f32(e - self.m)
        else:
            o = xb * pow2_f32(-e)
            k = (o.view(torch.int32) >> 23).bitwise_and_(0xFF).clamp_(min=self.emin_field)
            o = o * ((254 + self.m - k) << 23).view(torch.float32)
            o = self.round(o)
            o = o * ((k - self.m) << 23).view(torch.float32)
            o = o.clamp_(-self.max_normal, self.max_normal) * pow2_f32(e)
        o = o.add_(0.0).reshape(*shape[:-1], n + pad) if x.dim() else o.reshape(-1)
        return (o[..., :n] if pad else o).reshape(shape)


def fake_quant(fmt):
    """The fastest exact ``fmt.quantize`` (``MXFakeQuant`` for MX formats)."""
    try:
        return MXFakeQuant(fmt)
    except ValueError:
        return fmt.quantize


def stream_quant(tf):
    """The quantizer of an activation stream in TensorFormat ``tf``, as the compiled design makes it.
    MX formats: :func:`fake_quant`. A seed activation format: M2XFP and Anda with the format
    library's ``quantize`` (what mx_quantize's QFMT modes emit for float32 values,
    tests/compiler/test_seed_activations.py); NVFP4 with the compile-time tensor scale ``2^tf.ts_exp``
    (calibrate_tensor_scales) through the compiler's own stream model (``MXValue.from_float``,
    mx_quantize's ``quantize_blocks_nvfp4``), not the library's ``amax / 2688`` of each tensor."""
    f = tf.parse()
    if getattr(f, "name", None) == "nvfp4" and tf.ts_exp is not None:
        from masec.lowering.base import MXValue

        def q(x):
            return MXValue.from_float(x.detach().cpu(), tf).to_float().to(x.device)
        return q
    return fake_quant(f)


class FakeQuant(nn.Module):
    """Rounds its input into ``fmt`` (a TensorFormat, or a masec.formats object; None = identity)."""

    def __init__(self):
        super().__init__()
        self.fmt = None
        self._q = None

    def set_format(self, fmt) -> None:
        self.fmt = fmt
        if fmt is None:
            self._q = None
        elif hasattr(fmt, "parse"):
            self._q = stream_quant(fmt)
        else:
            self._q = fake_quant(fmt)

    def forward(self, x):
        if self._q is None:
            return x
        return self._q(x).to(x.dtype)


#: one-input ops whose kernels compute internally in fixed point (tables, base-2 exponentials,
#: fixed-point rsqrt); ``exact_ops`` runs their bit-exact kernel models instead of float + rounding
EXACT_OPS = ("rms_norm", "layer_norm", "softmax", "rope", "silu", "gelu", "gelu_tanh")


class ExactKernel(nn.Module):
    """A node computed by its kernel's bit-exact model (``Lowering.reference``) on the CPU: the
    input (already on its format's grid) is encoded, the model runs, the output is decoded. For
    diagnosing the emulation (``Emulator(exact_ops=...)``, bench/search_gap.py); slow."""

    def __init__(self, gm, node, fn):
        super().__init__()
        object.__setattr__(self, "gm", gm)
        object.__setattr__(self, "node", node)
        self.fn = fn
        self.formats = None      # {port: TensorFormat} of the node; None = float
        self.in_fmt = None       # TensorFormat of its input stream

    def forward(self, x, *rest):
        if self.formats is None or "out" not in self.formats:
            return self.fn(x, *rest)
        from masec.lowering import MXValue, lowering_for
        from masec.meta import KernelChoice, meta, set_meta

        node = self.node
        saved = meta(node)
        set_meta(node, saved.with_(formats=dict(self.formats), kernel=KernelChoice("", "", lanes_in=4, lanes_out=4)))
        try:
            xv = MXValue.from_float(x.detach().float().cpu(), self.in_fmt)
            y = lowering_for(node).reference(self.gm, node, [xv]).to_float()
        finally:
            set_meta(node, saved)
        return y.to(x.device, x.dtype)


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class CanonicalGraph:
    """The canonical graph of ``model`` for one input shape, with a fake quantizer after every
    stream and a replaceable copy of every quantized parameter port."""

    def __init__(self, model: nn.Module, inputs: tuple, device: torch.device, exact_ops=()):
        from masec.frontend import export, normalize
        from masec.ops import OPS
        from masec.passes.analysis.shape_prop import shape_prop
        from masec.passes.transform.canonicalize import canonicalize

        with torch.no_grad():     # the user's output structure (the canonical graph returns a flat tuple)
            self.out_spec = pytree.tree_structure(model(*inputs))
        gm = export(model, inputs, "model.py")
        canonicalize(gm, inputs)
        normalize(gm, "model.py")
        shape_prop(gm, inputs)
        self.gm = gm
        self.inputs = tuple(inputs)       # on the CPU; calibrate_tensor_scales runs gm on them
        self.shapes = tuple(tuple(t.shape) for t in inputs if isinstance(t, torch.Tensor))
        # the emulation graph: a copy of gm's graph with quantizers and per-port parameter copies
        emu = nn.Module()
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        self.quant: dict[str, str] = {}           # canonical node name -> its FakeQuant submodule
        self.params: dict[tuple[str, str], str] = {}   # (node, port) -> buffer name
        self.floats: dict[tuple[str, str], torch.Tensor] = {}
        self._const: dict[str, str] = {}
        self.exact: dict[str, str] = {}            # canonical node name -> its ExactKernel submodule
        self._op_nodes: dict[str, fx.Node] = {}      # canonical node name -> its op node in the emulation graph
        self._taps: dict[str, nn.Module] | None = None
        for n in gm.graph.nodes:
            m = n.meta.get("masec")
            if n.op == "get_attr":
                if n.target not in self._const:
                    name = f"c{len(self._const)}"
                    emu.register_buffer(name, _attr(gm, n.target).detach().clone())
                    self._const[n.target] = name
                new = g.get_attr(self._const[n.target])
            elif n.op == "call_function" and m is not None and m.op in OPS:
                args = [fx.map_arg(a, lambda x: env[x]) for a in n.args]
                for pos, port in OPS[m.op].params:
                    a = n.args[pos] if pos < len(n.args) else None
                    if port in ("weight", "bias") and isinstance(a, fx.Node) and a.op == "get_attr":
                        name = f"p{len(self.params)}"
                        t = _attr(gm, a.target).detach().clone()
                        emu.register_buffer(name, t.clone())
                        self.params[(n.name, port)] = name
                        self.floats[(n.name, port)] = t
                        args[pos] = g.get_attr(name)
                if m.op in exact_ops:
                    kname = f"k{len(self.exact)}"
                    emu.add_module(kname, ExactKernel(gm, n, n.target))
                    self.exact[n.name] = kname
                    new = g.call_module(kname, tuple(args), fx.map_arg(n.kwargs, lambda x: env[x]))
                else:
                    new = g.call_function(n.target, tuple(args), fx.map_arg(n.kwargs, lambda x: env[x]))
            else:
                new = g.node_copy(n, lambda x: env[x])
            new.meta = {}
            env[n] = new
            self._op_nodes[n.name] = new
            if n.op == "output":
                continue
            makes_stream = (n.op == "placeholder" or (n.op == "get_attr" and m is not None)
                            or (m is not None and m.op in OPS and not OPS[m.op].layout and m.op != "relu"
                                and n.name not in self.exact))
            if makes_stream:
                qname = f"q{len(self.quant)}"
                emu.add_module(qname, FakeQuant())
                self.quant[n.name] = qname
                with g.inserting_after(new):
                    q = g.call_module(qname, (new,))
                env[n] = q
        mod = fx.GraphModule(emu, g)
        mod.graph.eliminate_dead_code()     # the parameters' original get_attr nodes
        mod.recompile()
        used = {n.target for n in mod.graph.nodes if n.op == "get_attr"}
        for name in [b for b, _ in mod.named_buffers()]:
            if name not in used:
                delattr(mod, name)
        self.module = mod.to(device)
        self.device = device
        self._cache: dict[tuple, torch.Tensor] = {}
        self._configured = None

    # ------------------------------------------------------------------------------------------
    def formats(self, spec: PrecisionSpec, calibrate: bool = True) -> dict[tuple[str, str], object]:
        """(node, port) -> TensorFormat for every port, from the compiler's assign_formats, with every
        NVFP4 activation's tensor scale from its calibrate_tensor_scales on the inputs this graph was
        built for (the Emulator replaces them by the example inputs' ones, as ``masec compile``)."""
        from masec.precision import Precision
        from masec.passes.transform.assign_formats import assign_formats
        from masec.passes.transform.calibrate_tensor_scales import calibrate_tensor_scales

        cfg = SimpleNamespace(precision=lambda: Precision(spec), rounding="even")
        assign_formats(self.gm, cfg)
        if calibrate:
            calibrate_tensor_scales(self.gm, self.inputs)
        out = {}
        for n in self.gm.graph.nodes:
            m = n.meta.get("masec")
            if m is not None:
                for port, f in m.formats.items():
                    out[(n.name, port)] = f
        return out

    def taps(self) -> dict[str, nn.Module]:
        """node name -> a ``gptq.Tap`` on the input of every linear with a replaceable weight (inserted
        once; disarmed they pass their input through)."""
        if self._taps is None:
            from masec.passes.transform.gptq import Tap

            self._taps = {}
            g = self.module.graph
            ops = {n.name: getattr(n.meta.get("masec"), "op", None) for n in self.gm.graph.nodes}
            for (node, port) in self.params:
                if port != "weight" or ops.get(node) != "linear":
                    continue
                op = self._op_nodes[node]
                tname = f"t{len(self._taps)}"
                self.module.add_module(tname, Tap())
                with g.inserting_before(op):
                    t = g.call_module(tname, (op.args[0],))
                op.update_arg(0, t)
                self._taps[node] = getattr(self.module, tname)
            self.module.recompile()
        return self._taps

    def configure(self, key, formats: dict, overrides: dict | None = None) -> None:
        """Arm the quantizers and write the quantized parameters for ``formats`` ((node, port) ->
        TensorFormat; a missing port stays float). ``overrides``: (node, port) -> the parameter's
        value, already on its format's grid (GPTQ-rounded weights); ``key`` None always configures."""
        if key is not None and key == self._configured:
            return
        overrides = overrides or {}
        mods = dict(self.module.named_modules())
        for node, qname in self.quant.items():
            mods[qname].set_format(formats.get((node, "out")))
        for node, kname in self.exact.items():
            k = mods[kname]
            ports = {port: f for (nn_, port), f in formats.items() if nn_ == node}
            k.formats = ports if "out" in ports else None
            k.in_fmt = formats.get((k.node.args[0].name, "out"))
            if k.in_fmt is None:     # a float input (partial assignment): the float op
                k.formats = None
        with torch.no_grad():
            for (node, port), bname in self.params.items():
                f = formats.get((node, port))
                buf = getattr(self.module, bname)
                if f is None:
                    buf.copy_(self.floats[(node, port)].to(buf.device))
                    continue
                if (node, port) in overrides:
                    buf.copy_(overrides[(node, port)].to(buf.device, buf.dtype))
                    continue
                ck = (node, port, f)
                q = self._cache.get(ck)
                if q is None:
                    fq = fake_quant(f.parse())
                    w = self.floats[(node, port)]   # MX on the device; other formats on the CPU
                    q = (fq(w.to(self.device)) if isinstance(fq, MXFakeQuant) else fq(w)).to(buf.device, buf.dtype)
                    self._cache[ck] = q
                buf.copy_(q)
        self._configured = key

    def run(self, inputs):
        with torch.no_grad():
            out = self.module(*_move(tuple(inputs), self.device))
        leaves = pytree.tree_leaves(out)
        return pytree.tree_unflatten(leaves, self.out_spec) if len(leaves) == self.out_spec.num_leaves else out


class Emulator:
    """``weight_rounding="gptq"`` (hardware mode): every linear weight is rounded by GPTQ in its format
    (passes/transform/gptq.py) on ``calibration`` (input tuples), in the same sequential order and on
    the same emulation graph as ``masec compile --weight-rounding gptq``; W' is cached per (linear,
    weight format, formats of everything upstream of it)."""

    def __init__(self, model: nn.Module, space: Space, device: str = "cpu", cache_elems: int = 50_000_000,
                 example_inputs=None, mode: str = "hardware", exact_ops=(), graph_cache: dict | None = None,
                 weight_rounding: str = "nearest", calibration=None):
        if mode not in MODES:
            raise MasecError(f"emulation {mode!r}: use one of {', '.join(MODES)}")
        from masec.passes.transform.gptq import SequentialGPTQ, check_mode

        self.weight_rounding = check_mode(weight_rounding)
        if weight_rounding == "gptq":
            if mode != "hardware":
                raise MasecError("--weight-rounding gptq needs the hardware emulation (masec must compile the model)")
            if not calibration:
                raise MasecError("--weight-rounding gptq needs `calibration_data` in the model file (an iterable "
                                 "of input tuples)")
        self.calibration = [tuple(b) for b in calibration] if calibration else []
        self._gptq = SequentialGPTQ()
        self._gptq_specs: dict = {}
        self._ancestors: dict = {}
        self._gptq_parts = None
        self._uid = next(_EMULATORS)      # names this emulator's GPTQ weights in a shared graph's configure key
        self.model = model
        self.space = space
        self.mode = mode
        bad = sorted(set(exact_ops) - set(EXACT_OPS))
        if bad:
            raise MasecError(f"exact_ops {bad}: the bit-exact models run for {', '.join(EXACT_OPS)} only")
        self.exact_ops = tuple(exact_ops)
        self.device = torch.device(device)
        self.example_inputs = tuple(example_inputs) if example_inputs is not None else None
        mods = dict(model.named_modules(remove_duplicate=False))
        self.params: dict[str, nn.Parameter] = {}
        self.floats: dict[str, torch.Tensor] = {}
        self._handles = []
        #: False while a caller that computes on the device (the sensitivity proxy) runs the model
        self.outputs_to_cpu = True
        self._building = False      # exporting a canonical graph on the CPU: the device hooks stand aside
        # hardware mode
        #: canonical graphs by input shapes; ``graph_cache`` shares them between emulators of one model
        #: (an export of a large model takes a while), e.g. the searches and rows of bench/search.py
        self._own_graphs = graph_cache is None
        self.graphs: dict[tuple, CanonicalGraph] = {} if graph_cache is None else graph_cache
        self._assign_key = None
        self._spec: tuple | None = None
        self._formats_cache: dict[tuple, dict] = {}
        self._patched = False
        # linear mode
        self._current: dict[str, Candidate | None] = {}
        self._cache: dict[tuple[str, Candidate], torch.Tensor] = {}
        self._cache_elems = 0
        self._cache_limit = cache_elems if self.device.type == "cpu" else max(cache_elems, 2_000_000_000)
        self.act_fmt: dict[str, object] = {}          # linear path -> format object (None = float)
        self._consumer_site: dict[str, str] = {}
        if mode == "linear":
            for s in space.sites:
                if s.kind == "weight":
                    p = mods[s.path].weight
                    self.params[s.key] = p
                    self.floats[s.key] = p.detach().clone()
            self._current = {k: None for k in self.params}
            for s in space.sites:
                if s.kind == "act":
                    for c in s.consumers:
                        self._consumer_site[c] = s.key
            for path in self._consumer_site:
                self._handles.append(mods[path].register_forward_pre_hook(self._hook(path)))
        # a model on another device: move inputs there and outputs back, so evaluate() is unchanged
        if self.device.type != "cpu":
            self.model.to(self.device)
            for k in self.floats:
                self.floats[k] = self.floats[k].to(self.device)
            self._handles.append(model.register_forward_pre_hook(
                lambda m, a, kw: None if self._building else (_move(a, self.device), _move(kw, self.device)),
                with_kwargs=True))
            self._handles.append(model.register_forward_hook(
                lambda m, a, out: _move(out, "cpu") if self.outputs_to_cpu and not self._building else out))
        if mode == "hardware" and self.example_inputs is not None:
            self._graph(self.example_inputs)    # fails here (one clear line) if masec cannot compile it

    # ---------------------------------------------------------------------------- hardware mode
    def _graph(self, inputs) -> CanonicalGraph:
        key = (id(self.model), str(self.device), self.exact_ops) + tuple(
            (tuple(t.shape), str(t.dtype)) if isinstance(t, torch.Tensor) else repr(t) for t in inputs)
        g = self.graphs.get(key)
        if g is None:
            cpu_inputs = tuple(_move(tuple(inputs), "cpu"))
            patched = self._patched
            self._unpatch()
            on = self.device
            if on.type != "cpu":
                self.model.to("cpu")
            self._building = True
            try:
                g = CanonicalGraph(self.model, cpu_inputs, self.device, self.exact_ops)
            finally:
                self._building = False
                if on.type != "cpu":
                    self.model.to(on)
                if patched:
                    self._patch()
            log.info("emulation: canonical graph for inputs %s: %d quantized streams, %d quantized parameter "
                     "ports", list(g.shapes), len(g.quant), len(g.params))
            self.graphs[key] = g
        return g

    def _formats_for(self, g: CanonicalGraph) -> dict:
        spec_key, complete = self._spec
        ck = (id(g), spec_key)
        hit = self._formats_cache.get(ck)
        if hit is not None:
            return hit
        site_assign = dict(spec_key)
        a = self._calibrated(g, spec_from_assignment(self.space, site_assign, _FILL_A))
        if complete:
            fm = a
        else:   # ports decided by [default] differ between the two fills: those stay float
            b = self._calibrated(g, spec_from_assignment(self.space, site_assign, _FILL_B))
            fm = {k: f for k, f in a.items() if b.get(k) == f}
        if len(self._formats_cache) > 4096:
            self._formats_cache.clear()
        self._formats_cache[ck] = fm
        return fm

    def _calibrated(self, g: CanonicalGraph, spec: PrecisionSpec) -> dict:
        """``g.formats(spec)`` with every NVFP4 activation's tensor scale as ``masec compile`` sets it:
        calibrated on the model file's example inputs (their graph's node of the same name), also
        when ``g`` was exported for other inputs."""
        eg = self._graph(self.example_inputs) if self.example_inputs is not None else g
        if eg is g:
            return g.formats(spec)
        fm = g.formats(spec, calibrate=False)
        if not any(f.name == "nvfp4" and k[1] == "out" for k, f in fm.items()):
            return fm
        ref = eg.formats(spec)
        if any(f.name == "nvfp4" and k[1] == "out" and getattr(ref.get(k), "ts_exp", None) is None
               for k, f in fm.items()):
            log.warning("emulation: an NVFP4 activation has no twin in the example inputs' graph; tensor scales "
                        "calibrated on the evaluated inputs")
            return g.formats(spec)
        return {k: replace(f, ts_exp=ref[k].ts_exp) if f.name == "nvfp4" and k[1] == "out" else f
                for k, f in fm.items()}

    def _forward(self, *inputs, **kwargs):
        if kwargs:
            raise MasecError("the hardware emulation calls the model with positional inputs only; "
                             f"got keyword arguments {sorted(kwargs)}")
        g = self._graph(inputs)
        over = self.gptq_weights() if self.weight_rounding == "gptq" else None
        # the key names the rounding: emulators sharing a graph cache may round the same assignment differently
        g.configure((self._spec, self.weight_rounding, self._uid if over else None), self._formats_for(g),
                    overrides=over)
        return g.run(inputs)

    def gptq_weights(self) -> dict:
        """(node, "weight") -> GPTQ-rounded W' of every linear weight of the current assignment."""
        hit = self._gptq_specs.get(self._spec)
        if hit is not None:
            return hit
        from masec.passes.transform.gptq import graph_parts

        if self._gptq_parts is None:
            self._gptq_parts = graph_parts(self.model, self.calibration, self.device, graph=self._graph)
        parts = self._gptq_parts
        g0 = parts[0][0]
        fm = self._formats_for(g0)
        anc = self._ancestors.get(id(g0))
        if anc is None:      # node -> names of every node upstream of its input
            up: dict = {}
            for n in g0.gm.graph.nodes:
                s = set()
                for a in n.all_input_nodes:
                    s |= up[a.name]
                    s.add(a.name)
                up[n.name] = frozenset(s)
            anc = self._ancestors[id(g0)] = up
        by_node: dict = {}
        for k, f in fm.items():
            by_node.setdefault(k[0], []).append((k[1], f))

        def upstream(n):
            return tuple(sorted((a, tuple(sorted(by_node.get(a, ()), key=lambda t: t[0]))) for a in anc[n]))
        w = self._gptq.run(parts, fm, upstream_key=upstream)
        out = {(n, "weight"): t for n, t in w.items()}
        if len(self._gptq_specs) > 256:
            self._gptq_specs.clear()
        self._gptq_specs[self._spec] = out
        return out

    def _patch(self):
        if not self._patched:
            self.model.forward = self._forward      # an instance attribute: model(...) and model.forward(...)
            self._patched = True

    def _unpatch(self):
        if self._patched:
            del self.model.forward
            self._patched = False

    # ------------------------------------------------------------------------------ linear mode
    def _hook(self, path):
        def pre(_mod, args):
            fmt = self.act_fmt.get(path)
            if fmt is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                return None
            x = args[0]
            with torch.no_grad():
                q = fmt.quantize(x.detach()).to(x.dtype)
            return (q,) + tuple(args[1:])
        return pre

    def _quantized(self, key: str, cand: Candidate) -> torch.Tensor:
        hit = self._cache.get((key, cand))
        if hit is not None:
            return hit
        w = self.floats[key]
        q = cand.format.quantize(w).to(w.dtype)
        if self._cache_elems + q.numel() <= self._cache_limit:
            self._cache[(key, cand)] = q
            self._cache_elems += q.numel()
        return q

    # ---------------------------------------------------------------------------------- common
    @torch.no_grad()
    def apply(self, site_assignment: dict[str, Candidate | None]) -> None:
        """Quantize per ``site_assignment`` (site key -> candidate; missing or None = float32).
        Hardware mode: an assignment of every site also quantizes what the precision file leaves
        to its ``[default]`` (mxint8, block 32), as ``masec compile`` does."""
        if self.mode == "hardware":
            assign = {k: c for k, c in site_assignment.items() if c is not None}
            if not assign:
                self._spec = None
                self._unpatch()
                return
            complete = all(s.key in assign for s in self.space.sites)
            self._spec = (tuple(sorted(assign.items())), complete)
            self._patch()
            return
        for key, p in self.params.items():
            cand = site_assignment.get(key)
            if cand == self._current[key]:
                continue
            p.data.copy_(self.floats[key] if cand is None else self._quantized(key, cand))
            self._current[key] = cand
        self.act_fmt = {}
        for path, skey in self._consumer_site.items():
            cand = site_assignment.get(skey)
            if cand is not None:
                self.act_fmt[path] = cand.format

    def refusal(self, site_assignment: dict[str, Candidate], parallelism: int | None = None) -> str | None:
        """Why ``masec compile`` would refuse this assignment (e.g. a format without hardware kernels
        on an activation), or None. Hardware mode only (linear mode accepts every format). The
        compiler's passes on the precision file the search would write: assign_formats and
        calibrate_tensor_scales; with ``parallelism`` also fold and select_kernels as
        ``masec compile --parallelism N`` runs them (each kernel's instance_config: e.g. an M2XFP
        activation stream needs a multiple of 8 lanes). The graph's records are put back after."""
        if self.mode != "hardware":
            return None
        g = self._graph(self.example_inputs) if self.example_inputs is not None else next(iter(self.graphs.values()))
        saved = {n: n.meta.get("masec") for n in g.gm.graph.nodes}
        try:
            g.formats(spec_from_assignment(self.space, site_assignment))
            if parallelism is not None:
                from masec.passes.hw.fold import fold
                from masec.passes.transform.select_kernels import select_kernels

                from masec.config import CompileConfig

                cfg = CompileConfig(model_file="", out="", parallelism=int(parallelism))
                fold(g.gm, cfg)
                select_kernels(g.gm, cfg)
        except MasecError as exc:
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        finally:
            for n, m in saved.items():
                if m is not None:
                    n.meta["masec"] = m
        return None

    def restore(self) -> None:
        self.apply({})

    def close(self) -> None:
        self.restore()
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._own_graphs:
            self.graphs.clear()
        if self.device.type != "cpu":
            self.model.to("cpu")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
