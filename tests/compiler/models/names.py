"""A model file that uses other names (for --model / --inputs) and callables."""
import torch
import torch.nn as nn


def my_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 32), nn.ReLU())


def my_inputs():
    return torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
