"""assign_formats: give every tensor port of every canonical node its MX number format.

Reads ``NodeMeta.op``/``.path``/``.shape`` and the config's :class:`masec.precision.Precision`
(``--precision FILE.toml`` or ``--format``). Writes ``NodeMeta.formats``: ``"out"`` for every
float activation (model inputs and node outputs), ``"weight"``/``"bias"`` for parameter ports.

Rules beyond the precision file, each forced by what the hardware streams:

* Layout ops (``view``, ``gather_rows``) and ``relu`` pass codes through: their output has their
  input's format.
* Block sizes are tied where kernels stream two tensors block for block: through layout ops, the
  operands and result of ``add``/``mul``, the input and output of one-input kernels
  (norms, activations, softmax, RoPE), and a linear's weight with its input. A tied group takes
  the smallest requested block; a ``view`` that changes the last axis (head split/merge) needs a
  block dividing both last dims, so the group's block shrinks to the largest power of two that
  does (e.g. head_dim 8 -> blocks of 8 for q, k, v and the attention output).
* Only formats with hardware kernels are accepted: OCP MX (E8M0 scales) everywhere, and the seed
  weight formats ``m2xfp4_w``, ``nvfp4``, ``bitmod_fp4``, ``bitmod_fp3`` as the weight of a linear
  (``mx_linear``'s WFMT datapaths); others are refused naming the node and port. A linear with a
  seed-format weight keeps its bias in the node's activation format (its input's when that is a
  seed activation format, ``mxint8`` when both are); a BitMoD weight's group is not tied to the
  input's block (the kernel needs the group to be a multiple of it).
* Seed activation formats (``nvfp4``, ``m2xfp4_a``, ``anda<M>``) are accepted on a tensor that
  is made by a model input (the testbench / AXI side quantizes it), by a linear's, an RMSNorm's or
  an element-wise mul's output stage (``mx_linear``'s / ``mx_rmsnorm``'s ``Y_QFMT``, ``mx_mul``'s
  ``OUT_QFMT``: :func:`norm_act_support`, :func:`mul_act_support`) or by a
  code-transparent op on such a tensor (``view``; ``relu``,
  :data:`RELU_EXACT`), and that is read only by linears
  (``XFMT`` decode), matmuls (either operand, ``mx_matmul``'s ``AFMT``/``BFMT`` decode), such ops and
  model outputs; what ``mx_linear`` and ``mx_matmul`` build is asked from their ``instance_config``
  (:func:`linear_act_support`, :func:`matmul_act_support`). Anything else is refused naming the node, the
  port and what to do. An NVFP4 activation's tensor scale is set later (``calibrate_tensor_scales``).

    gm, changed = assign_formats(gm, config)   # changed is False the second time
"""
from __future__ import annotations

from functools import lru_cache

from masec.errors import MasecError
from masec.meta import TensorFormat, meta, set_meta
from masec.ops import OPS

_TRANSPARENT = {"view", "gather_rows", "relu"}
_TIED_IO = {"rms_norm", "layer_norm", "gelu", "silu", "softmax", "rope", "relu", "view", "gather_rows", "gelu_tanh"}


def _pow2_divisor(n: int) -> int:
    return n & -n


#: seed formats with a hardware datapath, and where (op, port)
SEED_WEIGHT_FORMATS = ("m2xfp4_w", "nvfp4", "bitmod_fp4", "bitmod_fp3")


def seed_weight_format(f) -> bool:
    """True for a parsed format mx_linear takes as a seed weight format."""
    return getattr(f, "name", None) in SEED_WEIGHT_FORMATS and not (f.name == "nvfp4" and not f.tensor_scale)


#: seed activation formats ``mx_relu`` takes exactly: it zeroes a code with its sign bit set and keeps
#: the block scale (exact for NVFP4's and Anda's sign-magnitude codes); for M2XFP (``M2X = 1``) it
#: also sets a subgroup's metadata to 1 when its refined top-1 lane was negative.
RELU_EXACT = ("nvfp4", "anda", "m2xfp4_a")


def _act_family(name: str) -> str:
    return "anda" if name.startswith("anda") else name


