"""Single-head attention as a tutorial writes it: q, k, v projections, scores scaled by
1/sqrt(d), a causal mask built in forward with torch.ones(T, T).triu(1), softmax, weighted sum.
``MASEC_HEAD_DIM`` sets d_model = head size (default 64; the seed-operand matmul tests use 32)."""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


class Head(nn.Module):
    def __init__(self, d_model=64, head_size=64):
        super().__init__()
        self.query = nn.Linear(d_model, head_size, bias=False)
        self.key = nn.Linear(d_model, head_size, bias=False)
        self.value = nn.Linear(d_model, head_size, bias=False)

    def forward(self, x):
        T = x.shape[-2]
        q, k, v = self.query(x), self.key(x), self.value(x)
        wei = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        wei = wei.masked_fill(mask, float("-inf"))
        wei = F.softmax(wei, dim=-1)
        return wei @ v


def _dim():
    return int(os.environ.get("MASEC_HEAD_DIM", "64"))


def model():
    torch.manual_seed(0)
    return Head(_dim(), _dim())


def example_inputs():
    return (torch.randn(8, _dim(), generator=torch.Generator().manual_seed(1)),)
