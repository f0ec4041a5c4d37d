"""The training step and the data order of one run (evaluation: :mod:`kdbench.train.evaluation`).

Determinism without saved RNG streams: every source of randomness is re-seeded from
``(seed, step)`` (the batch order of an epoch from ``(seed, epoch)``, each sample's augmentation
from ``(seed, step, slot)``: :mod:`kdbench.train.pipeline`), so a run resumed from a
checkpoint at step s draws exactly what the uninterrupted run drew from step s on, and the same
config and seed give the same metrics twice on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.data.base import IGNORE_INDEX
from kdbench.distributed import global_count, unwrapped
from kdbench.method import Batch, MethodSet
from kdbench.train.precision import StepValues, autocast, first_nonfinite

_MIX = 0x9E3779B97F4A7C15


def derived_seed(seed: int, counter: int, stream: int) -> int:
    """A 63-bit seed for (run seed, step or epoch, stream), well mixed (splitmix64 finaliser)."""
    z = (seed * _MIX + counter * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) % 2**63


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """Indices of the batch at ``step``: epochs are seeded permutations, the last partial batch
    of an epoch is dropped (every step sees ``batch_size`` samples)."""
    per_epoch = max(1, n // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, epoch, 1)))
    return order[position * batch_size : (position + 1) * batch_size]


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate at ``step`` (linear warm-up, then the schedule)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "poly":
        return (1 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


@dataclass
class Models:
    """What one training step needs: the trained model, its method, and a frozen teacher
    (run only when the method reads it). Under data parallelism, the model and the method are
    wrapped in DistributedDataParallel for the step (:mod:`kdbench.distributed`)."""

    model: nn.Module
    method: MethodSet | nn.Module
    teacher: nn.Module | None
    uses_x: bool
    """Whether the trained model reads the x modality (teachers do, students do not)."""
    aux_weight: float = 0.0
    """Weight of the auxiliary head's cross-entropy (head option ``aux``)."""


def cross_entropy(logits: Tensor, label: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled pixels of (N, K, H, W) float32 logits.

    The sum over labelled pixels divided by max(count, 1): a batch whose every label is ignored
    gives 0 with a zero gradient (``F.cross_entropy``'s mean would be 0/0 = NaN). When several
    processes train the run, the count is the global batch's over the world size
    (:func:`~kdbench.distributed.global_count`), so that the ranks' mean is the global
    batch's cross-entropy.
    """
    total = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / global_count(label != IGNORE_INDEX).clamp_min(1)


def to_device(
    batch: dict[str, Tensor], device: torch.device, channels_last: bool
) -> dict[str, Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {
        k: v.to(device, non_blocking=True, memory_format=fmt)
        if v.dim() == 4
        else v.to(device, non_blocking=True)
        for k, v in batch.items()
    }


def train_step(
    models: Models,
    data: dict[str, Tensor],
    step: int,
    total_steps: int,
    seed: int,
    train: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> StepValues:
    """One optimisation step (the batch comes augmented from the pipeline): forward, CE +
    distillation terms, backward, update.

    Makes no host synchronisation (the fp16 gradient scaler's own overflow check aside): the
    loss values, the method's statistics (:meth:`~kdbench.method.Method.statistics`) and the
    gradients' finiteness are returned on the device, for
    :class:`~kdbench.train.precision.PendingSteps` to read and check at the next logging
    interval (under ``fp16``, a step with overflowing gradients is one the scaler skipped).
    """
    torch.manual_seed(derived_seed(seed, step, 2))  # dropout, masks, queue sampling
    rgb, x, label = data["rgb"], data["x"], data["label"]
    batch = Batch(rgb=rgb, x=x, label=label, step=step, total_steps=total_steps)
    with autocast(device, train["amp"]):
        out = models.model(rgb, x if models.uses_x else None)
        teacher_out = None
        if models.teacher is not None and unwrapped(models.method).taps:
            with torch.no_grad():
                teacher_out = models.teacher(rgb, x)
        logits = F.interpolate(
            out.logits, size=label.shape[-2:], mode="bilinear", align_corners=False
        )
        terms = {"ce": cross_entropy(logits.float(), label)}
        if out.aux is not None and models.aux_weight > 0:
            aux = F.interpolate(
                out.aux, size=label.shape[-2:], mode="bilinear", align_corners=False
            )
            terms["aux"] = models.aux_weight * cross_entropy(aux.float(), label)
        terms.update(models.method(out, teacher_out, batch))
        statistics = unwrapped(models.method).statistics()
        loss = sum(v.float() for v in terms.values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if scaler.is_enabled():
        scaler.unscale_(optimizer)  # the scaler skips a step whose gradients overflow
    named = [(f"model.{n}", p) for n, p in models.model.named_parameters()]
    named += [(f"method.{n}", p) for n, p in models.method.named_parameters()]
    named = [(n, p) for n, p in named if p.grad is not None]
    bad_gradient = first_nonfinite([p.grad for _, p in named]).to(loss.device)
    unwrapped(models.method).before_optimizer_step()  # e.g. clipping the method's gradients
    scaler.step(optimizer)
    scaler.update()
    reported = (loss, *terms.values(), *statistics.values())
    values = torch.stack([v.detach().float().reshape(()) for v in reported])
    return StepValues(
        step, tuple(terms), torch.cat([values, bad_gradient[None]]), [n for n, _ in named],
        tuple(statistics),
    )