@lru_cache(maxsize=None)
def norm_act_support(name: str, block: int) -> bool:
    """Whether ``mx_rmsnorm``'s output stage emits seed activation format ``name`` at ``block``
    (``Y_QFMT``), asked from its ``instance_config`` (a ValueError means no)."""
    from masec.formats import parse_format
    from masec.hw_templates.kernels import mx_norm

    f = parse_format(name, block_size=block)
    mx = parse_format("mxint8", block_size=block)
    try:
        mx_norm.instance_config("rmsnorm", block, mx, f, mx, min(8, block),
                                y_ts_exp=0 if f.name == "nvfp4" else None)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=None)
def mul_act_support(name: str, block: int) -> bool:
    """Whether ``mx_mul``'s output stage emits seed activation format ``name`` at ``block``
    (``OUT_QFMT``; the operands stay MX), asked from its ``instance_config``."""
    from masec.formats import parse_format
    from masec.hw_templates.kernels import mx_eltwise

    f = parse_format(name, block_size=block)
    mx = parse_format("mxint8", block_size=block)
    try:
        mx_eltwise.instance_config((block,), mx, mx, f, min(8, block), op="mul",
                                   y_ts_exp=0 if f.name == "nvfp4" else None)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=None)
def linear_act_support(name: str, block: int) -> tuple[bool, bool]:
    """``(produced, consumed)``: whether ``mx_linear`` builds seed activation format ``name`` at
    ``block`` as its output (``Y_QFMT``) and as its input x (``XFMT``), asked from its
    ``instance_config`` (a ValueError means no)."""
    from masec.formats import parse_format
    from masec.hw_templates.kernels import mx_linear

    f = parse_format(name, block_size=block)
    mx = parse_format("mxint8", block_size=block)
    ts = 0 if f.name == "nvfp4" else None
    p = min(8, block)
    out = []
    for kw in ({"out_fmt": f, "x_fmt": mx, "y_ts_exp": ts}, {"out_fmt": mx, "x_fmt": f, "x_ts_exp": ts}):
        try:
            mx_linear.instance_config(block, block, w_fmt=mx, has_bias=False, p_in=p, p_out=p, **kw)
            out.append(True)
        except ValueError:
            out.append(False)
    return out[0], out[1]


@lru_cache(maxsize=None)
def matmul_act_support(name: str, block: int) -> bool:
    """Whether ``mx_matmul`` decodes seed activation format ``name`` at ``block`` as an operand
    (``AFMT``/``BFMT``), asked from its ``instance_config`` (a ValueError means no)."""
    from masec.formats import parse_format
    from masec.hw_templates.kernels import mx_matmul

    f = parse_format(name, block_size=block)
    mx = parse_format("mxint8", block_size=block)
    ts = 0 if f.name == "nvfp4" else None
    p = min(8, block)
    try:
        mx_matmul.instance_config(block, block, block, f, f, mx, True, p, p, p, a_ts_exp=ts, b_ts_exp=ts)
    except ValueError:
        return False
    return True


def _check_hw_format(name: str, block: int, rounding: str, where: str, linear_weight: bool = False,
                     activation: bool = False) -> str:
    """The canonical name of format ``name`` if masec builds hardware for it at this port, else a
    MasecError naming ``where``. ``activation``: an activation tensor, where the seed activation
    formats are accepted here and checked against their producer and readers by :func:`_check_seed_acts`."""
    from masec.formats import FormatError, parse_format
    from masec.formats.mx import MXFormat
    from masec.lowering.base import seed_activation

    try:
        f = parse_format(name, block_size=block, rounding=rounding)
    except (FormatError, ValueError) as exc:
        raise MasecError(f"{where}: format {name!r}: {exc}") from None
    if activation and seed_activation(f):
        return f.name
    if seed_weight_format(f):
        if linear_weight:
            return f.name
        raise MasecError(f"{where}: format {name!r} has hardware only as the weight of a linear "
                         f"(mx_linear); give this port an MX format (e.g. [op.<op>] weight = \"mxint8\")")
    if seed_activation(f):
        raise MasecError(f"{where}: format {name!r} is built only for activations (streams into and out of "
                         f"linears), not for parameters; give this port an MX format (e.g. weight = \"mxint8\")")
    if not isinstance(f, MXFormat):
        raise MasecError(f"{where}: format {name!r} has no hardware kernels yet (masec builds OCP MX formats "
                         f"with E8M0 block scales: mxint<k>, mxfp_e<E>m<M>, mxfp8_e4m3, mxfp4 ...); "
                         f"it is available in masec.formats for software studies")
    return f.name


