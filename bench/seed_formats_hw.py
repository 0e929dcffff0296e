"""The seed weight formats in hardware: a 64x64 mx_linear per weight format, beside stories260K perplexity.

Usage: python bench/seed_formats_hw.py [--tokens N] [--only FMT ...] [--act-only] [--jobs N] [--doc-only]

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
(``mx_linear.stream_widths``); the format's own figure (Anda's S is 5 bits) beside it. No perplexity
is measured for these rows ("-"), so they are not in the Pareto front of the weight rows; their own
front of (LUT per product, bits per activation, bits per weight) is stated.

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


def pareto(rows: list[dict]) -> list[str]:
    """Formats no other format beats in all of (perplexity, LUT per product, bits per weight)."""
    return front(rows, ("perplexity", "lut_per_product", "bits_per_weight"))


def markdown(data: dict) -> str:
    lines = [f"64x64 `mx_linear`, x and y MXINT8, bias, P_IN = P_OUT = 8 (64 products per cycle); Yosys "
             f"`synth_xilinx` ({data['yosys']}); perplexity of stories260K on {data['tokens']} TinyStories "
             f"tokens with every linear weight in the format (float32: {data['perplexity_float32']:.4f}). "
             f"`python bench/seed_formats_hw.py`.", "",
             "| weight format | block | LUT | FF | DSP | BRAM | cycles/row | bits/weight | LUT/product | perplexity |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['format']} | {r['block']} | {r['LUT']} | {r['FF']} | {r['DSP']} | {r['BRAM']:g} | "
                     f"{r['cycles_per_row']} | {r['bits_per_weight']:.3f} | {r['lut_per_product']:.2f} | "
                     f"{r['perplexity']:.4f} |")
    lines += ["", f"Pareto front of (perplexity, LUT per product, bits per weight): "
                  f"{', '.join(data['pareto'])}."]
    if data.get("act_rows"):
        lines += ["", "Seed activation formats: the same 64x64 `mx_linear` (64 products per cycle, bias MXINT8), x "
                  "and y both in the activation format (`XFMT` decode, `Y_QFMT` quantizer; NVFP4 tensor scales "
                  f"2^{TS_EXP}), W in MXINT8 (in x's block) or the matching seed weight format. bits/act (stream): "
                  "data bits per lane + the 8-bit scale bus per block; (format): the format's own (Anda's S is "
                  "5 bits). Perplexity: not measured for activation formats (\"-\").", "",
                  "| x = y | W | block | LUT | FF | DSP | BRAM | cycles/row | bits/act (stream) | bits/act (format) "
                  "| bits/weight | LUT/product | perplexity |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["act_rows"]:
            lines.append(f"| {r['x']} | {r['w']} | {r['block']} | {r['LUT']} | {r['FF']} | {r['DSP']} | "
                         f"{r['BRAM']:g} | {r['cycles_per_row']} | {r['bits_per_act']:.3f} | "
                         f"{r['bits_per_act_format']:.3f} | {r['bits_per_weight']:.3f} | "
                         f"{r['lut_per_product']:.2f} | - |")
        lines += ["", "Activation rows are not in the (perplexity, LUT per product, bits) front (no perplexity); "
                      "front of (LUT per product, bits/act (stream), bits/weight) among them: "
                      f"{', '.join(data['act_pareto'])}."]
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
    args = ap.parse_args()
    if args.doc_only:
        data = json.loads(RESULTS.read_text())
        data["pareto"] = pareto(data["rows"])
        data["act_pareto"] = front(data.get("act_rows", []), ACT_KEYS)
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
