"""Run compiler passes in order, with context on failure.

A pass is a plain function ``(gm, config) -> result``. An analysis returns data and leaves the
graph alone; a transform returns ``(gm, changed)`` and is idempotent. A failure is re-raised as a
MasecError naming the pass and the passes before it (the pass itself names the node).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from masec.errors import InternalError, MasecError, PassError


@dataclass
class PassManager:
    passes: list[tuple[str, Callable]] = field(default_factory=list)

    def add(self, name: str, fn: Callable) -> "PassManager":
        self.passes.append((name, fn))
        return self

    def run(self, gm, config, progress: Callable[[str], None] | None = None) -> dict:
        results = {}
        done: list[str] = []
        for name, fn in self.passes:
            if progress:
                progress(name)
            try:
                results[name] = fn(gm, config)
            except MasecError as exc:
                if isinstance(exc, PassError) or not isinstance(exc, MasecError):
                    raise type(exc)(f"pass {name} (after {', '.join(done) or 'none'}): {exc}") from None
                raise
            except Exception as exc:  # a masec bug: keep the pass context, exit 1 in the CLI
                raise InternalError(f"pass {name} (after {', '.join(done) or 'none'}) failed: "
                                f"{type(exc).__name__}: {exc}") from exc
            done.append(name)
        return results