def _is_seed(name: str) -> bool:
    return name in SEED_WEIGHT_FORMATS


def _is_seed_act(name: str) -> bool:
    return _act_family(name) in ("nvfp4", "m2xfp4_a", "anda")


#: the bias of a seed-weight linear whose output and input are both seed activation formats
SEED_BIAS_FALLBACK = "mxint8"


def _mx_bias(out, x):
    """The bias format of a linear with a seed-format weight (mx_linear adds an MX bias): its output's
    activation format, or its input's when the output is a seed activation format, or
    :data:`SEED_BIAS_FALLBACK` when both are (the report shows the bias format)."""
    for cand in (out, x):
        if cand is not None and not _is_seed_act(cand[0]):
            return cand
    return (SEED_BIAS_FALLBACK, out[1])


def _where(node) -> str:
    m = meta(node)
    return f"node `{node.name}` ({m.op}{', ' + m.source if m.source else ''})"


def _check_seed_acts(nodes) -> None:
    """Refuse a seed activation format where no kernel makes or reads it (see the module docstring)."""
    for node in nodes:
        m = meta(node)
        f = m.formats.get("out")
        if f is None or not _is_seed_act(f.name):
            continue
        fam = _act_family(f.name)
        fix = f"give it an MX act format (e.g. [node.\"{m.path or node.name}\"] act = \"mxint8\")"
        if node.op == "placeholder":
            pass
        elif m.op == "linear":
            if not linear_act_support(f.name, f.block_size)[0]:
                raise MasecError(f"{_where(node)}: port out: mx_linear's output stage does not emit {f.name} "
                                 f"in blocks of {f.block_size}; {fix}")
        elif m.op == "rms_norm":
            if not norm_act_support(f.name, f.block_size):
                raise MasecError(f"{_where(node)}: port out: mx_rmsnorm's output stage does not emit {f.name} "
                                 f"in blocks of {f.block_size}; {fix}")
        elif m.op == "mul":
            if not mul_act_support(f.name, f.block_size):
                raise MasecError(f"{_where(node)}: port out: mx_mul's output stage does not emit {f.name} "
                                 f"in blocks of {f.block_size}; {fix}")
        elif m.op == "relu":
            if fam not in RELU_EXACT:
                raise MasecError(f"{_where(node)}: port out: mx_relu is not built for {f.name} streams; "
                                 f"give its producer `{node.args[0].name}` an MX act format")
        elif m.op != "view":
            raise MasecError(f"{_where(node)}: port out: {f.name} is made only by a linear's, an RMSNorm's or a "
                             f"mul's output stage or a model input (or passed on by view/relu); {fix}")
        for u in node.users:
            um = meta(u) if u.op != "output" else None
            if u.op == "output" or um.op in ("view", "relu"):
                continue
            if um.op == "linear" and u.args[0] is node:
                if not linear_act_support(f.name, f.block_size)[1]:
                    raise MasecError(f"{_where(u)}: port x: mx_linear does not decode {f.name} in blocks of "
                                     f"{f.block_size}; give `{node.name}` an MX act format")
                continue
            if um.op == "matmul" and node in u.args[:2]:   # either operand (B also when transposed)
                port = "a" if u.args[0] is node else "b"
                if not matmul_act_support(f.name, f.block_size):
                    raise MasecError(f"{_where(u)}: port {port}: mx_matmul does not decode {f.name} in blocks of "
                                     f"{f.block_size}; give `{node.name}` an MX act format")
                continue
            raise MasecError(f"{_where(u)}: reads `{node.name}` in {f.name}, a seed activation format that only a "
                             f"linear's input and a matmul's operands decode; give `{node.name}` an MX act format "
                             f"(e.g. [node.\"{m.path or node.name}\"] act = \"mxint8\")")


def _stream_consumer(node):
    """The first canonical node that reads constant ``node`` as a stream argument, or None."""
    for u in node.users:
        op = meta(u).op
        if op in OPS and any(u.args[i] is node for i in OPS[op].streams if i < len(u.args)):
            return u
    return None


