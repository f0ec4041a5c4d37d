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
``feature="decoder"``, ``"stages"`` or ``"aspp"`` (a DeepLabV3 head's ASPP projection, before
its 3x3 conv; :data:`kdbench.method.FeatureSource`) the method distils features instead: a learnable
1x1 adapter maps the student to the teacher's channels (identity when they match), the adapted
student map is resized bilinearly to the teacher's spatial size, C is the teacher's channel
count, and the loss is summed over the selected stages.

Deviation from a peer, one option away: CIRKD's re-implementation (``losses/cwd.py``) divides
the feature loss by N·C_S, the student's channel count read before its adapter, although the
sum runs over the C_T adapted channels. The default ``channels="compared"`` divides by the
channel count of the maps actually compared (C_T), so the loss is a mean KL per channel as the
paper writes it; ``channels="student"`` gives CIRKD's normaliser (the loss times C_T / C_S).
On logits the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.connectors import channel_adapter
from kdbench.errors import KdbenchError
from kdbench.method import (
    Batch,
    Method,
    distilled_channels,
    feature_pairs,
    resize_like,
    resolve_stages,
    stage_sum,
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
    """Channel-wise distillation on the logits, the decoder feature, encoder stages or the ASPP
    projection.

    ``feature`` picks the maps; ``stages`` (Python indices into the stage list) is read only
    when ``feature="stages"``. Feature maps get one 1x1 adapter each (student -> teacher
    channels). The option was once called ``on``, which YAML reads as the boolean true; that
    spelling is refused with a message naming ``feature``.
    """

    taps = ("logits",)
    search_space = {"tau": Choice(1.0, 2.0, 4.0, 8.0), "weight": LogUniform(0.3, 30.0)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        tau: float = 4.0,
        weight: float = 3.0,
        feature: Literal["logits", "decoder", "stages", "aspp"] = "logits",
        stages: Sequence[int] = (-1,),
        channels: Literal["compared", "student"] = "compared",
    ) -> None:
        super().__init__(student, teacher)
        self.channels = channels
        self.tau, self.weight, self.feature = tau, weight, feature
        self.taps = (feature,)
        self.stages = resolve_stages("cwd", stages, student, teacher) if feature == "stages" else ()
        self.adapters = nn.ModuleList()
        if feature != "logits":
            channels = zip(
                distilled_channels(student, feature, self.stages),
                distilled_channels(teacher, feature, self.stages),
                strict=True,
            )
            self.adapters.extend(channel_adapter(cs, ct) for cs, ct in channels)

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Refuse the old option name ``on`` (read by YAML as the key ``True``), then resolve."""
        if "on" in options or True in options:
            raise KdbenchError(
                "method 'cwd': option 'on' is now called 'feature' (YAML reads the key 'on' "
                "as true); write feature: logits | decoder | stages | aspp"
            )
        return super().resolve_options(options)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        if self.feature == "logits":
            zs = student.logits
            loss = cwd_loss(zs, resize_like(teacher.logits, zs).to(zs.dtype), self.tau)
        else:
            pairs = feature_pairs(student, teacher, self.feature, self.stages, self.adapters)
            c_students = distilled_channels(self.student_info, self.feature, self.stages)
            losses = []
            for (fs, ft), c_student in zip(pairs, c_students, strict=True):
                term = cwd_loss(fs, ft, self.tau)
                if self.channels == "student":  # CIRKD's normaliser N·C_S (module docstring)
                    term = term * (ft.shape[1] / c_student)
                losses.append(term)
            loss = stage_sum(losses)
        return {"cwd": self.weight * loss}


__all__ = ["CWD", "cwd_loss"]
