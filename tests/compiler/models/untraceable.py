import torch
import torch.nn as nn


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 32)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not traceable
            return self.fc(x)
        return x


model = DataDependent()
example_inputs = torch.randn(2, 32)
