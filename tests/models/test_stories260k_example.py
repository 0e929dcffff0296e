"""examples/stories260k/model.py: the whole pretrained stories260K as an ordinary nn.Module."""
import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

from masec.errors import MasecError
from masec.models.llama2c import forward, stories260k
from masec.models.tinystories import calibration_ids, evaluation_ids

MODEL_FILE = Path(__file__).resolve().parents[2] / "examples" / "stories260k" / "model.py"
_count = itertools.count()
ENV = ("MASEC_CHECKPOINT", "MASEC_TOKENIZER", "MASEC_LAYERS", "MASEC_SEQ_LEN", "MASEC_ATTN")


def load_example(monkeypatch=None, **env):
    """Import the model file afresh (it reads its environment variables at import)."""
    if monkeypatch is not None:
        for k in ENV:
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
    spec = importlib.util.spec_from_file_location(f"_stories260k_example_{next(_count)}", MODEL_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def example():
    return load_example()


def test_names_and_shapes(example):
    (x,) = example.example_inputs
    assert x.shape == (1, 32) and x.dtype == torch.int64 and x[0, 0] == 1
    assert example.tokenizer.decode(x[0].tolist()).startswith(" Once upon a time, there was a little girl")
    names = dict(example.model.named_parameters(remove_duplicate=False))
    for n in ("tok_embeddings.weight", "layers.0.attention.wq.weight", "layers.4.attention.wo.weight",
              "layers.0.feed_forward.w1.weight", "layers.2.attention_norm.weight", "layers.3.ffn_norm.weight",
              "norm.weight", "output.weight"):
        assert n in names, n
    assert example.model.output.weight is example.model.tok_embeddings.weight
    assert len(example.model.layers) == 5
    assert set(example.model.state_dict()) == set(names)   # RoPE tables and mask are not persistent
    with torch.no_grad():
        assert example.model(x).shape == (1, 32, 512)


@pytest.mark.parametrize("attn", ["sdpa", "explicit"])
def test_logits_equal_the_reference_forward(example, attn):
    ck, tok = stories260k()
    m = example.load_model(attn=attn)
    assert m.layers[0].attention.flash == (attn == "sdpa")
    ids = tok.encode("Once upon a time, there was a little girl named Lily. She loved to play outside.")
    with torch.no_grad():
        got = m(torch.tensor([ids]))
    ref = forward(ck, ids)
    assert got.shape == (1, len(ids), 512)
    torch.testing.assert_close(got[0], ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        got = m(example.example_inputs[0])
    torch.testing.assert_close(got[0], forward(ck, example.example_inputs[0][0].tolist()), rtol=1e-4, atol=1e-4)


def test_greedy_generation_reproduces_the_known_continuation(example):
    tok = example.tokenizer
    ids = tok.encode("Once upon a time")
    start = len(ids)
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(example.model(torch.tensor([ids]))[0, -1].argmax()))
    assert tok.decode(ids[start:]).startswith(", there was a little girl named Lily. She loved to play")


def test_tokenizer_round_trip(example):
    tok = example.tokenizer
    text = "Tom and Sue went to the park. They saw a big dog!"
    ids = tok.encode(text)
    assert ids[0] == 1 and all(0 <= i < 512 for i in ids)
    assert tok.decode(ids) == " " + text


def test_calibration_and_evaluation_data_are_disjoint(example):
    cal = [t for (x,) in example.calibration_data for t in x[0].tolist()]
    assert len(example.calibration_data) == example.CALIBRATION_SAMPLES
    assert all(x.shape == (1, 32) and x.dtype == torch.int64 for (x,) in example.calibration_data)
    assert cal == calibration_ids(example.tokenizer, len(cal))
    ev = evaluation_ids(example.tokenizer, 4097)
    # no 33-token stretch of evaluation text appears among the calibration windows
    windows = {tuple(cal[i:i + 32]) for i in range(0, len(cal), 32)}
    assert not any(tuple(ev[i:i + 32]) in windows for i in range(len(ev) - 32))


def test_evaluate_gives_a_sane_perplexity(example):
    ppl = example.evaluate(example.model)
    print(f"stories260K float32 perplexity on the evaluation split (32-token windows): {ppl:.3f}")
    assert ppl == pytest.approx(7.693, abs=0.01)
    # a model that knows nothing scores the vocabulary size
    assert example.evaluate(lambda x: torch.zeros(1, x.shape[1], 512), n_tokens=256) == pytest.approx(512.0)


def test_torch_export(example):
    (x,) = example.example_inputs
    for m in (example.model, example.load_model(attn="explicit")):
        ep = torch.export.export(m, example.example_inputs)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x))


def test_environment_variables(monkeypatch):
    m = load_example(monkeypatch, MASEC_LAYERS=2, MASEC_SEQ_LEN=64, MASEC_ATTN="explicit")
    assert len(m.model.layers) == 2 and not m.model.layers[0].attention.flash
    assert m.example_inputs[0].shape == (1, 64)
    assert m.example_inputs[0][0].tolist().count(1) == 2   # a second BOS + prompt pads to 64
    assert all(x.shape == (1, 64) for (x,) in m.calibration_data)
    ck, _ = stories260k()
    ck.layers = ck.layers[:2]
    with torch.no_grad():
        torch.testing.assert_close(m.model(m.example_inputs[0])[0], forward(ck, m.example_inputs[0][0].tolist()),
                                   rtol=1e-4, atol=1e-4)
    m = load_example(monkeypatch, MASEC_CHECKPOINT=MODEL_FILE.parents[2] / "data" / "stories260k" / "stories260K.bin",
                     MASEC_TOKENIZER=MODEL_FILE.parents[2] / "data" / "stories260k" / "tok512.bin")
    assert len(m.model.layers) == 5
    with pytest.raises(MasecError, match="MASEC_ATTN"):
        load_example(monkeypatch, MASEC_ATTN="flash")
    with pytest.raises(MasecError, match="MASEC_LAYERS"):
        load_example(monkeypatch, MASEC_LAYERS="zero")
    with pytest.raises(MasecError, match="checkpoint"):
        load_example(monkeypatch, MASEC_CHECKPOINT="/nonexistent/model.bin")
