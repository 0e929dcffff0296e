"""Objectives: the model's metric (through ``evaluate``), its loss against float32, the hardware
cost (average bits per element, weighted by tensor size, incl. the 8-bit block scale), the
calibration proxy used by the sensitivity analysis, and the Pareto front.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from masec.errors import MasecError


@dataclass(frozen=True)
class MaxLoss:
    """``--max-loss``: ``"2%"`` = 2 % relative to the float32 metric; ``"0.05"`` = absolute change."""

    value: float
    relative: bool = True

    @classmethod
    def parse(cls, text) -> "MaxLoss | None":
        if text is None or isinstance(text, MaxLoss):
            return text
        if isinstance(text, (int, float)):
            return cls(float(text), relative=False)
        s = str(text).strip()
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*%", s)
        try:
            if m:
                v = cls(float(m.group(1)) / 100.0, relative=True)
            else:
                v = cls(float(s), relative=False)
        except ValueError:
            v = None
        if v is None or v.value < 0:
            raise MasecError(f"--max-loss {text!r}: give a non-negative percentage of the float32 metric "
                             f"(e.g. 2%) or an absolute metric change (e.g. 0.05)")
        return v

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def loss_of(metric: float, float_metric: float, higher_is_better: bool = False, relative: bool = True) -> float:
    """How much worse ``metric`` is than float32 (positive = worse); relative to |float| or absolute."""
    delta = (float_metric - metric) if higher_is_better else (metric - float_metric)
    if relative:
        return delta / abs(float_metric) if float_metric != 0 else delta
    return delta


def _flat_tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat_tensors(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flat_tensors(out[k])]
    return []


PROXIES = ("auto", "mse", "kl")


class Proxy:
    """How far the quantized model's outputs are from float32's on the calibration data.

    ``mse``: relative output error, sum ||y_q - y_f||^2 / sum ||y_f||^2 over batches (independent
    quantization noise powers add, so this suits the additive sensitivity model).
    ``kl``: mean KL(softmax(y_f) || softmax(y_q)) over the last axis (logits; tracks perplexity
    and accuracy far better than the logits' MSE). ``auto``: ``kl`` when the model returns one
    float tensor of 3 or more dimensions ([batch, seq, vocab] logits), else ``mse``.
    """

    def __init__(self, model, batches: list[tuple], merge: bool = True, kind: str = "auto", emulator=None):
        if kind not in PROXIES:
            raise MasecError(f"--proxy {kind!r}: use one of {', '.join(PROXIES)}")
        self.model = model
        self.emulator = emulator    # on a GPU: outputs stay there, the distance is computed there
        self.batches = batches
        self.merged = False
        if merge and len(batches) > 1:
            self._try_merge()
        self.ref = [self._run(b) for b in self.batches]
        if kind == "auto":
            kind = "kl" if all(len(r) == 1 and r[0].dim() >= 3 and r[0].shape[-1] > 1 for r in self.ref) else "mse"
        self.kind = kind
        self.energy = sum(float((t.double() ** 2).sum()) for r in self.ref for t in r) or 1.0
        if kind == "kl":
            self.ref_logp = [[torch.log_softmax(t.double(), -1) for t in r] for r in self.ref]
            self.count = sum(t[..., 0].numel() for r in self.ref for t in r)

    @torch.no_grad()
    def _try_merge(self):
        """Concatenate equally shaped batches along dim 0 (one forward instead of many) when the
        model gives the same outputs that way (blocks run along the last axis, so quantization is
        unchanged)."""
        b0 = self.batches[0]
        if not all(len(b) == len(b0) and all(isinstance(t, torch.Tensor) and isinstance(u, torch.Tensor)
                                             and t.shape == u.shape and t.dim() >= 1 for t, u in zip(b, b0))
                   for b in self.batches):
            return
        merged = tuple(torch.cat([b[i] for b in self.batches], 0) for i in range(len(b0)))
        try:
            one = self._run(merged)
        except Exception:  # noqa: BLE001 - the model does not take a batch: keep the batches
            return
        parts = [self._run(b) for b in self.batches]
        if len(one) != len(parts[0]):
            return
        for i, t in enumerate(one):
            want = torch.cat([p[i] for p in parts], 0)
            if t.shape != want.shape or not torch.allclose(t, want, rtol=1e-4, atol=1e-5):
                return
        self.batches = [merged]
        self.merged = True

    @torch.no_grad()
    def _run(self, batch) -> list[torch.Tensor]:
        emu = self.emulator
        if emu is None or emu.device.type == "cpu":
            out = self.model(*batch)
            return [t.detach().float().cpu() for t in _flat_tensors(out) if t.is_floating_point()]
        emu.outputs_to_cpu = False
        try:
            out = self.model(*batch)
        finally:
            emu.outputs_to_cpu = True
        return [t.detach().float() for t in _flat_tensors(out) if t.is_floating_point()]

    @torch.no_grad()
    def __call__(self) -> float:
        if self.kind == "kl":
            kl = 0.0
            for b, ref in zip(self.batches, self.ref_logp):
                for y, lp in zip(self._run(b), ref):
                    lq = torch.log_softmax(y.double(), -1)
                    kl += float((lp.exp() * (lp - lq)).sum())
            return kl / max(self.count, 1) if math.isfinite(kl) else 1e30
        err = 0.0
        for b, ref in zip(self.batches, self.ref):
            for y, r in zip(self._run(b), ref):
                d = (y.double() - r.double())
                d = torch.nan_to_num(d, nan=1e30, posinf=1e30, neginf=1e30)
                err += float((d ** 2).sum())
        return err / self.energy


def pareto_front(points: list[dict], x: str = "avg_bits", y: str = "metric", higher_is_better: bool = False) -> list[dict]:
    """Non-dominated points (fewer bits and better metric), sorted by bits."""
    sign = -1.0 if higher_is_better else 1.0
    pts = sorted((p for p in points if p.get(y) is not None), key=lambda p: (p[x], sign * p[y]))
    front, best = [], float("inf")
    for p in pts:
        if sign * p[y] < best:
            front.append(p)
            best = sign * p[y]
    return front
