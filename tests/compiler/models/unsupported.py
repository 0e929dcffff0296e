import torch
import torch.nn as nn


class WithSin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 32)

    def forward(self, x):
        return torch.sin(self.fc(x))


model = WithSin()
example_inputs = torch.randn(2, 32)
