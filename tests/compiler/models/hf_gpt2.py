"""A two-layer HuggingFace ``GPT2LMHeadModel`` from a small config (random weights, seeded).

n_embd 64, 4 heads, n_positions 64, vocab 256, T = 16 tokens, ``gelu_new`` (tanh GELU), learned
positions, LayerNorm, ``Conv1D`` projections, tied LM head. Needs ``transformers``
(``pip install -e .[hf]``). HF models return a ``ModelOutput``; ``LogitsOnly`` wraps the model
so ``forward(ids)`` returns only the logits tensor (no KV cache; the causal mask is folded at compile time).

Why the wrapper: with the KV cache on (HF's default) the output holds a ``DynamicCache``, which
``torch.export`` refuses. A bare model built with ``use_cache=False`` also compiles (its
``ModelOutput`` then holds only the logits; tests/compiler/test_hf.py has one); the wrapper makes
the single logits output explicit and passes ``use_cache=False`` whatever the config says.
"""
import torch
from transformers import GPT2Config, GPT2LMHeadModel

T = 16


class LogitsOnly(torch.nn.Module):
    """``forward(input_ids) -> logits [1, T, vocab]`` of a HF causal LM (no cache)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids):
        return self.lm(input_ids=input_ids, use_cache=False).logits


def build(attn_implementation="eager"):
    """The model; ``attn_implementation`` "eager" (explicit softmax attention) or "sdpa" (HF's default)."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                        activation_function="gelu_new", bos_token_id=0, eos_token_id=0,
                        attn_implementation=attn_implementation)
    return LogitsOnly(GPT2LMHeadModel(config).eval())


model = build()
example_inputs = (torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(1)),)
