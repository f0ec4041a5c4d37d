r"""Channel-wise distillation (CWD): match each channel's spatial distribution.

Shu, Liu, Gao, Yan and Shen, "Channel-wise Knowledge Distillation for Dense Prediction",
ICCV 2021.

For student and teacher maps x^S, x^T of shape (N, C, H, W) and temperature τ, every channel
(n, c) is turned into a distribution over its H·W positions,

    φ(x)_{n,c,i} = exp(x_{n,c,i} / τ) / Σ_j exp(x_{n,c,j} / τ),    i, j ∈ the H·W positions,

and the loss is the KL divergence from the teacher's to the student's, summed over positions,
averaged over the N·C channels and scaled by τ²:

    L_CWD = τ² / (N·C) · Σ_{n,c} Σ_i φ^T_{n,c,i} (log φ^T_{n,c,i} − log φ^S_{n,c,i})

Both logs come from ``log_softmax``, so the loss is finite for any finite inputs.

By default x are the logits (C = K classes; the teacher's resized bilinearly to the student's
size when they differ), τ = 4 and weight 3, as in the paper's segmentation setting. With
``on="decoder"`` or ``on="stages"`` the method distils features instead: a learnable 1x1 adapter
maps the student to the teacher's channels (identity when they match), the adapted student map
is resized bilinearly to the teacher's spatial size, C is the teacher's channel count, and the
loss is summed over the selected stages. (CIRKD's implementation divides by the student's channel
count before the adapter; here the normaliser is the channel count of the compared maps.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.connectors import channel_adapter
from kdbench.method import (
    Batch,
    Method,
    check_choice,
    distilled_channels,
    distilled_features,
    resize_like,
    resolve_stages,
)
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform


def cwd_loss(student: Tensor, teacher: Tensor, tau: float = 4.0) -> Tensor:
    """τ²/(N·C) · Σ_{n,c} KL(φ^T_{n,c} ‖ φ^S_{n,c}) for two (N, C, H, W) maps of the same shape.

    φ is the softmax over the H·W positions of each channel at temperature ``tau``.
    """
    n, c = student.shape[:2]
    log_ps = F.log_softmax(student.flatten(2) / tau, dim=2)
    log_pt = F.log_softmax(teacher.flatten(2) / tau, dim=2)
    return tau**2 * (log_pt.exp() * (log_pt - log_ps)).sum() / (n * c)


@register_method("cwd", "Shu et al. 2021: KL of per-channel spatial softmaxes (logits by default)")
class CWD(Method):
    """Channel-wise distillation on the logits, the decoder feature or encoder stages.

    ``on`` picks the maps; ``stages`` (Python indices into the stage list) is read only when
    ``on="stages"``. Feature maps get one 1x1 adapter each (student -> teacher channels).
    """

    taps = ("logits",)
    search_space = {"tau": Choice(1.0, 2.0, 4.0, 8.0), "weight": LogUniform(0.3, 30.0)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo | None,
        *,
        tau: float = 4.0,
        weight: float = 3.0,
        on: Literal["logits", "decoder", "stages"] = "logits",
        stages: Sequence[int] = (-1,),
    ) -> None:
        super().__init__(student, teacher)
        assert teacher is not None
        check_choice("cwd", "on", on, ("logits", "decoder", "stages"))
        self.tau, self.weight, self.on = tau, weight, on
        self.taps = (on,)
        self.stages = resolve_stages("cwd", stages, student, teacher) if on == "stages" else ()
        self.adapters = nn.ModuleList()
        if on != "logits":
            channels = zip(
                distilled_channels(student, on, self.stages),
                distilled_channels(teacher, on, self.stages),
                strict=True,
            )
            self.adapters.extend(channel_adapter(cs, ct) for cs, ct in channels)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        if self.on == "logits":
            zs = student.logits
            loss = cwd_loss(zs, resize_like(teacher.logits, zs).to(zs.dtype), self.tau)
        else:
            pairs = zip(
                distilled_features(student, self.on, self.stages),
                distilled_features(teacher, self.on, self.stages),
                self.adapters,
                strict=True,
            )
            losses = []
            for fs, ft, adapter in pairs:
                fs = resize_like(adapter(fs), ft)
                losses.append(cwd_loss(fs, ft.to(fs.dtype), self.tau))
            loss = torch.stack(losses).sum()
        return {"cwd": self.weight * loss}


__all__ = ["CWD", "cwd_loss"]
