"""Linear -> ``mx_linear``: weights and bias MX-encoded into on-chip ROMs, exact block dot
products, the kernel's bounded floating accumulator, output re-quantized to the node's format.
Seed weight formats (m2xfp4_w, nvfp4, bitmod_fp4/fp3) use the kernel's WFMT datapaths
(:func:`mx_linear.weight_image`, :func:`mx_linear.seed_linear_model`); the bias stays MX. Seed
activation formats (nvfp4, m2xfp4_a, anda<M>) are decoded on x (``XFMT``) and emitted on y
(``Y_QFMT``); an NVFP4 activation's tensor scale is its ``TensorFormat.ts_exp``."""
from __future__ import annotations

import re

import torch
import torch.fx as fx

from masec.errors import MasecError
from masec.hw_templates.kernels import mx_linear
from masec.lowering.base import Lowering, MXValue, config_error, register, rows_of
from masec.meta import KernelChoice, meta


def _param(gm, node, index: int, attr: str):
    """Weight (index 1, attr 'weight') or bias (index 2, 'bias') of a linear node, or None."""
    if node.op == "call_module":
        return getattr(gm.get_submodule(node.target), attr)
    arg = node.args[index] if len(node.args) > index else node.kwargs.get(attr)
    if arg is None:
        return None
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        obj = gm
        for part in arg.target.split("."):
            obj = getattr(obj, part)
        return obj
    raise MasecError(f"node `{node.name}`: the {attr} of a linear must be a model parameter "
                     f"(an nn.Linear, or F.linear on a registered parameter), not a computed tensor")


def _mem_name(node, what: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', node.name)}_{what}.mem"


@register
class LinearLowering(Lowering):
    op = "linear"
    kernel = "mx_linear"

    def tensor_args(self, node) -> list:
        return [node.args[0]]

    def _operands(self, gm, node):
        w = _param(gm, node, 1, "weight").detach().to(torch.float32)
        b = _param(gm, node, 2, "bias")
        return w, (b.detach().to(torch.float32) if b is not None else None)

    def choose(self, gm, node, config) -> KernelChoice:
        m = meta(node)
        w, b = self._operands(gm, node)
        out_f, in_f = w.shape
        x_tf = meta(node.args[0]).formats["out"]
        x_fmt = x_tf.parse()
        p = config.parallelism
        try:
            wf = m.formats["weight"].parse()
            ts = None
            if mx_linear.weight_kind(wf) == "nvfp4":
                img = mx_linear.weight_image(wf, wf.encode(w), x_tf.block_size, in_f)
                ts = (img.ts_sig, img.ts_exp)
            instance = mx_linear.instance_config(
                in_f, out_f, x_fmt, wf, m.formats["out"].parse(), b is not None,
                p_in=p, p_out=p, b_fmt=m.formats["bias"].parse() if b is not None else None,
                w_mem=_mem_name(node, "w"), ws_mem=_mem_name(node, "ws"), b_mem=_mem_name(node, "b"), ts=ts,
                x_ts_exp=x_tf.ts_exp, y_ts_exp=m.formats["out"].ts_exp)
        except ValueError as exc:
            raise config_error(node, "linear", exc, (x_tf.name, m.formats["out"].name), p) from None
        return self.choice(node, instance, p, mx_linear.ideal_cycles(rows_of(m.shape), in_f, out_f, p, p))

    def _encoded(self, gm, node):
        m = meta(node)
        w, b = self._operands(gm, node)
        wf = m.formats["weight"].parse()
        we = wf.encode(w)
        be = m.formats["bias"].parse().encode(b) if b is not None else None
        return w, wf, we, be

    def reference(self, gm, node, inputs: list[MXValue]) -> MXValue:
        """mx_linear's bit-exact model: x decoded as the kernel's XFMT reads it (MX, or a seed activation
        format: :func:`mx_linear.decode_x_stream`), y quantized by its output stage (MX or Y_QFMT)."""
        from masec.hw_templates.kernels.mx_quantize import output_format_params

        (x,) = inputs
        m = meta(node)
        w, wf, we, be = self._encoded(gm, node)
        out_fmt = m.formats["out"]
        xt = mx_linear.decode_x_stream(x.fmt.parse(), x.codes, x.scales, x.meta, x.fmt.ts_exp)
        y_qfmt, y_elem = output_format_params(out_fmt.parse())
        bf = m.formats["bias"].parse().element if be is not None else None
        bc = be.codes.to(torch.int64) if be is not None else None
        bs = be.scales.to(torch.int64) if be is not None else None
        common = dict(y_qfmt=y_qfmt, y_ts_exp=out_fmt.ts_exp or 0, x_sig=xt.sig, out_features=w.shape[0])
        if mx_linear.weight_kind(wf) != "mx":
            img = mx_linear.weight_image(wf, we, x.fmt.block_size, w.shape[1])
            y = mx_linear.seed_linear_model(xt.codes, xt.exps, xt.elem, img, bc, bs, bf, y_elem,
                                            out_fmt.block_size, **common)
        else:
            y = mx_linear.linear_model(xt.codes, xt.exps, xt.elem, we.codes.to(torch.int64),
                                       we.scales.to(torch.int64), wf.element, bc, bs, y_elem, out_fmt.block_size,
                                       b_elem=bf, **common)
        codes, scales, ymeta = y if y_qfmt else (*y, None)
        return MXValue(codes, scales, out_fmt, m.shape, ymeta)

    def memories(self, gm, node) -> dict[str, list[str]]:
        w, wf, we, be = self._encoded(gm, node)
        k = meta(node).kernel.params_dict
        out_f, in_f = w.shape
        if mx_linear.weight_kind(wf) != "mx":
            img = mx_linear.weight_image(wf, we, k["B"], in_f)
            w_lines, ws_lines = mx_linear.pack_seed_weight_mem(img, in_f, out_f, k["P_IN"], k["P_OUT"])
        else:
            w_lines, ws_lines = mx_linear.pack_weight_mem(we.codes, we.scales, wf.element, in_f, out_f,
                                                          wf.block_size, k["P_IN"], k["P_OUT"])
        mems = {k["W_MEM"]: w_lines, k["WS_MEM"]: ws_lines}
        if be is not None:
            bf = meta(node).formats["bias"].parse()
            mems[k["B_MEM"]] = mx_linear.pack_bias_mem(be.codes, be.scales, bf.element, out_f, k["P_OUT"])
        return mems
