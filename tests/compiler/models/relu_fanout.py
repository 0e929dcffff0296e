"""ReLU feeding two ReLUs: exercises fan-out (fork) and two model outputs."""
import torch
import torch.nn as nn


class Fanout(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        y = self.a(x)
        return self.b(y), self.c(y)


model = Fanout()
example_inputs = (torch.randn(3, 40, generator=torch.Generator().manual_seed(2)),)
