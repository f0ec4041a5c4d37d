"""Mixed precision and the finiteness checks of a training step.

``train.amp`` (see :data:`kdbench.config.AMP_MODES`):

- ``off``: float32 everywhere;
- ``bf16``: the models' forward passes under bfloat16 autocast (CPU or CUDA), no scaler;
- ``fp16``: float16 autocast with a gradient scaler; a step whose gradients overflow is skipped
  by the scaler and its scale halved, as usual; such steps are counted in the record.

The distillation losses always compute in float32 with autocast disabled inside
(:class:`kdbench.method.Method`), so the losses a GPU suite reports are the functions the CPU
tests check. A non-finite loss term or gradient is not skipped: it ends the run with a
:class:`NonFiniteError` naming the first bad step and its term (or parameter).

No host synchronisation inside a step: each step's loss terms and the index of its first
non-finite gradient stay on the device (:class:`PendingSteps`) and are read together once per
logging interval, and before every checkpoint, evaluation and record. The optimizer may
therefore update with a non-finite gradient (the weights become non-finite in memory), but the
run fails at the next read, before anything is saved (and :func:`check_weights` checks every
weight before each save). Under ``fp16`` the gradient scaler's own overflow check (a host read
per step) is the one exception: it skips such updates as usual.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


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


def first_nonfinite(tensors: Sequence[Tensor]) -> Tensor:
    """Index of the first tensor of ``tensors`` holding a NaN or an infinity, ``-1`` if none.

    A 0-d float32 tensor on the tensors' device, computed without a host synchronisation: the
    per-tensor max-norms (one fused ``foreach`` reduction; a NaN or ∞ element makes its norm
    non-finite), then the first non-finite one. Integer indices below 2²⁴ are exact in float32,
    so the index travels in the step's vector of loss values (:class:`PendingSteps`).
    """
    if not tensors:
        return torch.tensor(-1.0)
    norms = torch.stack([n.float() for n in torch._foreach_norm(list(tensors), math.inf)])
    bad = ~torch.isfinite(norms)
    first = bad.to(torch.uint8).argmax().float()
    return torch.where(bad.any(), first, torch.full_like(first, -1.0))


STATISTICS = "statistics/"
"""Key prefix of a method's statistics among a step's read values: reported, never checked or
part of the loss."""


@dataclass(frozen=True)
class StepValues:
    """What one training step reports, still on the device.

    ``values`` (T + S + 2,) float32: the total loss, the T terms ``names`` in order, the S
    method ``statistics``, and the index into ``parameters`` of the first parameter with a
    non-finite gradient (−1: none; :func:`first_nonfinite`)."""

    step: int
    names: tuple[str, ...]
    values: Tensor
    parameters: Sequence[str]
    statistics: tuple[str, ...] = ()
    """Names of the method's statistics, whose values follow the terms in ``values``."""


@dataclass
class Read:
    """The host copy of the steps read by :meth:`PendingSteps.read`."""

    losses: list[dict[str, float]] = field(default_factory=list)
    """Per step: ``{"loss": total, term: value, ..., "statistics/<name>": value, ...}``."""
    skipped: int = 0
    """Steps whose non-finite fp16 gradients made the scaler skip the update."""


@dataclass
class PendingSteps:
    """The steps trained since the last read, their values kept on the device.

    Adding a step costs no host synchronisation; :meth:`read` copies every pending step's
    values to the host in one transfer (one synchronisation per logging interval, and before
    every checkpoint, evaluation and record) and checks them in step order: the first step with
    a non-finite loss term, or a non-finite gradient, raises :class:`NonFiniteError` naming that
    step and that term (or parameter), as a check inside the step did. A step whose gradients
    overflowed under ``fp16`` is the scaler's to skip (it checks them itself): it is counted,
    not failed.
    """

    fp16: bool = False
    steps: list[StepValues] = field(default_factory=list)

    def add(self, step: StepValues) -> None:
        self.steps.append(step)

    def read(self, reduce: Callable[[Tensor], Tensor] = lambda values: values) -> Read:
        """Host values of the pending steps (``reduce``: e.g. the mean over data-parallel ranks,
        applied to the (steps, T + 2) matrix on the device first); empties the list."""
        steps, self.steps = self.steps, []
        if not steps:
            return Read()
        rows = reduce(torch.stack([s.values for s in steps])).tolist()
        read = Read()
        for step, row in zip(steps, rows, strict=True):
            terms = len(step.names) + 1
            losses = dict(zip(("loss", *step.names), row[:terms], strict=True))
            _check_terms(losses, step.step)
            names = (STATISTICS + k for k in step.statistics)
            losses.update(zip(names, row[terms:-1], strict=True))
            bad = int(row[-1])
            if bad >= 0 and self.fp16:
                read.skipped += 1
            elif bad >= 0:
                raise NonFiniteError(
                    f"step {step.step}: non-finite gradient of {step.parameters[bad]!r}"
                )
            read.losses.append(losses)
        return read


def _check_terms(losses: dict[str, float], step: int) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite loss term at ``step``."""
    terms = {k: v for k, v in losses.items() if k != "loss"}
    for name, value in terms.items():
        if not math.isfinite(value):
            listed = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
            raise NonFiniteError(f"step {step}: loss term {name!r} is {value} ({listed})")


def check_weights(named: Iterable[tuple[str, torch.Tensor]], step: int) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite weight (before any save)."""
    for name, value in named:
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise NonFiniteError(f"step {step}: non-finite values in {name!r}; nothing saved")


__all__ = [
    "NonFiniteError",
    "PendingSteps",
    "Read",
    "STATISTICS",
    "StepValues",
    "autocast",
    "check_weights",
    "first_nonfinite",
    "grad_scaler",
]
