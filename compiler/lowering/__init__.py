"""Op lowerings: one module per canonical op family, discovered on import (see base.py)."""
from __future__ import annotations

import importlib
import pkgutil

from masec.lowering.base import LOWERINGS, Lowering, MXValue, beats_of, lowering_for, register, rows_of, supported_ops

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["LOWERINGS", "Lowering", "MXValue", "beats_of", "lowering_for", "register", "rows_of", "supported_ops"]
