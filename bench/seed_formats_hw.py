"""The seed weight formats in hardware: a 64x64 mx_linear per weight format, beside stories260K perplexity.

Usage: python bench/seed_formats_hw.py [--skip-synth] [--tokens N]

Per weight format (x and y in MXINT8, 64 products per cycle: P_IN = P_OUT = 8, with bias):

* Yosys ``synth_xilinx`` of the kernel (``bench/kernel_resources.py: synthesize``, the manifest's
  example machinery): LUT, FF, DSP, BRAM; LUT per product = LUT / 64;
* cycles per input row: ``ceil(OUT/P_OUT) * ceil(IN/P_IN)`` (the kernel streams at this rate; the RTL
  tests check full rate against it);
* bits per weight incl. scales and metadata: the weight ROMs' bits (W_MEM + WS_MEM) / (64 * 64);
* perplexity of stories260K (TinyStories evaluation text) with every linear weight fake-quantized in
  that format (the format library's ``quantize``; activations float32). BitMoD uses groups of 64
  (stories260K's dim is 64), NVFP4 blocks of 16, the others blocks of 32.

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
NOT_BUILT = ("anda4",)   # activation formats without a producer quantizer yet


def example(wname: str, block: int) -> dict:
    from masec.hw_templates.kernels import mx_linear

    label = f"64x64 mxint8 x {wname} P_IN8 P_OUT8"
    if wname.startswith("mx"):
        from masec.formats import parse_format
        ex = mx_linear.example_config(label, IN, OUT, "mxint8", wname, "mxint8", P, P, True)
        assert parse_format(wname).block_size == block
        return ex
    return mx_linear.seed_example_config(label, IN, OUT, "mxint8", wname, "mxint8", P, P, True, w_block=block)


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
    keys = ("perplexity", "lut_per_product", "bits_per_weight")
    front = []
    for r in rows:
        if any(all(o[k] <= r[k] for k in keys) and any(o[k] < r[k] for k in keys) for o in rows if o is not r):
            continue
        front.append(r["format"])
    return front


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
    for n in data["not_built"]:
        lines.append(f"| {n} | | activation format: consumer decode in mx_linear built (`X_ANDA`), producer "
                     f"quantizer not built, so not compiled | | | | | | | |")
    lines += ["", f"Pareto front of (perplexity, LUT per product, bits per weight): "
                  f"{', '.join(data['pareto'])}."]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8 * 256 + 1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--only", nargs="*", default=None, help="measure only these formats; keep the other rows of the JSON")
    args = ap.parse_args()
    from masec.synth import _yosys_version

    ppl = perplexities(args.tokens, args.only)
    old = {r["format"]: r for r in json.loads(RESULTS.read_text())["rows"]} if args.only and RESULTS.exists() else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for wname, block in ROWS:
            if args.only and wname not in args.only:
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
    data = {"kernel": "mx_linear", "in": IN, "out": OUT, "p_in": P, "p_out": P, "x": "mxint8", "y": "mxint8",
            "yosys": _yosys_version(),
            "tokens": args.tokens, "perplexity_float32": ppl["float32"], "rows": rows,
            "not_built": list(NOT_BUILT), "pareto": pareto(rows)}
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
