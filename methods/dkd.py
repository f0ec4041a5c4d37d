r"""Decoupled knowledge distillation (DKD), per pixel.

Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge Distillation", CVPR 2022.

For student logits z^S and teacher logits z^T of shape (N, K, h, w), temperature τ and
p = softmax(z / τ) over the K classes, at every valid pixel (label t ≠ ignore, the set Ω):

- binary target/non-target split b = [p_t, 1 − p_t] and the target-class term
  TCKD = KL(b^T ‖ b^S) = p^T_t log(p^T_t / p^S_t) + (1 − p^T_t) log((1 − p^T_t) / (1 − p^S_t));
- non-target distribution p̂_k = p_k / (1 − p_t) for k ≠ t and the non-target-class term
  NCKD = KL(p̂^T ‖ p̂^S) = Σ_{k≠t} p̂^T_k (log p̂^T_k − log p̂^S_k);

    L_DKD = ω(progress) · τ² · mean_Ω(α·TCKD + β·NCKD),   ω = min(1, progress / warmup)

with α = 1, β = 8, τ = 4 and a linear warm-up of the whole term over the first 8% of training
steps (the paper's warm-up, counted in steps here). Every logarithm comes from ``log_softmax``
or ``logsumexp`` (log(1 − p_t) = logsumexp over the non-target entries of log p), so the terms
and their gradients are finite for any finite logits, e.g. |z| ~ 1e4.

The decomposition KL(p^T ‖ p^S) = TCKD + (1 − p^T_t)·NCKD (paper, Eq. 4) holds per pixel; DWLD
(methods/dwld.py) reuses :func:`tckd_nckd` and :func:`decoupled_loss` with per-pixel weights.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, Batch, Method, resize_labels, resize_like
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Gt, Interval
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform


def tckd_nckd(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, tau: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pixel (TCKD, NCKD, p^T_t) for (N, K, ...) logits and (N, ...) int64 targets in [0, K).

    Returns three tensors of the target's shape. Pixels without a label must be given some class
    in [0, K) (their values are then meaningless and are masked by the caller). Needs K ≥ 2.
    """
    log_ps = F.log_softmax(student_logits / tau, dim=1)
    log_pt = F.log_softmax(teacher_logits / tau, dim=1)
    return decoupled_terms(log_ps, log_pt, target)


def decoupled_terms(
    log_ps: Tensor, log_pt: Tensor, target: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(TCKD, NCKD, p^T_t) from (N, K, ...) log-probabilities log p^S, log p^T at temperature τ.

    The target entry of the non-target KL is excluded by masking before the exponential, so no
    ``0 · log 0`` or ``0 · ∞`` appears in the forward or the backward pass.
    """
    index = target.unsqueeze(1)
    is_target = torch.zeros_like(log_ps, dtype=torch.bool).scatter_(1, index, True)
    # log p_t and log(1 − p_t), both from log-probabilities (never log of a probability).
    log_ps_t, log_pt_t = log_ps.gather(1, index), log_pt.gather(1, index)
    log_ps_n = log_ps.masked_fill(is_target, float("-inf")).logsumexp(dim=1, keepdim=True)
    log_pt_n = log_pt.masked_fill(is_target, float("-inf")).logsumexp(dim=1, keepdim=True)
    tckd = log_pt_t.exp() * (log_pt_t - log_ps_t) + log_pt_n.exp() * (log_pt_n - log_ps_n)
    # log p̂_k = log p_k − log(1 − p_t) for k ≠ t; the target entry gets weight exactly 0.
    log_hat_s, log_hat_t = log_ps - log_ps_n, log_pt - log_pt_n
    hat_t = log_hat_t.masked_fill(is_target, float("-inf")).exp()
    nckd = (hat_t * (log_hat_t - log_hat_s).masked_fill(is_target, 0.0)).sum(dim=1)
    return tckd.squeeze(1), nckd, log_pt_t.squeeze(1).exp()


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """mean_Ω x for (N, h, w) ``x`` and boolean ``valid``; a graph-connected 0 when Ω is empty.

    No host synchronisation: the sum over Ω is divided by max(|Ω|, 1).
    """
    total = torch.where(valid, x, torch.zeros_like(x)).sum()
    return total / valid.sum().clamp_min(1)


def decoupled_loss(
    tckd: Tensor,
    nckd: Tensor,
    w_target: float | Tensor,
    w_nontarget: float | Tensor,
    valid: Tensor,
    tau: float,
) -> Tensor:
    """τ² · mean_Ω(w^T·TCKD + w^N·NCKD) for (N, h, w) terms; weights are scalars or (N, h, w)."""
    return tau**2 * masked_mean(w_target * tckd + w_nontarget * nckd, valid)


def align_logits(
    student_logits: Tensor, teacher_logits: Tensor, label: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Put logits and labels on the student's (h, w) grid: (z^S, z^T, target, valid).

    The teacher's (N, K, h', w') logits are resized bilinearly, the (N, H, W) labels by nearest
    neighbour; ``valid`` (N, h, w) marks Ω and ``target`` is the label with ignored pixels set
    to class 0 (masked by ``valid`` downstream).
    """
    zt = resize_like(teacher_logits, student_logits).to(student_logits.dtype)
    label = resize_labels(label, tuple(student_logits.shape[-2:]))
    valid = label != IGNORE_INDEX
    return student_logits, zt, label.masked_fill(~valid, 0), valid


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    label: Tensor,
    tau: float = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
) -> Tensor:
    """τ² · mean_Ω(α·TCKD + β·NCKD) for (N, K, h, w) logits and (N, H, W) labels (no warm-up)."""
    zs, zt, target, valid = align_logits(student_logits, teacher_logits, label)
    tckd, nckd, _ = tckd_nckd(zs, zt, target, tau)
    return decoupled_loss(tckd, nckd, alpha, beta, valid, tau)


def warmup_factor(progress: float, warmup: float) -> float:
    """Linear warm-up ω = min(1, progress / warmup); 1 when ``warmup`` is 0."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)


Temperature = Annotated[float, Gt(0)]
Warmup = Annotated[float, Interval(0, 1, closed="left")]
"""The fraction of training over which the term is warmed up linearly."""


def check_logit_options(method: str, num_classes: int) -> None:
    """Raise :class:`KdbenchError` for a task DKD-style losses cannot use (one class)."""
    if num_classes < 2:
        raise KdbenchError(f"method {method!r}: needs at least 2 classes, got {num_classes}")


@register_method("dkd", "Zhao et al. CVPR 2022: decoupled target / non-target class KD per pixel")
class DKD(Method):
    """Pixel-wise DKD on the logits, with the paper's linear warm-up of the whole term."""

    taps = ("logits",)
    search_space = {
        "tau": Choice(1.0, 2.0, 4.0, 8.0),
        "alpha": LogUniform(0.1, 10.0),
        "beta": LogUniform(0.5, 16.0),
    }
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        tau: Temperature = 4.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        warmup: Warmup = 0.08,
        weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        check_logit_options("dkd", student.num_classes)
        self.tau, self.alpha, self.beta = tau, alpha, beta
        self.warmup, self.weight = warmup, weight

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        loss = dkd_loss(
            student.logits, teacher.logits, batch.label, self.tau, self.alpha, self.beta
        )
        scale = self.weight * warmup_factor(batch.progress, self.warmup)
        return {"dkd": scale * loss}


__all__ = [
    "DKD",
    "align_logits",
    "check_logit_options",
    "decoupled_loss",
    "decoupled_terms",
    "dkd_loss",
    "masked_mean",
    "tckd_nckd",
    "warmup_factor",
]
