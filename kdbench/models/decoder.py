"""A light FPN-style segmentation decoder shared by the student and the teachers.

After the top-down pathway of FPN (Lin et al., "Feature Pyramid Networks for Object Detection",
CVPR 2017), reduced to what a segmentation head needs. For the encoder stages it reads,
f_1 .. f_L (shallow to deep), f_i of shape (N, C_i, H / r_i, W / r_i):

    y_L = W_L f_L
    y_i = W_i f_i + up(y_{i+1}, size of f_i)       for i = L-1 .. 1
    d   = ReLU(BN(Conv3x3(y_1)))                   (N, D, H / r_1, W / r_1)
    z   = W_cls d + b                              (N, K, H / r_1, W / r_1)

with W_i 1x1 lateral convs C_i -> D (with bias), ``up`` bilinear resizing and W_cls a 1x1
classifier D -> K. The decoder reads only the stages with reduction r_i >= ``min_reduction``
(default 4: a stride-2 stem feature would quadruple the head's cost for little gain), so the
logits are at 1/4 of the input for the usual CNNs; if no stage qualifies, all stages are read
and the output is at the shallowest stage's resolution (e.g. 1/16 for a ViT).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPNDecoder", "stages_from"]


def stages_from(stage_reductions: Sequence[int], min_reduction: int) -> tuple[int, ...]:
    """Indices of the stages with reduction r_i >= ``min_reduction`` (every stage if none has),
    shallow to deep: the stages a multi-scale head reads."""
    used = [i for i, r in enumerate(stage_reductions) if r >= min_reduction]
    return tuple(used or range(len(stage_reductions)))


class FPNDecoder(nn.Module):
    """FPN top-down decoder and 1x1 classifier (maths in the module docstring).

    ``forward(stages)`` takes all encoder stage features (as listed by ``stage_channels``) and
    returns ``(d, z)``: the decoder feature (N, D, h, w) and the logits (N, K, h, w) with
    (h, w) = input size / ``self.reduction``. ``self.used`` are the indices of the stages read.
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        stage_reductions: Sequence[int],
        channels: int,
        num_classes: int,
        *,
        min_reduction: int = 4,
    ) -> None:
        super().__init__()
        self.used: tuple[int, ...] = stages_from(stage_reductions, min_reduction)
        self.reduction: int = stage_reductions[self.used[0]]
        self.channels = channels
        self.lateral = nn.ModuleList(
            nn.Conv2d(stage_channels[i], channels, kernel_size=1) for i in self.used
        )
        self.smooth = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, stages: Sequence[Tensor]) -> tuple[Tensor, Tensor]:  # noqa: D102
        y = self.lateral[-1](stages[self.used[-1]])
        for lateral, i in zip(reversed(self.lateral[:-1]), reversed(self.used[:-1]), strict=True):
            f = stages[i]
            up = F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False)
            y = lateral(f) + up
        d = self.smooth(y)
        return d, self.classifier(d)
