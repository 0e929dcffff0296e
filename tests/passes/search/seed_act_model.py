"""A masec model file with one activation where the seed activation formats are built, and two where
they are not (tests/passes/search/test_search_seed_acts.py).

``fc1``'s output reaches ``fc2`` through a relu only (a linear's output stage makes it, a linear's
input decode reads it): NVFP4, Anda and (at 8 lanes) M2XFP activations compile there. The model
input ``x`` also feeds the residual add, and ``norm``'s output is made by a LayerNorm: both stay MX.
"""
import torch
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self, d=64, h=96, o=40):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(h, d)
        self.norm = nn.LayerNorm(d)
        self.fc3 = nn.Linear(d, o)

    def forward(self, x):
        h = self.fc2(self.act(self.fc1(x)))
        return self.fc3(self.norm(h + x))


def _build():
    torch.manual_seed(0)
    return Tiny().eval()


model = _build()
_g = torch.Generator().manual_seed(1)
example_inputs = (torch.randn(8, 64, generator=_g),)
calibration_data = [(torch.randn(8, 64, generator=_g),) for _ in range(2)]
_x_eval = torch.randn(32, 64, generator=_g)
with torch.no_grad():
    _y = model(_x_eval)
metric_name = "mse"


def evaluate(m):
    with torch.no_grad():
        return float((m(_x_eval) - _y).pow(2).mean())
