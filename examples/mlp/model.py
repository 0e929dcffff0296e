"""masec's bundled example: a two-layer MLP (Linear -> ReLU -> Linear, with bias).

Sizes are chosen so tensors span several MX blocks of 32, with a partial last block:
64 inputs (2 blocks), 96 hidden (3 blocks), 40 outputs (2 blocks, the second one 8/32 full).
The weights are seeded, so every compile sees the same model; the example demonstrates
bit-exact compilation, not accuracy (accuracy figures come from the real models in shared data).

    masec compile examples/mlp/model.py --format mxint8 --out out/mlp
    masec sim out/mlp
"""
import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, d_in: int = 64, d_hidden: int = 96, d_out: int = 40):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def model() -> nn.Module:
    torch.manual_seed(0)
    return MLP()


def example_inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(4, 64, generator=g),)
