"""A model whose best assignment is known by construction (a masec model file).

``out = big(x) + small1(x) + small2(x)`` with the weights of ``small1`` / ``small2`` 100x smaller
than those of ``big``: MX block scales make quantization error relative, so their errors reach
the output 100x smaller, their weights can take the cheapest 4-bit format for free while ``big``
cannot. masec compiles it (linears and adds), so the search emulates the hardware. The metric is the MSE against a noisy target (so float32 has
a non-zero metric); calibration and evaluation use different random inputs.
"""
import torch
import torch.nn as nn


class Toy(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.big = nn.Linear(d, d, bias=False)
        self.small1 = nn.Linear(d, d, bias=False)
        self.small2 = nn.Linear(d, d, bias=False)

    def forward(self, x):
        return self.big(x) + self.small1(x) + self.small2(x)


def _build():
    g = torch.Generator().manual_seed(0)
    m = Toy()
    with torch.no_grad():
        for lin, scale in ((m.big, 1.0), (m.small1, 0.01), (m.small2, 0.01)):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * (scale / 8.0))
    return m.eval()


model = _build()
_g = torch.Generator().manual_seed(1)
example_inputs = (torch.randn(16, 64, generator=_g),)
calibration_data = [(torch.randn(16, 64, generator=_g),) for _ in range(2)]
_x_eval = torch.randn(64, 64, generator=_g)
with torch.no_grad():
    _y = model(_x_eval)
    # noise with 10 % of the signal power: float32 MSE = 0.1 * signal power
    _target = _y + (0.1 * _y.pow(2).mean()).sqrt() * torch.randn(_y.shape, generator=_g)
metric_name = "mse"


def evaluate(m):
    with torch.no_grad():
        return float((m(_x_eval) - _target).pow(2).mean())
