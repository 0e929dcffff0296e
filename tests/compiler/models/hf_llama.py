"""A two-layer HuggingFace ``LlamaForCausalLM`` from a small config (random weights, seeded).

hidden 64, 4 heads of 16, 2 KV heads (grouped-query attention), intermediate 128, vocab 256,
T = 16 tokens. Needs ``transformers`` (``pip install -e .[hf]``). HF models return a
``ModelOutput`` (a dict-like object with ``logits`` and ``past_key_values``); ``LogitsOnly``
wraps the model so ``forward(ids)`` returns only the logits tensor (no KV cache, no attention
mask argument: the causal mask HF builds from the sequence length is folded at compile time).

Why the wrapper: with the KV cache on (HF's default) the output holds a ``DynamicCache``, which
``torch.export`` refuses. A bare model built with ``use_cache=False`` also compiles (its
``ModelOutput`` then holds only the logits; tests/compiler/test_hf.py has one); the wrapper makes
the single logits output explicit and passes ``use_cache=False`` whatever the config says.
"""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

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
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation=attn_implementation)
    return LogitsOnly(LlamaForCausalLM(config).eval())


model = build()
example_inputs = (torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(1)),)
