r"""FitNets: hint-based feature distillation.

Romero, Ballas, Ebrahimi Kahou, Chassang, Gatta and Bengio, "FitNets: Hints for Thin Deep
Nets", ICLR 2015.

For each distilled encoder stage s (default the last one) with student feature f_S of shape
(N, C_S, H_S, W_S) and teacher feature f_T of shape (N, C_T, H, W), a learnable 1x1 conv
adapter A (C_S -> C_T, no bias; the identity when C_S = C_T) maps the student into the
teacher's space ("regressor" in the paper), and

    L_FitNet = Σ_s mean_{n,c,h,w} (R(A(f_S)) − f_T)²

where R is a bilinear resize to the teacher's spatial size (H, W), used only when the sizes
differ. The adapter is trained jointly with the student by this loss; the paper's separate
hint-training stage is not used (the segmentation convention of CIRKD, Yang et al. CVPR 2022).

``feature`` picks the maps (:data:`kdbench.method.FeatureSource`): the encoder stages
(default), the decoder feature, or a DeepLabV3 head's ASPP projection (``aspp``, before its 3x3
conv), one adapter per map; ``stages`` is read only for ``feature="stages"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.connectors import channel_adapter
from kdbench.method import (
    Batch,
    FeatureSource,
    Method,
    distilled_channels,
    feature_pairs,
    resolve_stages,
    stage_sum,
)
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import LogUniform


def fitnet_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Mean squared error over all elements of two (N, C, H, W) features of the same shape."""
    return F.mse_loss(student_feature, teacher_feature)


@register_method("fitnet", "Romero et al. 2015: MSE between adapted student and teacher features")
class FitNet(Method):
    """FitNets hints on the selected features, one 1x1 adapter per map.

    The student feature is adapted, then bilinearly resized to the teacher's spatial size.
    """

    taps = ("stages",)
    search_space = {"weight": LogUniform(1.0, 100.0)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        weight: float = 10.0,
        stages: Sequence[int] = (-1,),
        feature: FeatureSource = "stages",
    ) -> None:
        super().__init__(student, teacher)
        self.weight, self.feature = weight, feature
        self.stages = (
            resolve_stages("fitnet", stages, student, teacher) if feature == "stages" else ()
        )
        channels = zip(
            distilled_channels(student, feature, self.stages),
            distilled_channels(teacher, feature, self.stages),
            strict=True,
        )
        self.adapters = nn.ModuleList(channel_adapter(cs, ct) for cs, ct in channels)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        pairs = feature_pairs(student, teacher, self.feature, self.stages, self.adapters)
        return {"fitnet": self.weight * stage_sum(fitnet_loss(fs, ft) for fs, ft in pairs)}


__all__ = ["FitNet", "fitnet_loss"]
