"""SmolLM2-135M de-quantized from its Q4_1 GGUF (the optional `smollm2` extra): the tokenizer from
the GGUF metadata, greedy decoding, and perplexity on WikiText-2 test."""
import pytest
import torch

from masec.models import smollm2

WHY = smollm2.missing_requirements()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"SmolLM2 extra not installed: {WHY}")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return smollm2.load_model()


@pytest.fixture(scope="module")
def tok():
    return smollm2.load_tokenizer()


def test_tokenizer_round_trip_and_digits(tok):
    text = "The capital of France is Paris. In 2024, 3.5 million @-@ people"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # the smollm pre-tokenizer splits digits one by one
    assert [tok.decode([i]) for i in tok.encode("2024")] == ["2", "0", "2", "4"]
    assert tok.vocab_size == 49152 and tok.bos_id == 1 and tok.eos_id == 2


def test_capital_of_france(model, tok):
    assert smollm2.greedy(model, tok, "The capital of France is", 1) == " Paris"


def test_config_and_tied_classifier(model):
    c = model.cfg
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size) == (576, 30, 9, 3, 1536, 49152)
    assert model.output.weight is model.tok_embeddings.weight
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


def test_wikitext2_perplexity_first_windows(model, tok):
    from masec.models.llama2c import data_file

    ids = tok.encode(data_file("text", "wikitext2_test.txt").read_text(encoding="utf-8")[:8000])
    ppl = smollm2.perplexity(model, ids, window=512, batch=2)
    assert 10 < ppl < 40, ppl
