"""Errors raised by :mod:`masec.formats`."""
from __future__ import annotations


class FormatError(ValueError):
    """A format name, option or encoded tensor is invalid.

    The message says what was wrong and lists the valid choices.
    """
