r"""Attention transfer (AT): distil where the network's activations concentrate.

Zagoruyko and Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", ICLR 2017 (activation-based attention,
p = 2, as in the authors' code and in the segmentation benchmark of CIRKD, Yang et al. CVPR 2022).

For a stage feature f of shape (N, C, H, W) the attention map is the channel mean of the squared
activations, L2-normalised over the H·W positions of each image:

    q(f)_{n,h,w} = (1/C) Σ_c f_{n,c,h,w}²,     a(f)_n = q(f)_n / ‖q(f)_n‖₂

and the loss sums over the distilled stages s (default the last two) the mean over the N·H·W
entries of the squared difference:

    L_AT = Σ_s mean_{n,h,w} (a(f_S)_{n,h,w} − a(f_T)_{n,h,w})²

The maps have one channel, so no adapter is needed and the student and teacher channel counts
may differ. When the spatial sizes differ, the student's q is resized bilinearly to the
teacher's (H, W) before the normalisation. Each a(f)_n is a unit vector, so the loss is at most
4/(H·W) per stage; hence the large default weight 1e4, the value CIRKD uses for AT
(``--lambda-at 10000.`` in its ``train_scripts/train_kd/train_at.sh``, with the same mean
reduction in its ``losses/at.py``; CIRKD applies it to one feature, here it is per stage).

``feature`` picks the maps f (:data:`kdbench.method.FeatureSource`): the encoder stages
(default), the decoder feature, or a DeepLabV3 head's ASPP projection (``aspp``, before its 3x3
conv); ``stages`` is read only for ``feature="stages"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.method import (
    Batch,
    FeatureSource,
    Method,
    feature_pairs,
    resolve_stages,
    stage_sum,
)
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import LogUniform


def attention_map(feature: Tensor, size: tuple[int, ...] | None = None) -> Tensor:
    """a(f): (N, C, H, W) -> (N, H'·W'), the L2-normalised channel mean of f².

    Computed in float32 or wider (f² overflows float16 for |f| > 256). With ``size`` given, the
    (N, 1, H, W) map q is resized bilinearly to ``size`` = (H', W') before the normalisation.
    """
    feature = feature.to(torch.promote_types(feature.dtype, torch.float32))
    q = feature.pow(2).mean(dim=1, keepdim=True)
    if size is not None and tuple(q.shape[-2:]) != tuple(size):
        q = F.interpolate(q, size=size, mode="bilinear", align_corners=False)
    return F.normalize(q.flatten(1), p=2.0, dim=1)


def at_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """mean_{n,h,w} (a(f_S) − a(f_T))² for one stage; f_S is resized to f_T's size if needed."""
    a_t = attention_map(teacher_feature)
    a_s = attention_map(student_feature, size=tuple(teacher_feature.shape[-2:]))
    return (a_s - a_t).pow(2).mean()


@register_method("at", "Zagoruyko & Komodakis 2017: match L2-normalised spatial attention maps")
class AT(Method):
    """Attention transfer on the selected features (no learnable parameters)."""

    taps = ("stages",)
    search_space = {"weight": LogUniform(1e3, 1e5)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        weight: float = 1e4,
        stages: Sequence[int] = (-2, -1),
        feature: FeatureSource = "stages",
    ) -> None:
        super().__init__(student, teacher)
        self.weight, self.feature = weight, feature
        self.stages = resolve_stages("at", stages, student, teacher) if feature == "stages" else ()

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        # at_loss resizes the attention maps, not the features: the pairs are left unaligned
        pairs = feature_pairs(
            student, teacher, self.feature, self.stages, resize=False, cast=False
        )
        return {"at": self.weight * stage_sum(at_loss(fs, ft) for fs, ft in pairs)}


__all__ = ["AT", "at_loss", "attention_map"]
