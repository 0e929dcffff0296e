"""A real LLM block: the feed-forward half of layer 0 of the pretrained stories260K (llama2.c).

    y = x + W2( silu(W1 rmsnorm(x)) * W3 rmsnorm(x) )

with the checkpoint's trained weights (dim 64, hidden 172: the last MX block of the hidden
activations is partial). The inputs are real activations: the token embeddings of a
TinyStories sentence. Fan-out and a reconvergent residual path exercise forks and FIFO sizing.

    masec compile examples/stories260k_ffn/model.py --format mxint8 --out out/ffn
    masec sim out/ffn
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from masec.models.llama2c import data_file, load_checkpoint, load_tokenizer

LAYER = 0
TEXT = "Once upon a time, there was a little girl"


class FeedForwardBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, eps: float = 1e-5):
        super().__init__()
        self.ffn_norm = nn.RMSNorm(dim, eps=eps)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def _checkpoint():
    return load_checkpoint(data_file("stories260k", "stories260K.bin"))


def model() -> nn.Module:
    ck = _checkpoint()
    w = ck.layers[LAYER]
    block = FeedForwardBlock(ck.config.dim, ck.config.hidden_dim)
    with torch.no_grad():
        block.ffn_norm.weight.copy_(w["ffn_norm"])
        block.w1.weight.copy_(w["w1"])
        block.w2.weight.copy_(w["w2"])
        block.w3.weight.copy_(w["w3"])
    return block


def example_inputs():
    ck = _checkpoint()
    tok = load_tokenizer(data_file("stories260k", "tok512.bin"), ck.config.vocab_size)
    ids = tok.encode(TEXT, bos=True)
    return (ck.tok_embeddings[ids],)
