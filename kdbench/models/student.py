"""The RGB-only student: one timm encoder and a decoder head from the head registry.

For an image (N, in_chans, H, W) the encoder gives stage features f_i (N, C_i, H / r_i, W / r_i)
(:mod:`kdbench.models.backbone`), and the head (:mod:`kdbench.models.heads`: fpn, deeplabv3,
pspnet, mlp) turns them into a feature (N, D, h, w) and logits (N, K, h, w). With the head
option ``aux`` > 0 an auxiliary FCN head on stage ``aux_stage`` adds ``Outputs.aux`` in
training mode.
The student is not registered anywhere: any timm name is a student backbone.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from kdbench.models.backbone import Encoder, Pretrained
from kdbench.models.heads import aspp_channels, build_head, head_forward, split_options
from kdbench.models.outputs import Outputs, TapInfo

__all__ = ["Segmenter"]


class Segmenter(nn.Module):
    """Encoder + head; ``forward(rgb, x=None)`` -> :class:`Outputs`.

    ``x`` (the geometric modality) is accepted so that students and teachers are called alike,
    and ignored. ``tap_info`` describes the outputs before any forward pass: ``stages`` are all
    encoder stages (``stage_channels`` / ``stage_reductions`` from timm's ``feature_info``),
    ``decoder`` has ``decoder_channels`` channels and the logits are at 1/``logit_reduction``.
    ``aux_weight`` is the weight of the auxiliary cross-entropy (0: no auxiliary head).
    ``x_branch`` marks the X branch of a teacher (its pretrained first conv is adapted).
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        *,
        decoder_channels: int = 64,
        pretrained: Pretrained = None,
        in_chans: int = 3,
        head: str = "fpn",
        head_options: dict[str, Any] | None = None,
        x_branch: bool = False,
    ) -> None:
        super().__init__()
        common, _ = split_options(head_options)
        self.encoder = Encoder(
            backbone,
            in_chans=in_chans,
            pretrained=pretrained,
            output_stride=common["output_stride"],
            x_branch=x_branch,
        )
        self.decoder, self.aux, self.aux_weight, self.aux_stage = build_head(
            head,
            self.encoder.channels,
            self.encoder.reductions,
            decoder_channels,
            num_classes,
            dict(head_options or {}),
        )
        self.aux_in_eval = False
        """Whether the auxiliary head also runs in eval mode (:func:`emit_aux`)."""
        self.tap_info = TapInfo(
            stage_channels=self.encoder.channels,
            stage_reductions=self.encoder.reductions,
            decoder_channels=decoder_channels,
            num_classes=num_classes,
            logit_reduction=self.decoder.reduction,
            aspp_channels=aspp_channels(self.decoder),
        )

    def forward(self, rgb: Tensor, x: Tensor | None = None) -> Outputs:
        """(N, in_chans, H, W) -> logits (N, K, H/r, W/r), stages f_i, decoder (N, D, H/r, W/r)
        and the head's own taps (deeplabv3: ``aspp``)."""
        stages = tuple(self.encoder(rgb))
        feature, logits, taps = head_forward(self.decoder, stages)
        aux = self.aux(stages[self.aux_stage]) if self.aux is not None and (
            self.training or self.aux_in_eval) else None
        return Outputs(logits=logits, stages=stages, decoder=feature, aux=aux, **taps)
