"""Fast float emulation of an assignment: fake-quantize a float model with masec.formats objects.

``Emulator(model, space)`` keeps the float weights; ``apply(site_assignment)`` writes each weight
site's quantized values into its parameter (once per trial; quantized weights are cached) and
arms forward pre-hooks that quantize the input of every ``nn.Linear`` with the format of the
activation site feeding it. ``apply({})`` (or ``restore()``) gives the float model back.
Blocks run along the last axis: a linear's reduction axis for both its weight [out, in] and its
input [..., in], as in the hardware.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from masec.passes.search.space import Candidate, Space


def _move(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_move(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _move(v, device) for k, v in x.items()}
    return x


class Emulator:
    def __init__(self, model: nn.Module, space: Space, device: str = "cpu", cache_elems: int = 50_000_000):
        self.model = model
        self.space = space
        self.device = torch.device(device)
        mods = dict(model.named_modules(remove_duplicate=False))
        self.params: dict[str, nn.Parameter] = {}
        self.floats: dict[str, torch.Tensor] = {}
        for s in space.sites:
            if s.kind == "weight":
                p = mods[s.path].weight
                self.params[s.key] = p
                self.floats[s.key] = p.detach().clone()
        self._current: dict[str, Candidate | None] = {k: None for k in self.params}
        self._cache: dict[tuple[str, Candidate], torch.Tensor] = {}
        self._cache_elems = 0
        self._cache_limit = cache_elems if self.device.type == "cpu" else max(cache_elems, 2_000_000_000)
        self.act_fmt: dict[str, object] = {}          # linear path -> format object (None = float)
        self._consumer_site: dict[str, str] = {}
        for s in space.sites:
            if s.kind == "act":
                for c in s.consumers:
                    self._consumer_site[c] = s.key
        self._handles = []
        #: False while a caller that computes on the device (the sensitivity proxy) runs the model
        self.outputs_to_cpu = True
        for path in self._consumer_site:
            self._handles.append(mods[path].register_forward_pre_hook(self._hook(path)))
        # a model on another device: move inputs there and outputs back, so evaluate() is unchanged
        if self.device.type != "cpu":
            self.model.to(self.device)
            for k in self.floats:
                self.floats[k] = self.floats[k].to(self.device)
            self._handles.append(model.register_forward_pre_hook(lambda m, a, kw: (_move(a, self.device), _move(kw, self.device)),
                                                                 with_kwargs=True))
            self._handles.append(model.register_forward_hook(
                lambda m, a, out: _move(out, "cpu") if self.outputs_to_cpu else out))

    def _hook(self, path):
        def pre(_mod, args):
            fmt = self.act_fmt.get(path)
            if fmt is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                return None
            x = args[0]
            with torch.no_grad():
                q = fmt.quantize(x.detach()).to(x.dtype)
            return (q,) + tuple(args[1:])
        return pre

    def _quantized(self, key: str, cand: Candidate) -> torch.Tensor:
        hit = self._cache.get((key, cand))
        if hit is not None:
            return hit
        w = self.floats[key]
        q = cand.format.quantize(w).to(w.dtype)
        if self._cache_elems + q.numel() <= self._cache_limit:
            self._cache[(key, cand)] = q
            self._cache_elems += q.numel()
        return q

    @torch.no_grad()
    def apply(self, site_assignment: dict[str, Candidate | None]) -> None:
        """Quantize per ``site_assignment`` (site key -> candidate; missing or None = float32)."""
        for key, p in self.params.items():
            cand = site_assignment.get(key)
            if cand == self._current[key]:
                continue
            p.data.copy_(self.floats[key] if cand is None else self._quantized(key, cand))
            self._current[key] = cand
        self.act_fmt = {}
        for path, skey in self._consumer_site.items():
            cand = site_assignment.get(skey)
            if cand is not None:
                self.act_fmt[path] = cand.format

    def restore(self) -> None:
        self.apply({})

    def close(self) -> None:
        self.restore()
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.device.type != "cpu":
            self.model.to("cpu")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
