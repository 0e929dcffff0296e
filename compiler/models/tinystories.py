"""TinyStories text: deterministic calibration / evaluation splits and perplexity.

The text is ``data/text/tinystories_valid.txt`` (the start of the TinyStories validation split),
paragraphs separated by blank lines. The file is shipped unaltered; about 110 of its 4,300
paragraphs (the first at paragraph 1918) carry UTF-8 punctuation that was mis-decoded as
Windows-1252 in the published data ("â€œ" for a left double quote, "â€™" for an apostrophe, "â€"
plus a lost byte for a right double quote). ``paragraphs()`` repairs them in memory
(``repair_mojibake``) unless asked not to; the first 20,000 tokens contain none, so the reference
perplexity below is the same either way.

Splits (indices into ``paragraphs()``, non-blank paragraphs, 4,300 in all):

* calibration: paragraphs ``[0, 2000)``
* evaluation:  paragraphs ``[2100, end)``; the 100-paragraph gap keeps any story (3 to 6
  paragraphs) from straddling both splits, so no evaluation text is ever calibration text.

Token ids come from the llama2.c tokenizer, BOS (id 1) before each paragraph, paragraphs
concatenated into one stream (as llama2.c's pretokenized training data).

    from masec.models.llama2c import forward, stories260k
    from masec.models.tinystories import perplexity, first_token_ids
    ck, tok = stories260k()
    ids = first_token_ids(tok, 20_000)                    # the first 20,000 tokens of the file
    perplexity(lambda x: forward(ck, x[0].tolist()), ids, window=512)   # 4.091 in float32
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Callable, Iterable

import torch

from masec.errors import MasecError
from masec.models.llama2c import Tokenizer, data_file

TEXT_FILE = ("text", "tinystories_valid.txt")
CALIBRATION = (0, 2000)      # paragraph index range [start, stop)
EVALUATION = (2100, None)    # [start, end of file)
BOS = 1

_MOJIBAKE = re.compile("\u00e2\u20ac(.?)", re.DOTALL)


def repair_mojibake(text: str) -> str:
    """Undo UTF-8-read-as-Windows-1252 damage on U+2000..U+203F punctuation: "â€" + c, where c is
    the Windows-1252 reading of the third UTF-8 byte, becomes that character (“ ” ‘ ’ – — …). Byte
    0x9D (the third byte of ”) has no Windows-1252 character and was dropped in the published data,
    so "â€" followed by anything else becomes ” followed by it."""
    def fix(m: re.Match) -> str:
        c = m.group(1)
        try:
            b = c.encode("cp1252")
        except UnicodeEncodeError:
            b = b""
        if len(b) == 1 and 0x80 <= b[0] <= 0xBF:
            return bytes((0xE2, 0x80, b[0])).decode("utf-8")
        return "\u201d" + c
    return _MOJIBAKE.sub(fix, text)


@lru_cache(maxsize=2)
def paragraphs(repair: bool = True) -> tuple[str, ...]:
    """The non-blank paragraphs of the text file, stripped, in file order (mojibake repaired
    unless ``repair`` is False)."""
    text = data_file(*TEXT_FILE).read_text(encoding="utf-8")
    if repair:
        text = repair_mojibake(text)
    return tuple(p.strip() for p in text.split("\n\n") if p.strip())


def calibration_paragraphs() -> tuple[str, ...]:
    return paragraphs()[CALIBRATION[0]:CALIBRATION[1]]


def evaluation_paragraphs() -> tuple[str, ...]:
    return paragraphs()[EVALUATION[0]:EVALUATION[1]]


def token_ids(tok: Tokenizer, paras: Iterable[str], max_tokens: int | None = None) -> list[int]:
    """One stream of token ids: each paragraph encoded with BOS in front, concatenated; stops
    (and truncates) at ``max_tokens``. Encodes only as many paragraphs as it needs."""
    ids: list[int] = []
    for p in paras:
        if max_tokens is not None and len(ids) >= max_tokens:
            break
        ids += tok.encode(p, bos=True)
    return ids if max_tokens is None else ids[:max_tokens]


def first_token_ids(tok: Tokenizer, max_tokens: int, repair: bool = True) -> list[int]:
    """The first ``max_tokens`` tokens of the whole file (both splits; for reproducing the
    reference figure, not for evaluating a calibrated model)."""
    return token_ids(tok, paragraphs(repair), max_tokens)


def calibration_ids(tok: Tokenizer, max_tokens: int | None = None) -> list[int]:
    return token_ids(tok, calibration_paragraphs(), max_tokens)


def evaluation_ids(tok: Tokenizer, max_tokens: int | None = None) -> list[int]:
    return token_ids(tok, evaluation_paragraphs(), max_tokens)


def windows(ids: list[int], window: int, n: int | None = None) -> list[torch.Tensor]:
    """Consecutive non-overlapping full ``[1, window]`` int64 windows of ``ids`` (at most ``n``)."""
    count = len(ids) // window if n is None else min(n, len(ids) // window)
    return [torch.tensor(ids[i * window:(i + 1) * window], dtype=torch.long)[None] for i in range(count)]


def perplexity(forward_fn: Callable[[torch.Tensor], torch.Tensor], token_ids: list[int],
               window: int = 512, max_tokens: int | None = None) -> float:
    """exp(mean negative log-likelihood) of ``token_ids[:max_tokens]`` under ``forward_fn``.

    The stream is cut into non-overlapping input windows ``ids[s:s+window]``, ``s = 0, window,
    2 window, ...``; window ``s`` predicts ``ids[s+1:s+window+1]``, so every token but the first is
    scored exactly once, with the context restarting at each window. The last window may be
    shorter (give ``max_tokens = k * window + 1`` to have only full windows).
    ``forward_fn`` takes an int64 tensor ``[1, T]`` and returns logits ``[1, T, vocab]`` or
    ``[T, vocab]``. Log-probabilities are accumulated in float64.
    """
    ids = list(token_ids[:max_tokens] if max_tokens is not None else token_ids)
    if len(ids) < 2:
        raise MasecError(f"perplexity needs at least 2 tokens, got {len(ids)}")
    if window < 1:
        raise MasecError(f"perplexity window must be positive, got {window}")
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, window):
            chunk = ids[s:s + window + 1]
            x = torch.tensor(chunk[:-1], dtype=torch.long)[None]
            logits = forward_fn(x)
            logits = logits.reshape(-1, logits.shape[-1])
            if logits.shape[0] != x.shape[1]:
                raise MasecError(f"forward_fn returned logits for {logits.shape[0]} positions, "
                                 f"expected {x.shape[1]} (all positions of the window)")
            logp = torch.log_softmax(logits.double(), dim=-1)
            target = torch.tensor(chunk[1:], dtype=torch.long)
            nll -= logp[torch.arange(target.numel()), target].sum().item()
            count += target.numel()
    return math.exp(nll / count)