def assign_formats(gm, config):
    prec = config.precision()
    rounding = config.rounding
    nodes = list(gm.graph.nodes)
    want: dict = {}
    parent: dict = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def tie(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    block_of: dict = {}   # tensor key -> requested block
    cap: dict = {}        # tensor key -> largest block the layout allows
    for node in nodes:
        m = meta(node)
        names = tuple(x for x in (m.path, node.name) if x)
        where = f"node `{node.name}` ({m.op}{', ' + m.source if m.source else ''})"
        f = {}
        if node.op == "placeholder":
            if m.dtype and not m.dtype.startswith("float"):
                want[node] = {}
                continue
            fmt, block = prec.resolve("input", names, "act")
            f["out"] = (_check_hw_format(fmt, block, rounding, where, activation=True), block)
        elif node.op == "get_attr" and _stream_consumer(node) is not None:
            # a constant streamed into a kernel (stream_rom): the act format of its consumer
            u = _stream_consumer(node)
            un = tuple(x for x in (meta(u).path, u.name) if x)
            fmt, block = prec.resolve(meta(u).op, un, "act")
            f["out"] = (_check_hw_format(fmt, block, rounding, where, activation=True), block)
        elif m.op in OPS:
            if m.op not in _TRANSPARENT:
                fmt, block = prec.resolve(m.op, names, "act")
                f["out"] = (_check_hw_format(fmt, block, rounding, where, activation=True), block)
            for pos, port in OPS[m.op].params:
                present = len(node.args) > pos and node.args[pos] is not None
                if port in ("weight", "bias") and present:
                    fmt, block = prec.resolve(m.op, names, "weight")
                    f[port] = (_check_hw_format(fmt, block, rounding, where, m.op == "linear"), block)
            if m.op == "linear" and "bias" in f and _is_seed(f["weight"][0]):
                # mx_linear adds an MX bias; the seed format is for W only
                x = node.args[0]
                while meta(x).op in _TRANSPARENT:
                    x = x.args[0]
                f["bias"] = _mx_bias(f["out"], want.get(x, {}).get("out"))
        if m.op == "embedding":
            f["out"] = f["weight"]   # the kernel streams the table's own codes
        want[node] = f
        for port, (_, block) in f.items():
            block_of[(node, port)] = block

    # ties
    for node in nodes:
        m = meta(node)
        if m.op not in OPS:
            continue
        streams = [node.args[i] for i in OPS[m.op].streams]
        if m.op in _TIED_IO:
            tie((node, "out"), (streams[0], "out"))
            for port in want.get(node, {}):   # a norm's weight and bias stream beside x, block for block
                if port != "out":
                    tie((node, port), (node, "out"))
        if m.op in ("add", "mul"):
            tie((streams[0], "out"), (node, "out"))
            tie((streams[1], "out"), (node, "out"))
        if m.op == "linear" and not want[node]["weight"][0].startswith("bitmod"):
            tie((node, "weight"), (streams[0], "out"))
        if m.op == "embedding":
            tie((node, "weight"), (node, "out"))
        if m.op == "view":
            a, b = meta(streams[0]).shape[-1], m.shape[-1]
            if a != b:
                cap[(node, "out")] = min(_pow2_divisor(a), _pow2_divisor(b))
    groups: dict = {}
    for key in list(block_of) + list(cap):
        groups.setdefault(find(key), []).append(key)
    group_block = {}
    for root, keys in groups.items():
        blocks = [block_of[k] for k in keys if k in block_of]
        caps = [cap[k] for k in keys if k in cap]
        group_block[root] = min(blocks + caps) if blocks + caps else 32

    changed = False
    for node in nodes:
        m = meta(node)
        formats = {}
        if m.op in _TRANSPARENT:
            src = meta(node.args[0]).formats.get("out")
            if src is None:
                raise MasecError(f"node `{node.name}` ({m.op}): its input has no MX format (an integer stream "
                                 f"can only feed an embedding)")
            formats["out"] = TensorFormat(src.name, group_block[find((node, "out"))], -1, src.rounding)
        for port, (fmt, _) in want.get(node, {}).items():
            formats[port] = TensorFormat(fmt, group_block[find((node, port))], -1, rounding)
        if m.formats != formats:
            set_meta(node, m.with_(formats=formats))
            changed = True
    _check_seed_acts(nodes)
    return gm, changed
