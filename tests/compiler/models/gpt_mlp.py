"""A GPT/BERT-style MLP block: x + fc2(gelu(fc1(layernorm(x)))). Exercises layer_norm, gelu,
linear with bias and the residual add."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d=64, h=96):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, h)
        self.fc2 = nn.Linear(h, d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.ln(x))))


def model():
    torch.manual_seed(3)
    m = Block()
    with torch.no_grad():
        m.ln.weight.uniform_(0.5, 1.5)
        m.ln.bias.uniform_(-0.2, 0.2)
    return m


def example_inputs():
    return (torch.randn(3, 64, generator=torch.Generator().manual_seed(4)),)
