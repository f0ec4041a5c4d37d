r"""Masked generative distillation (MGD).

Yang, Li, Jiang, Zhou, Lin, Yuan and Yang, "Masked Generative Distillation", ECCV 2022.

For each distilled encoder stage (default the last), the student feature f_S (N, C_S, H_S, W_S)
is aligned to the teacher's channels by a learnable 1x1 conv A (no bias; the identity when
C_S = C_T, :func:`kdbench.connectors.channel_adapter`) and resized bilinearly to the teacher's
(H, W) when the sizes differ. A random spatial mask M ∈ {0, 1}^{N×1×H×W} keeps each position
with probability 1 − λ (drawn from torch's RNG at every call), and a learnable generator

    G = conv3x3(C_T -> C_T) -> ReLU -> conv3x3(C_T -> C_T)      (with biases, padding 1)

must rebuild the whole teacher feature f_T from the masked student feature:

    L_MGD = α · Σ_stages (1/N) Σ_{n,c,h,w} (G(A(f_S) ⊙ M) − f_T)²_{n,c,h,w}

Defaults: the last stage, α = 2e-5 and λ = 0.75 (the paper's segmentation setting). The
authors' align conv has a bias; the shared adapter here has none, per METHODS.md. Their
segmentation runs add a channel-wise logit term (CWD with τ = 4, weight 3): that is the
composite row ``mgd+cwd`` here, not part of this method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

import torch
from torch import Tensor, nn

from kdbench.connectors import channel_adapter
from kdbench.method import Batch, Method, feature_pairs, resolve_stages, stage_sum
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Interval
from kdbench.registry import register_method
from kdbench.search import LogUniform, Uniform


def random_keep_mask(like: Tensor, lam: float) -> Tensor:
    """M: (N, 1, H, W) of 0/1 in ``like``'s dtype and device, each entry 1 with probability 1 − λ.

    Drawn with torch's default generator of ``like``'s device, so ``torch.manual_seed`` fixes it.
    """
    n, _, h, w = like.shape
    return (torch.rand(n, 1, h, w, device=like.device) < 1.0 - lam).to(like.dtype)


def generator(channels: int) -> nn.Sequential:
    """The MGD generator: conv3x3 -> ReLU -> conv3x3, ``channels`` in and out, with biases."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, channels, kernel_size=3, padding=1),
    )


def mgd_loss(
    aligned: Tensor, teacher_feature: Tensor, generate: Callable[[Tensor], Tensor], mask: Tensor
) -> Tensor:
    """(1/N) Σ (G(A(f_S) ⊙ M) − f_T)² for an aligned student feature of the teacher's shape.

    ``aligned`` and ``teacher_feature`` are (N, C_T, H, W); ``mask`` is (N, 1, H, W).
    """
    generated = generate(aligned * mask)
    return (generated - teacher_feature).pow(2).sum() / aligned.shape[0]


@register_method("mgd", "Yang et al. 2022: generate teacher features from masked student features")
class MGD(Method):
    """MGD on the selected encoder stages: one align conv and one generator per stage."""

    taps = ("stages",)
    search_space = {"alpha": LogUniform(2e-6, 2e-4), "lam": Uniform(0.5, 0.9)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        alpha: float = 2e-5,
        lam: Annotated[float, Interval(0, 1)] = 0.75,
        stages: Sequence[int] = (-1,),
    ) -> None:
        super().__init__(student, teacher)
        self.alpha, self.lam = alpha, lam
        self.stages = resolve_stages("mgd", stages, student, teacher)
        self.aligns = nn.ModuleList(
            channel_adapter(student.stage_channels[i], teacher.stage_channels[i])
            for i in self.stages
        )
        self.generators = nn.ModuleList(generator(teacher.stage_channels[i]) for i in self.stages)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        pairs = feature_pairs(student, teacher, "stages", self.stages, self.aligns, detach=True)
        losses = (
            mgd_loss(aligned, ft, generate, random_keep_mask(aligned, self.lam))
            for (aligned, ft), generate in zip(pairs, self.generators, strict=True)
        )
        return {"mgd": self.alpha * stage_sum(losses)}


__all__ = ["MGD", "generator", "mgd_loss", "random_keep_mask"]
