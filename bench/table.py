"""The benches' one way to print a results table (rich, a masec dependency)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(title: str, cols: list[str], body: list[list[str]], width: int = 140) -> None:
    """Print ``body`` rows under ``cols``; the ``format``/first text column left-aligned, numbers right."""
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="left" if c == "format" else "right", no_wrap=True)
    for b in body:
        t.add_row(*b)
    Console(width=width).print(t)
