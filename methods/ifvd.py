r"""Intra-class feature variation distillation (IFVD).

Wang, Zhou, Zhou, Wang and Wang, "Intra-class Feature Variation Distillation for Semantic
Segmentation", ECCV 2020.

For a distilled feature f (N, C, H, W) and labels y nearest-resized to (H, W), with Ω_n the
labelled pixels of image n and Ω_{n,k} = {p ∈ Ω_n : y_p = k}, each class present in an image
has a prototype, the masked mean of its features,

    c_{n,k} = (1 / |Ω_{n,k}|) Σ_{p ∈ Ω_{n,k}} f_{n,:,p}

and each labelled pixel's intra-class feature variation map is the cosine similarity to its
own class prototype,

    M_{n,p} = cos(f_{n,:,p}, c_{n,y_p}) = ⟨f̂_{n,:,p}, ĉ_{n,y_p}⟩,   x̂ = x / max(‖x‖₂, 1e-12)

computed for the student and the teacher separately (so the channel counts may differ and no
adapter is needed). The loss is the mean squared difference of the two maps,

    L_IFVD = Σ_features mean_Ω (M^S − M^T)²       (default ``reduction="valid"``)

over the labelled pixels Ω of the batch. Classes absent from an image have no prototype and
contribute nothing; a batch without labelled pixels gives a graph-connected zero.
``reduction="all"`` divides the same sum by all N·H·W pixels instead: the authors' code, whose
unlabelled pixels take their own feature as "prototype" (cosine 1 on both sides, difference 0)
and whose MSE averages over every pixel. The student feature is resized bilinearly to the
teacher's (H, W) when they differ.

Defaults: the last encoder stage and weight 20 (METHODS.md). The authors distil the feature of
the PSP head that the classifier reads, with ``lambda_ifv`` = 200 and the all-pixel mean, next
to pixel-wise KD and an adversarial term; ``feature="decoder"`` distils the decoder feature
(the classifier's input) instead of the stages, as they (and CIRKD's re-implementation) do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.method import (
    IGNORE_INDEX,
    Batch,
    FeatureSource,
    Method,
    feature_pairs,
    resize_labels,
    resolve_stages,
    stage_sum,
)
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import LogUniform

Reduction = Literal["valid", "all"]


def prototype_cosine_map(feature: Tensor, label: Tensor, num_classes: int) -> Tensor:
    """cos(f_p, c_{y_p}) at every pixel: (N, C, H, W) feature, (N, H, W) labels -> (N, H, W).

    Prototypes c_{n,k} are per-image masked means over the labelled pixels of class k (labels
    already at the feature's size, :data:`IGNORE_INDEX` for unlabelled pixels). Unlabelled
    pixels get 0 in the output. Computed in float32 at least.
    """
    flat = feature.flatten(2).to(torch.promote_types(feature.dtype, torch.float32))  # (N, C, P)
    valid = (label != IGNORE_INDEX).flatten(1)  # (N, P)
    index = torch.where(valid, label.flatten(1), torch.zeros_like(label.flatten(1)))
    member = F.one_hot(index, num_classes).to(flat.dtype) * valid[..., None]  # (N, P, K)
    sums = flat @ member  # (N, C, K)
    prototypes = sums / member.sum(dim=1).clamp_min(1.0)[:, None, :]
    own = prototypes @ member.transpose(1, 2)  # (N, C, P): each pixel's class prototype
    cosine = (F.normalize(flat, dim=1) * F.normalize(own, dim=1)).sum(dim=1)
    return cosine.reshape(label.shape)


def ifvd_loss(
    student_feature: Tensor,
    teacher_feature: Tensor,
    label: Tensor,
    num_classes: int,
    reduction: Reduction = "valid",
) -> Tensor:
    """(M^S − M^T)² summed over labelled pixels, divided by their number or by N·H·W.

    Both features share the spatial size of ``label`` (N, H, W). The number is clamped to 1,
    so a batch without labelled pixels gives a graph-connected zero (no host synchronisation).
    """
    valid = label != IGNORE_INDEX
    m_s = prototype_cosine_map(student_feature, label, num_classes)
    m_t = prototype_cosine_map(teacher_feature, label, num_classes)
    total = torch.where(valid, (m_s - m_t).pow(2), 0.0).sum()
    return total / (valid.sum().clamp_min(1) if reduction == "valid" else label.numel())


@register_method("ifvd", "Wang et al. 2020: match cosine maps of features to class prototypes")
class IFVD(Method):
    """IFVD on the selected encoder stages or the decoder feature (no learnable parameters)."""

    taps = ("stages", "decoder")
    search_space = {"weight": LogUniform(2.0, 200.0)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        weight: float = 20.0,
        stages: Sequence[int] = (-1,),
        reduction: Reduction = "valid",
        feature: FeatureSource = "stages",
    ) -> None:
        super().__init__(student, teacher)
        self.weight, self.reduction, self.feature = weight, reduction, feature
        self.stages = (
            resolve_stages("ifvd", stages, student, teacher) if feature == "stages" else ()
        )
        self.num_classes = student.num_classes

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        pairs = feature_pairs(
            student, teacher, self.feature, self.stages, detach=True, cast=False
        )
        losses = (
            ifvd_loss(
                fs, ft, resize_labels(batch.label, tuple(ft.shape[-2:])), self.num_classes,
                self.reduction,
            )
            for fs, ft in pairs
        )
        return {"ifvd": self.weight * stage_sum(losses)}


__all__ = ["IFVD", "ifvd_loss", "prototype_cosine_map"]
