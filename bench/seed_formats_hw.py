"""The seed weight formats in hardware: a 64x64 mx_linear per weight format, beside stories260K perplexity.

Usage: python bench/seed_formats_hw.py [--tokens N] [--only FMT ...] [--act-only] [--jobs N] [--doc-only]
                                      [--ppl-only] [--check]

Per weight format (x and y in MXINT8, 64 products per cycle: P_IN = P_OUT = 8, with bias):

* Yosys ``synth_xilinx`` of the kernel (``bench/kernel_resources.py: synthesize``, the manifest's
  example machinery): LUT, FF, DSP, BRAM; LUT per product = LUT / 64;
* cycles per input row: ``ceil(OUT/P_OUT) * ceil(IN/P_IN)`` (the kernel streams at this rate; the RTL
  tests check full rate against it);
* bits per weight incl. scales and metadata: the weight ROMs' bits (W_MEM + WS_MEM) / (64 * 64);
* perplexity of stories260K (TinyStories evaluation text) with every linear weight fake-quantized in
  that format (the format library's ``quantize``; activations float32). BitMoD uses groups of 64
  (stories260K's dim is 64), NVFP4 blocks of 16, the others blocks of 32.

Per seed ACTIVATION format (the same 64x64 linear, 64 products per cycle, with bias in MXINT8): x and y
both in ``nvfp4`` (tensor scales ``2^0``), ``m2xfp4_a`` or ``anda4`` (``XFMT`` / ``Y_QFMT``), once
with MXINT8 weights (in the activation's block: 16, 32, Anda's group 64) and once with the matching
seed weight format (nvfp4 x nvfp4, m2xfp4_a x m2xfp4_w; Anda has no weight form). Bits per activation
element incl. scale and metadata: the stream's data bits per lane plus its 8-bit scale bus per block
(``mx_linear.stream_widths``); the format's own figure (Anda's S is 5 bits) beside it; their own
front of (LUT per product, bits per activation, bits per weight) is stated.

Perplexity of the activation rows (``act_perplexities``): the search's emulation
(``passes/search/emulate.py``, ``mode="linear"``, the method of README's search table "no hardware"
rows) on ``examples/stories260k/model.py``: the row's weight format on the weight of every block linear
(wq, wk, wv, wo, w1, w2, w3, as the weight rows) and the row's activation format on the input of each of
them (``Format.quantize``; NVFP4's own per-tensor FP32 scale), the same evaluation tokens and windows as
the weight rows. The same emulation also gives each weight row with its kernel's x (MXINT8, block 32) on
those linear inputs ("perplexity, x as built"), so one Pareto front of (perplexity, LUT per product,
bits per activation, bits per weight) covers both tables. Check: the emulation with only the weights
quantized reproduces the weight rows' perplexity (``--check``).

Results: ``bench/results/seed_formats_hw.json`` and the table in ``docs/kernels.md`` between
``<!-- BEGIN seed_formats_hw -->`` and ``<!-- END seed_formats_hw -->``, with the Pareto front of
(perplexity, LUT per product, bits per weight).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from kernel_resources import synthesize  # noqa: E402
from table import print_table  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "seed_formats_hw.json"
DOC = ROOT / "docs" / "kernels.md"
BEGIN, END = "<!-- BEGIN seed_formats_hw -->", "<!-- END seed_formats_hw -->"
IN = OUT = 64
P = 8
# weight format, block (group) size
ROWS = (("mxint8", 32), ("mxfp8_e4m3", 32), ("mxfp4", 32), ("nvfp4", 16), ("m2xfp4_w", 32),
        ("bitmod_fp4", 64), ("bitmod_fp3", 64))
# activation rows: (x = y format, weight format, weight block or None for the format's own)
ACT_ROWS = (("nvfp4", "mxint8"), ("nvfp4", "nvfp4"), ("m2xfp4_a", "mxint8"), ("m2xfp4_a", "m2xfp4_w"),
            ("anda4", "mxint8"))
TS_EXP = 0   # NVFP4 x / y tensor scale 2^0
ACT_KEYS = ("lut_per_product", "bits_per_act", "bits_per_weight")   # the activation rows' front
ALL_KEYS = ("perplexity_x", "lut_per_product", "bits_per_act", "bits_per_weight")   # one front of both tables
SUM_KEYS = ("perplexity_x", "lut_per_product", "bits_per_product")   # bits/act + bits/weight: both operands
LINEARS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
EMULATION = ("the search's linear-only emulation (passes/search/emulate.py mode 'linear', as README's search "
             "table 'no hardware' rows): the weight of every block linear (wq wk wv wo w1 w2 w3) and its input "
             "fake-quantized, the rest float32")


def example(wname: str, block: int) -> dict:
    from masec.hw_templates.kernels import mx_linear

    label = f"64x64 mxint8 x {wname} P_IN8 P_OUT8"
    if wname.startswith("mx"):
        from masec.formats import parse_format
        ex = mx_linear.example_config(label, IN, OUT, "mxint8", wname, "mxint8", P, P, True)
        assert parse_format(wname).block_size == block
        return ex
    return mx_linear.seed_example_config(label, IN, OUT, "mxint8", wname, "mxint8", P, P, True, w_block=block)


def act_name(xname: str, wname: str) -> str:
    return f"{xname} x {wname}"


def act_example(xname: str, wname: str) -> dict:
    """x and y in ``xname``, W in ``wname`` (MX: in x's block), bias MXINT8 in x's block."""
    import math

    from masec.formats import parse_format
    from masec.hw_templates.kernels import mx_linear as ml

    ts = TS_EXP if xname == "nvfp4" else None
    label = f"64x64 {xname} x {wname} -> {xname} P_IN8 P_OUT8"
    if not wname.startswith("mx"):
        return ml.seed_example_config(label, IN, OUT, xname, wname, xname, P, P, True, x_ts_exp=ts, y_ts_exp=ts)
    x_fmt = parse_format(xname)
    block = ml.stream_block(x_fmt)
    w_fmt, b_fmt = parse_format(wname, block_size=block), parse_format("mxint8", block_size=block)
    _, params, _ = ml.instance_config(IN, OUT, x_fmt, w_fmt, x_fmt, True, P, P, b_fmt=b_fmt, x_ts_exp=ts,
                                      y_ts_exp=ts)
    g = torch.Generator().manual_seed(0)
    ew = w_fmt.encode(torch.randn(OUT, IN, generator=g) / math.sqrt(IN))
    w_lines, ws_lines = ml.pack_weight_mem(ew.codes, ew.scales, w_fmt.element, IN, OUT, block, P, P)
    g = torch.Generator().manual_seed(1)
    eb = b_fmt.encode(torch.randn(OUT, generator=g) * 0.1)
    b_lines = ml.pack_bias_mem(eb.codes, eb.scales, b_fmt.element, OUT, P)
    files = {params["W_MEM"]: "\n".join(w_lines) + "\n", params["WS_MEM"]: "\n".join(ws_lines) + "\n",
             params["B_MEM"]: "\n".join(b_lines) + "\n"}
    return {"label": label, "ctx": {}, "params": params, "files": files}


def act_bits(xname: str) -> tuple[float, float]:
    """(stream bits per element: data bits per lane + the 8-bit scale bus per block, the format's own)."""
    from masec.formats import parse_format
    from masec.hw_templates.kernels.mx_linear import stream_block, stream_widths

    f = parse_format(xname)
    data, scale = stream_widths(f, P)
    return data / P + scale / stream_block(f), float(f.bits_per_element)


def front(rows: list[dict], keys: tuple[str, ...]) -> list[str]:
    """Rows no other row beats in all of ``keys``."""
    return [r["format"] for r in rows
            if not any(all(o[k] <= r[k] for k in keys) and any(o[k] < r[k] for k in keys) for o in rows if o is not r)]


def rom_bits(ex: dict) -> int:
    """Bits in W_MEM + WS_MEM: words x word width (the width from the packer's hex digits is rounded up
    to a nibble, so take the SV widths)."""
    p = ex["params"]
    from masec.hw_templates.kernels.mx_linear import WFMT
    wfmt = p.get("WFMT", 0)
    npr, ninr = -(-OUT // p["P_OUT"]), -(-IN // p["P_IN"])
    nb = -(-IN // p["B"])
    wcw = p["P_OUT"] * p["P_IN"] * p["W_BITS"]
    if wfmt == WFMT["m2xfp"]:
        wcw += p["P_OUT"] * max(1, p["P_IN"] // 8) * 2
    wsl = {0: 8, 1: 8, 2: 7, 3: 17}[wfmt]
    ngs = -(-nb // (p["W_GROUP"] // p["B"])) if wfmt == WFMT["bitmod"] else nb
    return npr * ninr * wcw + npr * ngs * p["P_OUT"] * wsl


def perplexities(tokens: int, only=None) -> dict[str, float]:
    from masec.formats import parse_format
    from masec.models import llama2c, tinystories

    ck, tok = llama2c.stories260k()
    ids = tinystories.evaluation_ids(tok, tokens)

    def ppl(ckq):
        return tinystories.perplexity(lambda x: llama2c.forward(ckq, x[0].tolist()), ids, window=256)

    out = {"float32": ppl(ck)}
    names = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
    for wname, block in ROWS:
        if only and wname not in only:
            continue
        f = parse_format(wname, block_size=block)
        layers = [{k: (f.quantize(v) if k in names else v) for k, v in layer.items()} for layer in ck.layers]
        out[wname] = ppl(type(ck)(**{**ck.__dict__, "layers": layers}))
    return out


def act_perplexities(tokens: int, pairs, check: bool = False) -> dict[str, float]:
    """Perplexity per (x format, x block, weight format, weight block) in ``pairs`` under the search's
    linear-only emulation (``Emulator(mode="linear")``): W on every block linear's weight, x on its input.
    Keys ``"x:xb x w:wb"``; ``"float32"``; with ``check`` also ``"W w:wb"`` (weights only)."""
    from masec.models import llama2c, tinystories
    from masec.passes.search.cli import load_search_inputs
    from masec.passes.search.emulate import Emulator
    from masec.passes.search.space import Candidate, build_space, discover_sites

    ins = load_search_inputs(ROOT / "examples" / "stories260k" / "model.py")
    model = ins["model"]
    space = build_space(discover_sites(model, ins["example_inputs"])[0], "node")
    _, tok = llama2c.stories260k()
    ids = tinystories.evaluation_ids(tok, tokens)

    def linear(path):
        return path is not None and path.rsplit(".", 1)[-1] in LINEARS and path.startswith("layers.")

    wsites = [s.key for s in space.sites if s.kind == "weight" and linear(s.path)]
    asites = [s.key for s in space.sites if s.kind == "act" and s.consumers and all(map(linear, s.consumers))]
    layers = sum(1 for s in space.sites if s.path and s.path.endswith(".attention.wq"))
    # per block: 7 linear weights; 4 inputs (attention_norm -> q/k/v, attention -> wo, ffn_norm -> w1/w3, mul -> w2)
    assert (len(wsites), len(asites)) == (7 * layers, 4 * layers), (wsites, asites)
    out = {}
    with Emulator(model, space, mode="linear") as emu:
        def ppl(assign):
            emu.apply(assign)
            try:
                return tinystories.perplexity(lambda x: model(x), ids, window=256)
            finally:
                emu.restore()

        out["float32"] = ppl({})
        for xname, xb, wname, wb in pairs:
            wc = Candidate.make(wname, wb)
            assign = {k: wc for k in wsites}
            if check:
                out[f"W {wname}:{wb}"] = ppl(assign)
            if xname is not None:
                xc = Candidate.make(xname, xb)
                out[f"{xname}:{xb} x {wname}:{wb}"] = ppl({**assign, **{k: xc for k in asites}})
            print(f"  emulated {xname}:{xb} x {wname}:{wb}: {out.get(f'{xname}:{xb} x {wname}:{wb}')}"
                  + (f" (weights only: {out[f'W {wname}:{wb}']})" if check else ""), flush=True)
    return out


def emulated_pairs(rows: list[dict], act_rows: list[dict]) -> list[tuple]:
    """(x, x block, W, W block) of every row as its kernel is built: weight rows read MXINT8 x in blocks
    of 32; activation rows x = y in the row's format (its own grouping), W in the row's block (MX) or
    the seed weight format's own."""
    from masec.passes.search.space import SEED_TYPES

    pairs = [("mxint8", 32, r["format"], r["block"]) for r in rows]
    pairs += [(r["x"], SEED_TYPES[r["x"]], r["w"], r["block"] if r["w"].startswith("mx") else SEED_TYPES[r["w"]])
              for r in act_rows]
    return pairs


def attach_perplexities(data: dict, ppl: dict[str, float]) -> None:
    """Write the emulated perplexities into the rows: ``perplexity_x`` (x as built) on every row,
    ``perplexity`` of the activation rows (= their ``perplexity_x``); bits/act of the weight rows."""
    pairs = emulated_pairs(data["rows"], data["act_rows"])
    for r, (x, xb, w, wb) in zip(data["rows"] + data["act_rows"], pairs):
        r["perplexity_x"] = ppl[f"{x}:{xb} x {w}:{wb}"]
        r.setdefault("bits_per_act", act_bits("mxint8")[0])
    for r in data["rows"] + data["act_rows"]:
        r["bits_per_product"] = r["bits_per_act"] + r["bits_per_weight"]
    for r in data["act_rows"]:
        r["perplexity"] = r["perplexity_x"]
    data["perplexity_emulation"] = EMULATION
    data["perplexity_emulation_float32"] = ppl["float32"]
    data["pareto_all"] = front(data["rows"] + data["act_rows"], ALL_KEYS)
    data["pareto_sum"] = front(data["rows"] + data["act_rows"], SUM_KEYS)


def emulate_rows(data: dict, check: bool = False) -> None:
    """``act_perplexities`` of every row of ``data`` (on its tokens), attached to the rows; with ``check``
    the weights-only figures beside the weight rows' own as ``emulation_check``."""
    pairs = emulated_pairs(data["rows"], data["act_rows"])
    ppl = act_perplexities(data["tokens"], pairs, check)
    attach_perplexities(data, ppl)
    if check:
        own = {f"W {r['format']}:{r['block']}": r["perplexity"] for r in data["rows"]}
        data["emulation_check"] = {k: {"emulated_weights_only": ppl[k], "weight_row": v} for k, v in own.items()}
        for k, v in data["emulation_check"].items():
            print(f"  check {k}: {v}", flush=True)


def pareto(rows: list[dict]) -> list[str]:
    """Formats no other format beats in all of (perplexity, LUT per product, bits per weight)."""
    return front(rows, ("perplexity", "lut_per_product", "bits_per_weight"))


def markdown(data: dict) -> str:
    lines = [f"64x64 `mx_linear`, x and y MXINT8, bias, P_IN = P_OUT = 8 (64 products per cycle); Yosys "
             f"`synth_xilinx` ({data['yosys']}); perplexity of stories260K on {data['tokens']} TinyStories "
             f"tokens with every linear weight in the format (float32: {data['perplexity_float32']:.4f}). "
             f"`python bench/seed_formats_hw.py`.", "",
             "| weight format | block | LUT | FF | DSP | BRAM | cycles/row | bits/weight | LUT/product | perplexity "
             "| perplexity, x MXINT8 (emulated) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        px = f"{r['perplexity_x']:.4f}" if r.get("perplexity_x") is not None else "-"
        lines.append(f"| {r['format']} | {r['block']} | {r['LUT']} | {r['FF']} | {r['DSP']} | {r['BRAM']:g} | "
                     f"{r['cycles_per_row']} | {r['bits_per_weight']:.3f} | {r['lut_per_product']:.2f} | "
                     f"{r['perplexity']:.4f} | {px} |")
    lines += ["", f"Pareto front of (perplexity, LUT per product, bits per weight): "
                  f"{', '.join(data['pareto'])}."]
    if data.get("act_rows"):
        lines += ["", "Seed activation formats: the same 64x64 `mx_linear` (64 products per cycle, bias MXINT8), x "
                  "and y both in the activation format (`XFMT` decode, `Y_QFMT` quantizer; NVFP4 tensor scales "
                  f"2^{TS_EXP}), W in MXINT8 (in x's block) or the matching seed weight format. bits/act (stream): "
                  "data bits per lane + the 8-bit scale bus per block; (format): the format's own (Anda's S is "
                  "5 bits). Perplexity (emulated): " + data.get("perplexity_emulation", "not measured (\"-\")") +
                  (f"; the same tokens and windows as the weight rows (float32 under this emulation: "
                   f"{data['perplexity_emulation_float32']:.4f}); the last column of the weight rows is the same "
                   f"emulation with their kernel's x (MXINT8, block 32) on the linear inputs."
                   if data.get("perplexity_emulation") else "."), "",
                  "| x = y | W | block | LUT | FF | DSP | BRAM | cycles/row | bits/act (stream) | bits/act (format) "
                  "| bits/weight | LUT/product | perplexity |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["act_rows"]:
            lines.append(f"| {r['x']} | {r['w']} | {r['block']} | {r['LUT']} | {r['FF']} | {r['DSP']} | "
                         f"{r['BRAM']:g} | {r['cycles_per_row']} | {r['bits_per_act']:.3f} | "
                         f"{r['bits_per_act_format']:.3f} | {r['bits_per_weight']:.3f} | "
                         f"{r['lut_per_product']:.2f} | "
                         f"{'-' if r.get('perplexity') is None else format(r['perplexity'], '.4f')} |")
        lines += ["", "Front of (LUT per product, bits/act (stream), bits/weight) among the activation rows: "
                      f"{', '.join(data['act_pareto'])}."]
        if data.get("pareto_all"):
            lines += ["", "Pareto front of (perplexity with x as built (emulated), LUT per product, bits/act (stream), "
                          "bits/weight) over both tables (weight rows: x MXINT8, 8.250 bits/act): "
                          f"{', '.join(data['pareto_all'])}; of (perplexity with x as built, LUT per product, "
                          f"bits/act + bits/weight): {', '.join(data['pareto_sum'])}."]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + block + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n## Seed weight formats in hardware\n\n" + block + "\n"
    DOC.write_text(doc)


def act_measure(args, prev: dict, tmp: Path) -> list[dict]:
    """Synthesize the activation rows (``args.jobs`` at a time); rows not selected are kept from ``prev``."""
    from concurrent.futures import ThreadPoolExecutor

    old = {r["format"]: r for r in prev.get("act_rows", [])}
    sel = [(x, w) for x, w in ACT_ROWS
           if not (args.only and act_name(x, w) not in args.only) and (args.act_only or not args.only)]

    def one(xw):
        x, w = xw
        ex = act_example(x, w)
        rec = synthesize("mx_linear", ex, tmp / f"act_{x}_{w}", args.timeout)
        if "error" in rec:
            raise SystemExit(f"{act_name(x, w)}: {rec['error']}")
        p = ex["params"]
        bits, fbits = act_bits(x)
        r = {"format": act_name(x, w), "x": x, "y": x, "w": w, "block": p["B"], "LUT": rec["LUT"], "FF": rec["FF"],
             "DSP": rec["DSP"], "BRAM": rec["BRAM"], "LUTRAM": rec["LUTRAM"], "CARRY": rec["CARRY"],
             "cycles_per_row": -(-OUT // p["P_OUT"]) * -(-IN // p["P_IN"]),
             "bits_per_act": bits, "bits_per_act_format": fbits,
             "bits_per_weight": rom_bits(ex) / (IN * OUT),
             "lut_per_product": rec["LUT"] / (p["P_IN"] * p["P_OUT"]), "perplexity": None,
             "params": {k: v for k, v in p.items() if k not in ("W_MEM", "WS_MEM", "B_MEM")},
             "synth_seconds": rec.get("seconds")}
        print(f"{r['format']}: {r}", flush=True)
        return r

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        new = {r["format"]: r for r in pool.map(one, sel)}
    return [new.get(act_name(x, w)) or old[act_name(x, w)] for x, w in ACT_ROWS
            if act_name(x, w) in new or act_name(x, w) in old]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8 * 256 + 1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--only", nargs="*", default=None, help="measure only these formats; keep the other rows of the JSON")
    ap.add_argument("--act-only", action="store_true",
                    help="measure only the activation rows (all, or those named by --only as 'x x w'); keep the "
                         "weight rows and perplexities of the JSON")
    ap.add_argument("--jobs", type=int, default=1, help="activation-row syntheses run in parallel")
    ap.add_argument("--doc-only", action="store_true",
                    help="measure nothing: recompute the fronts of the JSON's rows, rewrite it and the docs table")
    ap.add_argument("--ppl-only", action="store_true",
                    help="only the emulated perplexities (every row with x as built); keep the JSON's syntheses")
    ap.add_argument("--check", action="store_true",
                    help="also emulate each row with only its weights quantized (reproduces the weight rows' "
                         "perplexity); recorded as emulation_check")
    args = ap.parse_args()
    if args.ppl_only:
        data = json.loads(RESULTS.read_text())
        emulate_rows(data, args.check)
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")
        write_doc(markdown(data))
        print(f"front over both tables: {data['pareto_all']}; wrote {RESULTS} and {DOC}")
        return
    if args.doc_only:
        data = json.loads(RESULTS.read_text())
        data["pareto"] = pareto(data["rows"])
        data["act_pareto"] = front(data.get("act_rows", []), ACT_KEYS)
        if all(r.get("perplexity_x") is not None for r in data["rows"] + data.get("act_rows", [])):
            for r in data["rows"] + data["act_rows"]:
                r["bits_per_product"] = r["bits_per_act"] + r["bits_per_weight"]
            data["pareto_all"] = front(data["rows"] + data["act_rows"], ALL_KEYS)
            data["pareto_sum"] = front(data["rows"] + data["act_rows"], SUM_KEYS)
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")
        write_doc(markdown(data))
        print(f"fronts: {data['pareto']}; activation rows: {data['act_pareto']}; wrote {RESULTS} and {DOC}")
        return
    from masec.synth import _yosys_version

    prev = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.act_only:
        if not prev:
            raise SystemExit(f"--act-only needs {RESULTS} (the weight rows)")
        ppl = {"float32": prev["perplexity_float32"]}
        args.tokens = prev["tokens"]
    else:
        ppl = perplexities(args.tokens, args.only)
    old = {r["format"]: r for r in prev.get("rows", [])} if (args.only or args.act_only) else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for wname, block in ROWS:
            if args.act_only or (args.only and wname not in args.only):
                if wname in old:
                    rows.append(old[wname])
                continue
            ex = example(wname, block)
            rec = synthesize("mx_linear", ex, Path(tmp) / wname, args.timeout)
            if "error" in rec:
                raise SystemExit(f"{wname}: {rec['error']}")
            p = ex["params"]
            rows.append({"format": wname, "block": block, "LUT": rec["LUT"], "FF": rec["FF"], "DSP": rec["DSP"],
                         "BRAM": rec["BRAM"], "LUTRAM": rec["LUTRAM"], "CARRY": rec["CARRY"],
                         "cycles_per_row": -(-OUT // p["P_OUT"]) * -(-IN // p["P_IN"]),
                         "bits_per_weight": rom_bits(ex) / (IN * OUT),
                         "lut_per_product": rec["LUT"] / (p["P_IN"] * p["P_OUT"]),
                         "perplexity": ppl[wname], "synth_seconds": rec.get("seconds")})
            print(f"{wname}: {rows[-1]}", flush=True)
        act_rows = act_measure(args, prev, Path(tmp))
    data = {"kernel": "mx_linear", "in": IN, "out": OUT, "p_in": P, "p_out": P, "x": "mxint8", "y": "mxint8",
            "yosys": _yosys_version(),
            "tokens": args.tokens, "perplexity_float32": ppl["float32"], "rows": rows,
            "pareto": pareto(rows), "act_rows": act_rows,
            "act_pareto": front(act_rows, ACT_KEYS)}
    emulate_rows(data, args.check)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print_table("seed weight formats, 64x64 mx_linear", ["format", "LUT", "FF", "DSP", "BRAM", "bits/w", "LUT/prod",
                                                          "ppl"],
                [[r["format"], str(r["LUT"]), str(r["FF"]), str(r["DSP"]), f"{r['BRAM']:g}",
                  f"{r['bits_per_weight']:.3f}", f"{r['lut_per_product']:.2f}", f"{r['perplexity']:.4f}"]
                 for r in rows])
    print("Pareto front:", ", ".join(data["pareto"]))
    write_doc(markdown(data))
    print(f"wrote {RESULTS} and {DOC}")


if __name__ == "__main__":
    main()
