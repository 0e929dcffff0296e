"""The llama2.c loader and float forward reproduce the verified facts of data/README.md."""
import torch

from masec.models.llama2c import forward, generate, linear_weights, stories260k


def test_checkpoint_shapes():
    ck, tok = stories260k()
    c = ck.config
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len) == (64, 172, 5, 8, 4, 512, 512)
    assert ck.layers[4]["w2"].shape == (64, 172) and ck.layers[0]["wk"].shape == (32, 64)
    assert ck.classifier is ck.tok_embeddings
    assert len(linear_weights(ck)) == 35


def test_tokenizer_round_trip():
    _, tok = stories260k()
    ids = tok.encode("Once upon a time", bos=True)
    assert ids[0] == 1 and tok.decode(ids) == " Once upon a time"


def test_greedy_continuation_matches_the_reference():
    ck, tok = stories260k()
    assert generate(ck, tok, "Once upon a time", 12).startswith(", there was a little girl named Lily")


def test_capture_names_and_shapes():
    ck, tok = stories260k()
    cap = {}
    logits = forward(ck, tok.encode("The cat sat", bos=True), cap)
    T = logits.shape[0]
    assert cap["scores.0"].shape == (8, T, T) and cap["gate.4"].shape == (T, 172)
    assert torch.isfinite(logits).all()
