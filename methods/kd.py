r"""Pixel-wise logit distillation (KD).

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531,
2015, applied per pixel as in the segmentation KD literature (CIRKD, Yang et al. CVPR 2022).

For student logits z^S and teacher logits z^T of shape (N, K, h, w) and temperature τ, with
p = softmax(z / τ) over the K classes at every pixel:

    L_KD = τ² · mean_P KL(p^T ‖ p^S),   KL(p^T ‖ p^S) = Σ_k p^T_k (log p^T_k − log p^S_k)

where mean_P averages over all N·h·w pixels (the CIRKD convention, default) or, with
``reduction="valid"``, over the pixels whose label is not ignored (mean_Ω).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.method import IGNORE_INDEX, Batch, Method, resize_labels, resize_like
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform


def pixel_kl(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """KL(p^T ‖ p^S) at every pixel: (N, K, h, w) logits -> (N, h, w), from log-softmaxes.

    Computed as Σ_k p^T_k (log p^T_k − log p^S_k) with both logs from ``log_softmax``, so it is
    finite for any finite logits (a zero p^T_k contributes exactly 0).
    """
    log_ps = F.log_softmax(student_logits / tau, dim=1)
    log_pt = F.log_softmax(teacher_logits / tau, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    tau: float = 1.0,
    valid: Tensor | None = None,
) -> Tensor:
    """τ² · mean KL(p^T ‖ p^S) over all pixels, or over the pixels where ``valid`` (N, h, w).

    With ``valid`` given: the sum over valid pixels divided by max(their count, 1), so a batch
    without a valid pixel gives a graph-connected zero, with no host synchronisation.
    """
    kl = pixel_kl(student_logits, teacher_logits, tau)
    if valid is None:
        return tau**2 * kl.mean()
    return tau**2 * torch.where(valid, kl, 0.0).sum() / valid.sum().clamp_min(1)


@register_method("kd", "Hinton et al. 2015: τ²·KL(p^T‖p^S) per pixel, mean over pixels")
class KD(Method):
    """Pixel-wise KD on the logits (teacher logits resized bilinearly to the student's)."""

    taps = ("logits",)
    search_space = {"tau": Choice(1.0, 2.0, 4.0, 8.0), "weight": LogUniform(0.1, 10.0)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        tau: float = 1.0,
        weight: float = 1.0,
        reduction: Literal["all", "valid"] = "all",
    ) -> None:
        super().__init__(student, teacher)
        self.tau, self.weight, self.reduction = tau, weight, reduction

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        zs = student.logits
        zt = resize_like(teacher.logits, zs)
        valid = None
        if self.reduction == "valid":
            valid = resize_labels(batch.label, tuple(zs.shape[-2:])) != IGNORE_INDEX
        return {"kd": self.weight * kd_loss(zs, zt.to(zs.dtype), self.tau, valid)}


__all__ = ["KD", "kd_loss", "pixel_kl"]
