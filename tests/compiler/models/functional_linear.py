"""F.linear on registered parameters (get_attr nodes) instead of nn.Linear."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class M(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(40, 64, generator=g) * 0.1)
        self.b = nn.Parameter(torch.randn(40, generator=g) * 0.1)

    def forward(self, x):
        return F.relu(F.linear(x, self.w, self.b))


model = M()
example_inputs = torch.randn(2, 64, generator=torch.Generator().manual_seed(6))
