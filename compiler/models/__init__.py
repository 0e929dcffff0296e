"""Loaders for the real pretrained models masec compiles in examples, tests and benchmarks."""

import os


def env_int(name: str, default, minimum: int = 1):
    """An integer setting from environment variable ``name`` (``default`` when unset or empty), at
    least ``minimum`` (1 or 0); anything else is one clear MasecError naming the variable."""
    from masec.errors import MasecError

    value = os.environ.get(name)
    if not value:
        return default
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    try:
        n = int(value)
    except ValueError:
        raise MasecError(f"{name}={value!r}: expected {expected}") from None
    if n < minimum:
        raise MasecError(f"{name}={value!r}: expected {expected}")
    return n
