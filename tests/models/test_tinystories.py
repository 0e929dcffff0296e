"""The repository's data folder, the TinyStories splits and the perplexity function."""
import hashlib

import pytest

from masec.errors import MasecError
from masec.models import llama2c, tinystories
from masec.models.llama2c import REPO_DATA, data_dir, data_file, forward, stories260k
from masec.models.tinystories import (CALIBRATION, EVALUATION, calibration_ids, calibration_paragraphs,
                                      evaluation_ids, evaluation_paragraphs, first_token_ids, paragraphs,
                                      perplexity, repair_mojibake)

SHA256 = {
    ("stories260k", "stories260K.bin"): "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
    ("stories260k", "tok512.bin"): "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312",
    ("text", "tinystories_valid.txt"): "5fc1fb0113df62b567fb271806cd645ce8d75f59c58ca0b764c03d3b6ff34ca6",
}


def test_data_ships_in_the_repository(monkeypatch):
    monkeypatch.delenv("MASEC_DATA", raising=False)
    assert data_dir() == REPO_DATA and REPO_DATA.parent.joinpath("pyproject.toml").is_file()
    for parts, digest in SHA256.items():
        assert hashlib.sha256(data_file(*parts).read_bytes()).hexdigest() == digest, parts


def test_masec_data_is_honoured_and_a_missing_file_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("MASEC_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(MasecError, match="MASEC_DATA"):
        data_file("stories260k", "stories260K.bin")
    with pytest.raises(MasecError, match="MASEC_DATA"):
        llama2c.stories260k()


def test_mojibake_repair():
    assert repair_mojibake("said, \u00e2\u20ac\u0153Hi!\u00e2\u20ac\nBen\u00e2\u20ac\u2122s") == "said, \u201cHi!\u201d\nBen\u2019s"
    assert repair_mojibake("on\u00e2\u20ac\u0160/\u00e2\u20ac\u0160off, happy \u00e2\u20ac\u201c now") == "on\u200a/\u200aoff, happy \u2013 now"
    raw, fixed = paragraphs(repair=False), paragraphs()
    assert len(raw) == len(fixed) == 4300
    assert sum("\u00e2\u20ac" in p for p in raw) == 110 and not any("\u00e2\u20ac" in p for p in fixed)
    assert [i for i, (a, b) in enumerate(zip(raw, fixed)) if a != b][0] == 1918


def test_splits_are_deterministic_and_disjoint():
    cal, ev = calibration_paragraphs(), evaluation_paragraphs()
    assert len(cal) == CALIBRATION[1] - CALIBRATION[0] == 2000 and len(ev) == 4300 - EVALUATION[0]
    assert CALIBRATION[1] < EVALUATION[0]
    assert set(cal) & set(ev) == {"The end."}   # the only paragraph text that occurs in both
    _, tok = stories260k()
    c, e = calibration_ids(tok, 500), evaluation_ids(tok, 500)
    assert len(c) == len(e) == 500 and c[0] == e[0] == 1
    assert c == calibration_ids(tok, 500) and c != e
    stream = [i for p in cal[:20] for i in tok.encode(p, bos=True)]
    assert c == stream[:500] and e == [i for p in ev[:20] for i in tok.encode(p, bos=True)][:500]


def test_perplexity_reproduces_the_reference_figure():
    """data/README.md: float32 perplexity over the first 20,000 tokens, 512-token windows, ~4.09."""
    ck, tok = stories260k()
    ids = first_token_ids(tok, 20_000)
    assert len(ids) == 20_000 and ids == first_token_ids(tok, 20_000, repair=False)
    ppl = perplexity(lambda x: forward(ck, x[0].tolist()), ids, window=512)
    assert ppl == pytest.approx(4.0913, abs=2e-3)


def test_perplexity_windows_and_errors():
    ids = [1, 5, 7, 9, 11]
    seen = []

    def uniform(x):
        import torch
        seen.append(x.tolist())
        return torch.zeros(1, x.shape[1], 16)
    assert perplexity(uniform, ids, window=2) == pytest.approx(16.0)
    assert seen == [[[1, 5]], [[7, 9]]]
    seen.clear()
    assert perplexity(uniform, ids, window=3, max_tokens=4) == pytest.approx(16.0)
    assert seen == [[[1, 5, 7]]]
    with pytest.raises(MasecError):
        perplexity(uniform, [1], window=4)
    with pytest.raises(MasecError, match="positions"):
        perplexity(lambda x: uniform(x)[:, -1:], ids, window=2)
