"""The linear weights of the pretrained stories260K for the formats tests (real data), read with
the shared llama2.c reader ``masec.models.llama2c`` from the repository's data/ folder
(``$MASEC_DATA`` when set)."""
from __future__ import annotations

from pathlib import Path

import torch

from masec.models.llama2c import data_dir, linear_weights, load_checkpoint

DEFAULT_PATH = data_dir() / "stories260k" / "stories260K.bin"


def load_linear_weights(path: Path = DEFAULT_PATH) -> dict[str, torch.Tensor]:
    """``{"layers.{i}.{wq,wk,wv,wo,w1,w2,w3}": [out, in] float32}``."""
    return linear_weights(load_checkpoint(path))
