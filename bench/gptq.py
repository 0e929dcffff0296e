"""GPTQ weight rounding vs round-to-nearest on stories260K: perplexity on held-out TinyStories (the
model file's evaluate(), calibration on other text; the protocol of bench/search.py), each point
evaluated with the search's hardware emulation (passes/search/emulate.py). Rows: uniform 4-bit
weight formats with RTN and with GPTQ (passes/transform/gptq.py), weights only (every other tensor
float: a software study, not a design) and weights + mxint8 activations (every activation mxint8,
as `masec compile` builds it); then `masec search --weight-rounding gptq` in bits mode (<= --max-bits)
and in constraint mode (cheapest within --max-loss), with their wall time.

    python3 bench/gptq.py --part rows      # the format rows   -> bench/results/gptq_rows.json
    python3 bench/gptq.py --part search    # the two searches  -> bench/results/gptq_search.json
    python3 bench/gptq.py --part table     # print both
    python3 bench/gptq.py --part rows --rotate   # the rows on a rotated model -> gptq_rows_rotated.json

``--rotate`` first rotates the residual stream (QuaRot's / SpinQuant's offline R1, a random Hadamard
matrix times random signs, with the RMSNorm gains folded into the linears that read them): the
float32 model computes the same function, and the question is whether 4-bit weights lose less on it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from table import print_table  # noqa: E402

from masec.passes.search.cli import load_search_inputs  # noqa: E402
from masec.passes.search.emulate import Emulator  # noqa: E402
from masec.passes.search.runner import run_search  # noqa: E402
from masec.passes.search.space import Candidate, build_space, discover_sites  # noqa: E402
from masec.passes.transform.gptq import CALIBRATION_BATCHES  # noqa: E402

WEIGHTS = [("mxint4", 32), ("mxfp4", 32), ("mxfp4", 16), ("nvfp4", 16), ("m2xfp4_w", 32)]


@torch.no_grad()
def rotate_residual(model, seed: int = 0) -> None:
    """Rotate a llama2.c-style Transformer's residual stream by Q = diag(+-1) H / sqrt(d) in place:
    every RMSNorm gain is folded into the linears reading its output (gain 1 then, so the norm commutes
    with Q), the embedding rows and the outputs of wo / w2 are multiplied by Q, the inputs of wq, wk,
    wv, w1, w3 and the classifier by Q^T. Same float32 function (up to rounding); a tied classifier is
    untied first."""
    d = model.tok_embeddings.weight.shape[1]
    if d & (d - 1):
        raise SystemExit(f"--rotate needs a power-of-two model width (Hadamard), got {d}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    signs = torch.randint(0, 2, (d,), generator=torch.Generator().manual_seed(seed)).double() * 2 - 1
    q = signs[:, None] * h / math.sqrt(d)

    def fold(norm, linears):
        for lin in linears:
            lin.weight.copy_(lin.weight.double() * norm.weight.double()[None, :])
        norm.weight.fill_(1.0)

    if model.output.weight is model.tok_embeddings.weight:
        model.output.weight = torch.nn.Parameter(model.tok_embeddings.weight.detach().clone())
    readers = [model.output]
    for layer in model.layers:
        att, ff = layer.attention, layer.feed_forward
        fold(layer.attention_norm, [att.wq, att.wk, att.wv])
        fold(layer.ffn_norm, [ff.w1, ff.w3])
        readers += [att.wq, att.wk, att.wv, ff.w1, ff.w3]
        for lin in (att.wo, ff.w2):
            lin.weight.copy_(q.T @ lin.weight.double())
    fold(model.norm, [model.output])
    for lin in readers:
        lin.weight.copy_(lin.weight.double() @ q)
    model.tok_embeddings.weight.copy_(model.tok_embeddings.weight.double() @ q)


def embedding_candidate(wc: Candidate) -> Candidate:
    """The embedding's format beside linear weights in ``wc``: the same, or MXFP4 at the same block for a
    seed weight format (which has hardware only in linears)."""
    return wc if wc.fmt.startswith("mx") else Candidate.make("mxfp4", wc.block)


def uniform_assignment(space, wc: Candidate, ac: Candidate | None = None) -> tuple[dict, float]:
    """Every weight site in ``wc`` (the embedding per :func:`embedding_candidate`) and, with ``ac``, every
    activation site in ``ac``; the other sites stay float. Returns the assignment and its average bits
    over the quantized sites."""
    emb = embedding_candidate(wc)
    assign = {s.key: ((wc if s.op == "linear" else emb) if s.kind == "weight" else ac)
              for s in space.sites if ac is not None or s.kind == "weight"}
    sites = [s for s in space.sites if s.key in assign]
    return assign, sum(s.numel * assign[s.key].bits for s in sites) / sum(s.numel for s in sites)


def rows(args, ins, space, calib) -> list[dict]:
    model, evaluate = ins["model"], ins["evaluate"]
    graphs: dict = {}
    out = []
    t = time.time()
    with Emulator(model, space, example_inputs=ins["example_inputs"], graph_cache=graphs) as emu:
        emu.restore()
        f32 = float(evaluate(model))
    out.append({"point": "float32", "avg_bits": 32.0, "perplexity": f32, "seconds": round(time.time() - t, 1)})
    print(f"float32 {f32:.4f}", flush=True)
    a8 = Candidate.make("mxint8", 32)
    for name, block in WEIGHTS:
        wc = Candidate.make(name, block)
        emb = embedding_candidate(wc)
        for acts in (False, True):
            assign, bits = uniform_assignment(space, wc, a8 if acts else None)
            for wr in ("nearest", "gptq"):
                with Emulator(model, space, example_inputs=ins["example_inputs"], graph_cache=graphs,
                              weight_rounding=wr, calibration=calib if wr == "gptq" else None) as emu:
                    t = time.time()
                    emu.apply(assign)
                    ppl = float(evaluate(model))
                    dt = time.time() - t
                r = {"weights": wc.key, "embedding": emb.key, "activations": "mxint8 (all)" if acts else "float32 (weights only)",
                     "rounding": wr, "avg_bits": bits, "perplexity": ppl, "vs_float32": ppl / f32 - 1,
                     "seconds": round(dt, 1)}
                out.append(r)
                print(f"{wc.key:>14} {'w+a8' if acts else 'w only':>6} {wr:>7}: {ppl:.4f} ({100 * (ppl / f32 - 1):+.2f}%) "
                      f"{dt:.1f} s", flush=True)
    return out


def searches(args, ins, calib_n) -> list[dict]:
    common = dict(metric_name="perplexity", max_loss=args.max_loss, by="node", seed=args.seed, progress=False,
                  threads=args.threads, proxy=ins["search_proxy"], weight_rounding="gptq", gptq_batches=calib_n)
    out = Path(args.out)
    bits_out = out.parent / (out.name + "_bits")
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(bits_out, ignore_errors=True)
    res = []
    graphs: dict = {}
    t0 = time.time()
    rb = run_search(ins["model"], ins["example_inputs"], ins["evaluate"], ins["calibration_data"], bits_out,
                    trials=args.bits_trials, max_bits=args.max_bits, graph_cache=graphs, **common)
    res.append({"point": f"searched with GPTQ, bits mode (<= {args.max_bits:g} bits, {args.bits_trials} trials)",
                "avg_bits": rb.chosen["avg_bits"], "perplexity": rb.chosen["metric"], "loss": rb.chosen["loss"],
                "float32": rb.float32_metric, "points": len(rb.points), "seconds": round(time.time() - t0, 1),
                "precision_toml": (bits_out / "precision.toml").read_text()})
    print(res[-1]["point"], rb.chosen["avg_bits"], rb.chosen["metric"], res[-1]["seconds"], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sensitivity.json").write_text((bits_out / "sensitivity.json").read_text())   # same fingerprint
    t0 = time.time()
    rc = run_search(ins["model"], ins["example_inputs"], ins["evaluate"], ins["calibration_data"], out,
                    trials=args.trials, graph_cache=graphs, **common)
    res.append({"point": f"searched with GPTQ (by node, {args.trials} trials, max loss {args.max_loss})",
                "avg_bits": rc.chosen["avg_bits"], "perplexity": rc.chosen["metric"], "loss": rc.chosen["loss"],
                "float32": rc.float32_metric, "points": len(rc.points), "seconds": round(time.time() - t0, 1),
                "sensitivity_reused_from_bits_mode": True,
                "precision_toml": (out / "precision.toml").read_text()})
    print(res[-1]["point"], rc.chosen["avg_bits"], rc.chosen["metric"], res[-1]["seconds"], flush=True)
    return res


def table(results: Path) -> None:
    for name, what in (("gptq_rows.json", ""), ("gptq_rows_rotated.json", ", residual stream rotated")):
        if not (results / name).exists():
            continue
        rws = json.loads((results / name).read_text())
        f32 = rws["rows"][0]["perplexity"]
        print_table(f"stories260K{what}: RTN vs GPTQ weights, perplexity ({rws['device']}; float32 {f32:.4f})",
                    ["weights", "activations", "avg bits", "RTN", "GPTQ"],
                    [[r["weights"], r["activations"], f"{r['avg_bits']:.3f}",
                      f"{r['perplexity']:.4f} ({100 * (r['perplexity'] / f32 - 1):+.2f}%)",
                      f"{g['perplexity']:.4f} ({100 * (g['perplexity'] / f32 - 1):+.2f}%)"]
                     for r, g in zip(rws["rows"][1::2], rws["rows"][2::2])])
    if (results / "gptq_search.json").exists():
        s = json.loads((results / "gptq_search.json").read_text())
        print_table(f"stories260K: searches with --weight-rounding gptq ({s['device']})",
                    ["point", "avg bits", "perplexity", "vs float32", "seconds"],
                    [[r["point"], f"{r['avg_bits']:.3f}", f"{r['perplexity']:.4f}", f"{100 * r['loss']:+.2f}%",
                      f"{r['seconds']:.0f}"] for r in s["rows"]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("rows", "search", "table"), required=True)
    ap.add_argument("--model-file", default=str(ROOT / "examples" / "stories260k" / "model.py"))
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_gptq"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--bits-trials", type=int, default=10)
    ap.add_argument("--max-loss", default="2%")
    ap.add_argument("--max-bits", type=float, default=4.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibration-batches", type=int, default=CALIBRATION_BATCHES)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--fresh", action="store_true", help="delete the search folders first")
    ap.add_argument("--rotate", action="store_true",
                    help="with --part rows: rotate the residual stream first (gptq_rows_rotated.json)")
    args = ap.parse_args(argv)
    results = Path(args.results)
    if args.part == "table":
        table(results)
        return 0
    torch.set_num_threads(args.threads)
    ins = load_search_inputs(args.model_file)
    calib = [tuple(b) for _, b in zip(range(args.calibration_batches), ins["calibration_data"])]
    device = f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} thread(s)"
    doc = {"model_file": str(Path(args.model_file).resolve().relative_to(ROOT)), "device": device,
           "calibration_batches": len(calib), "metric": "perplexity (evaluate(), text never used for calibration)",
           "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MASEC_")}}
    if args.part == "rows":
        if args.rotate:
            rotate_residual(ins["model"], args.seed)
            doc["rotation"] = f"residual stream times diag(+-1) H / sqrt(d), seed {args.seed}, RMSNorm gains folded"
        sites, _, _ = discover_sites(ins["model"], ins["example_inputs"])
        doc["rows"] = rows(args, ins, build_space(sites, "node"), calib)
        doc["bits"] = "avg bits over the quantized searched tensors (linear/embedding weights; and linear inputs in w+a8 rows)"
        (results / ("gptq_rows_rotated.json" if args.rotate else "gptq_rows.json")).write_text(
            json.dumps(doc, indent=1) + "\n")
    else:
        doc.update(max_loss=args.max_loss, max_bits=args.max_bits, trials=args.trials, bits_trials=args.bits_trials,
                   seed=args.seed, threads=args.threads)
        doc["rows"] = searches(args, ins, len(calib))
        (results / "gptq_search.json").write_text(json.dumps(doc, indent=1) + "\n")
    table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
