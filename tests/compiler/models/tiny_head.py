"""A small single attention head (d_model = head = 32, T = 8): q, k, v projections, q k^T / sqrt(d)
with a causal mask, softmax, @ v. Used with seed activation formats on the projections' outputs,
which the two matmuls decode (q as A, k as the transposed B, v as the row-major B)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Head(nn.Module):
    def __init__(self, d_model=32, head_size=32):
        super().__init__()
        self.query = nn.Linear(d_model, head_size, bias=False)
        self.key = nn.Linear(d_model, head_size, bias=False)
        self.value = nn.Linear(d_model, head_size, bias=False)

    def forward(self, x):
        T = x.shape[-2]
        q, k, v = self.query(x), self.key(x), self.value(x)
        wei = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
        wei = wei.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        return F.softmax(wei, dim=-1) @ v


def model():
    torch.manual_seed(0)
    return Head()


def example_inputs():
    return (torch.randn(8, 32, generator=torch.Generator().manual_seed(1)),)
