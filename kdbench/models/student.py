"""The RGB-only student: one timm encoder and the FPN decoder.

For an image (N, in_chans, H, W) the encoder gives stage features f_i (N, C_i, H / r_i, W / r_i)
(:mod:`kdbench.models.backbone`), and the decoder turns them into a feature (N, D, h, w) and
logits (N, K, h, w) at 1/4 of the input for the usual CNNs (:mod:`kdbench.models.decoder`).
The student is not registered anywhere: any timm name is a student backbone.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdbench.models.backbone import Encoder
from kdbench.models.decoder import FPNDecoder
from kdbench.models.outputs import Outputs, TapInfo

__all__ = ["Segmenter"]


class Segmenter(nn.Module):
    """Encoder + FPN decoder; ``forward(rgb, x=None)`` -> :class:`Outputs`.

    ``x`` (the geometric modality) is accepted so that students and teachers are called alike,
    and ignored. ``tap_info`` describes the outputs before any forward pass: ``stages`` are all
    encoder stages (``stage_channels`` / ``stage_reductions`` from timm's ``feature_info``),
    ``decoder`` has ``decoder_channels`` channels and the logits are at 1/``logit_reduction``.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        *,
        decoder_channels: int = 64,
        pretrained: str | None = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(backbone, in_chans=in_chans, pretrained=pretrained)
        self.decoder = FPNDecoder(
            self.encoder.channels, self.encoder.reductions, decoder_channels, num_classes
        )
        self.tap_info = TapInfo(
            stage_channels=self.encoder.channels,
            stage_reductions=self.encoder.reductions,
            decoder_channels=decoder_channels,
            num_classes=num_classes,
            logit_reduction=self.decoder.reduction,
        )

    def forward(self, rgb: Tensor, x: Tensor | None = None) -> Outputs:
        """(N, in_chans, H, W) -> logits (N, K, H/r, W/r), stages f_i, decoder (N, D, H/r, W/r)."""
        stages = tuple(self.encoder(rgb))
        feature, logits = self.decoder(stages)
        return Outputs(logits=logits, stages=stages, decoder=feature)
