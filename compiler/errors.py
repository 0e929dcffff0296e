"""masec's user-facing errors.

Every error a user can cause is a :class:`MasecError`: the CLI prints its one-line message on
stderr and exits with code 2. Messages name the node / flag / file at fault and what to do.
"""
from __future__ import annotations


class MasecError(Exception):
    """An error caused by the user's input (model, flags, files); printed as one line."""


class UnsupportedOpError(MasecError):
    """A traced node whose operation has no masec kernel."""


class PassError(MasecError):
    """A compiler pass failed; the message names the pass and the node."""


class InternalError(Exception):
    """A masec bug, re-raised with the pass (and node) it happened in; the CLI prints
    "internal error", exits 1 and shows the original traceback under ``--debug``."""
