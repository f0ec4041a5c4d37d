"""Mixed precision and the finiteness checks of a training step.

``train.amp`` (see :data:`kdbench.config.AMP_MODES`):

- ``off``: float32 everywhere;
- ``bf16``: the models' forward passes under bfloat16 autocast (CPU or CUDA), no scaler;
- ``fp16``: float16 autocast with a gradient scaler; a step whose gradients overflow is skipped
  by the scaler and its scale halved, as usual; such steps are counted in the record.

The distillation losses always compute in float32 with autocast disabled inside
(:class:`kdbench.method.Method`), so the losses a GPU suite reports are the functions the CPU
tests check. A non-finite loss term or gradient is not skipped: it ends the run at that step
with a :class:`NonFiniteError` naming the step and the term (or the parameter), before the
optimizer could write non-finite weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn


class NonFiniteError(RuntimeError):
    """A loss term, gradient or weight became NaN or infinite; the message names step and term."""


def autocast(device: torch.device, mode: str) -> Any:
    """The autocast context of ``mode`` (``off``: none)."""
    if mode == "off":
        return nullcontext()
    dtype = torch.float16 if mode == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, mode: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for ``fp16`` only (a disabled one passes everything through)."""
    return torch.amp.GradScaler(device.type, enabled=mode == "fp16")


def check_terms(terms: dict[str, float], step: int) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite loss term at ``step``."""
    for name, value in terms.items():
        if not math.isfinite(value):
            listed = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
            raise NonFiniteError(f"step {step}: loss term {name!r} is {value} ({listed})")


def check_gradients(named: Iterable[tuple[str, nn.Parameter]], step: int) -> None:
    """Raise :class:`NonFiniteError` naming the first parameter with a non-finite gradient.

    One reduction over all gradients (a single host synchronisation); the per-parameter search
    runs only when that total is not finite.
    """
    named = [(n, p) for n, p in named if p.grad is not None]
    if not named:
        return
    total = torch.nn.utils.get_total_norm([p.grad for _, p in named], norm_type=math.inf)
    if torch.isfinite(total):
        return
    for name, p in named:
        if not torch.isfinite(p.grad).all():
            raise NonFiniteError(f"step {step}: non-finite gradient of {name!r}")


def check_weights(named: Iterable[tuple[str, torch.Tensor]], step: int) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite weight (before any save)."""
    for name, value in named:
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise NonFiniteError(f"step {step}: non-finite values in {name!r}; nothing saved")


__all__ = [
    "NonFiniteError",
    "autocast",
    "check_gradients",
    "check_terms",
    "check_weights",
    "grad_scaler",
]
