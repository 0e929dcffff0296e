"""Written-out norms with a SwiGLU feed-forward, as LLaMA-style code writes them by hand:
RMSNorm as x * rsqrt(mean(x^2) + eps) * weight, SiLU as a * sigmoid(a), and a residual."""
import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        return self._norm(x.float()).type_as(x) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim=64, hidden=128):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        h = self.norm(x)
        a = self.w1(h)
        return x + self.w2(a * torch.sigmoid(a) * self.w3(h))


def model():
    torch.manual_seed(0)
    m = SwiGLU()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
    return m


def example_inputs():
    return (torch.randn(1, 8, 64, generator=torch.Generator().manual_seed(1)),)
