"""Linear -> softmax over the last axis (a classifier head); exercises the softmax lowering."""
import torch
import torch.nn as nn


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 40)

    def forward(self, x):
        return torch.softmax(self.fc(x), dim=-1)


def model():
    torch.manual_seed(7)
    return Head()


def example_inputs():
    return (torch.randn(3, 64, generator=torch.Generator().manual_seed(8)),)
