import torch

model = torch.nn.Linear(4, 4)
example_inputs = undefined_name  # noqa: F821
