r"""RGB-X teachers: RGB plus a geometric modality X (depth, disparity or surface normals).

The LIX paper (Guo et al., "LIX: Implicitly Infusing Spatial Geometric Prior Knowledge into
Visual Semantic Segmentation for Autonomous Driving", arXiv 2403.08215) distils a duplex-encoder
RGB-X teacher into an RGB-only student; its duplex encoder follows SNE-RoadSeg (Fan et al.,
ECCV 2020), where the RGB and X encoders run side by side and the fused feature of every stage
is fed back into the RGB stream. Four teachers are registered, all built as::

    cls(backbone, num_classes, x_channels, *, x_backbone=None, decoder_channels=64,
        pretrained=None, head="fpn", head_options=None)

and called as ``teacher(rgb, x) -> Outputs`` with rgb (N, 3, H, W) and x (N, C_x, H, W).
``pretrained`` (True: timm's default weights; a path: a local weights file; see
:mod:`kdbench.models.backbone`) initialises the RGB branch, and the X branch too when it has the
same backbone (its first conv adapted to C_x by the mean over the RGB filters); an X branch with
a different backbone starts from timm's random initialisation. ``head`` and ``head_options``
choose the decoder head (:mod:`kdbench.models.heads`), with its output stride and auxiliary
head.

- ``intermediate``: duplex encoder fused at every stage (:class:`GatedFusion`), FPN decoder on
  the fused features; ``stages`` are the fused features.
- ``late``: two independent segmenters, logits fused by a 1x1 conv over their concatenation.
- ``cmx``: CMX's cross-modal rectification and fusion at every stage
  (:mod:`kdbench.models.cmx`).
- ``rgb``: a plain RGB segmenter (classic KD baseline); x is ignored.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdbench.errors import KdbenchError
from kdbench.models.backbone import Encoder, Pretrained
from kdbench.models.heads import aspp_channels, build_head, head_forward, split_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.models.student import Segmenter
from kdbench.registry import register_teacher

__all__ = [
    "DuplexEncoderTeacher",
    "GatedFusion",
    "IntermediateFusionTeacher",
    "LateFusionTeacher",
    "RGBTeacher",
]


def _x_pretrained(backbone: str, x_backbone: str, pretrained: Pretrained) -> Pretrained:
    """The weights file of the X branch: ``pretrained`` only if it is the same architecture."""
    return pretrained if x_backbone == backbone else None


def _check_reductions(
    backbone: str, x_backbone: str, rgb: tuple[int, ...], x: tuple[int, ...]
) -> None:
    """Stage-wise fusion needs both branches to have the same stage reductions."""
    if rgb != x:
        raise KdbenchError(
            f"x_backbone {x_backbone!r} has stage reductions {x} but backbone {backbone!r} has "
            f"{rgb}: the two branches are fused stage by stage and must match"
        )


class GatedFusion(nn.Module):
    r"""Fuse an X stage feature into the RGB stage feature of the same resolution.

    With r (N, C_r, h, w) and x (N, C_x, h, w):

        p = BN(W_p x)                        1x1 conv C_x -> C_r, no bias
        g = sigmoid(W_g [r; p] + b_g)        1x1 conv 2·C_r -> C_r, per pixel and channel
        f = r + g ⊙ p                        (N, C_r, h, w)

    The projection lets the branches differ in width; the gate lets the teacher weigh the
    geometric cue per position and channel (e.g. ignore invalid depth) instead of the plain sum
    of SNE-RoadSeg, which it reduces to when g = 1. The RGB path is an identity, so the fused
    feature is the RGB feature plus a correction.
    """

    def __init__(self, rgb_channels: int, x_channels: int) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(x_channels, rgb_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(rgb_channels),
        )
        self.gate = nn.Conv2d(2 * rgb_channels, rgb_channels, kernel_size=1)

    def forward(self, r: Tensor, x: Tensor) -> Tensor:  # noqa: D102 - documented on the class
        p = self.project(x)
        g = torch.sigmoid(self.gate(torch.cat([r, p], dim=1)))
        return r + g * p


class DuplexEncoderTeacher(nn.Module):
    """What every stage-wise fusing teacher shares: an RGB and an X encoder of equal stage
    reductions, a decoder head on the fused stages, and the forward pass around ``encode``.

    Subclasses build their fusion modules in ``build_fusion()`` (called once both encoders
    exist) and define ``encode(rgb, x)`` -> the fused stage features; ``tap_info`` describes
    those as having the RGB branch's channels.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        x_channels: int,
        *,
        x_backbone: str | None = None,
        decoder_channels: int = 64,
        pretrained: Pretrained = None,
        head: str = "fpn",
        head_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        x_backbone = x_backbone or backbone
        stride = split_options(head_options)[0]["output_stride"]
        self.rgb_encoder = Encoder(
            backbone, in_chans=3, pretrained=pretrained, output_stride=stride
        )
        self.x_encoder = Encoder(
            x_backbone,
            in_chans=x_channels,
            pretrained=_x_pretrained(backbone, x_backbone, pretrained),
            output_stride=stride,
            x_branch=True,
        )
        rgb, xe = self.rgb_encoder, self.x_encoder
        _check_reductions(backbone, x_backbone, rgb.reductions, xe.reductions)
        self.feedback = rgb.steppable and xe.steppable
        self.build_fusion()
        self.decoder, self.aux, self.aux_weight, self.aux_stage = build_head(
            head,
            rgb.channels,
            rgb.reductions,
            decoder_channels,
            num_classes,
            dict(head_options or {}),
        )
        self.aux_in_eval = False
        """Whether the auxiliary head also runs in eval mode (:func:`emit_aux`)."""
        self.tap_info = TapInfo(
            stage_channels=rgb.channels,
            stage_reductions=rgb.reductions,
            decoder_channels=decoder_channels,
            num_classes=num_classes,
            logit_reduction=self.decoder.reduction,
            aspp_channels=aspp_channels(self.decoder),
        )

    def build_fusion(self) -> None:
        """Create the fusion modules (the subclass's own)."""
        raise NotImplementedError

    def encode(self, rgb: Tensor, x: Tensor) -> tuple[Tensor, ...]:
        """The fused stage features, shallow to deep."""
        raise NotImplementedError

    def forward(self, rgb: Tensor, x: Tensor) -> Outputs:
        """rgb (N, 3, H, W), x (N, C_x, H, W) -> logits (N, K, H/r, W/r), fused stages, decoder."""
        stages = self.encode(rgb, x)
        feature, logits, taps = head_forward(self.decoder, stages)
        aux = self.aux(stages[self.aux_stage]) if self.aux is not None and (
            self.training or self.aux_in_eval) else None
        return Outputs(logits=logits, stages=stages, decoder=feature, aux=aux, **taps)


@register_teacher("intermediate", "duplex RGB-X encoder fused at every stage (LIX, SNE-RoadSeg)")
class IntermediateFusionTeacher(DuplexEncoderTeacher):
    r"""Duplex encoder: RGB and X branches fused at every stage, FPN decoder on the fused maps.

    With E^R_i, E^X_i the i-th stages of the two encoders (the X encoder built with
    ``in_chans = x_channels``) and F_i a :class:`GatedFusion`:

        r_0 = rgb, q_0 = x
        q_i = E^X_i(q_{i-1}),  f_i = F_i(E^R_i(r_{i-1}), q_i),  r_i = f_i     (feedback)

    so the fused feature of stage i is the RGB stream's input to stage i+1, while the X
    branch runs on its own features. ``self.feedback`` is True when both backbones can be run
    stage by stage (:attr:`Encoder.steppable`: timm's CNN feature wrappers); otherwise the two
    encoders run whole and f_i = F_i(E^R(rgb)_i, E^X(x)_i) without feedback (then a fusion
    module of a stage the decoder does not read, e.g. a stride-2 stem, gets no gradient).

    ``Outputs.stages`` are the fused f_i (N, C^R_i, H / r_i, W / r_i): the teacher taps for
    feature distillation; ``tap_info.stage_channels`` are the RGB branch's channels.
    """

    def build_fusion(self) -> None:
        """One :class:`GatedFusion` per stage (X width projected to the RGB width)."""
        self.fusions = nn.ModuleList(
            GatedFusion(cr, cx)
            for cr, cx in zip(self.rgb_encoder.channels, self.x_encoder.channels, strict=True)
        )

    def encode(self, rgb: Tensor, x: Tensor) -> tuple[Tensor, ...]:
        """The fused stage features f_i, shallow to deep (maths in the class docstring)."""
        if not self.feedback:
            pairs = zip(self.rgb_encoder(rgb), self.x_encoder(x), strict=True)
            return tuple(fuse(r, q) for fuse, (r, q) in zip(self.fusions, pairs, strict=True))
        fused: list[Tensor] = []
        r, q = rgb, x
        for i, fuse in enumerate(self.fusions):
            q = self.x_encoder.step(i, q)
            r = fuse(self.rgb_encoder.step(i, r), q)
            fused.append(r)
        return tuple(fused)


@register_teacher("late", "two single-modality segmenters, logits fused by a 1x1 conv")
class LateFusionTeacher(nn.Module):
    r"""Late fusion: an RGB segmenter and an X segmenter, fused only at the logits.

    With (d^R, z^R) and (d^X, z^X) the decoder features (N, D, h, w) and logits (N, K, h, w)
    of the two :class:`Segmenter` branches:

        z = W [z^R; z^X] + b          1x1 conv 2K -> K, initialised to W = [I  I], b = 0

    so training starts from the sum of the two branches' logits and may learn any per-class
    linear mix. Taps: ``stages`` are the per-stage concatenations [f^R_i; f^X_i]
    (N, C^R_i + C^X_i, H / r_i, W / r_i), everything the teacher knows at stage i; ``decoder``
    is [d^R; d^X] (N, 2D, h, w), of which z is a linear 1x1 function, as for the other models;
    with a deeplabv3 head ``aspp`` is [a^R; a^X] (N, 2D, h, w).
    With an auxiliary head (head option ``aux``) both branches have one and ``aux`` is the sum
    of their auxiliary logits (like z at initialisation).
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        x_channels: int,
        *,
        x_backbone: str | None = None,
        decoder_channels: int = 64,
        pretrained: Pretrained = None,
        head: str = "fpn",
        head_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        x_backbone = x_backbone or backbone
        heads = {"head": head, "head_options": head_options}
        self.rgb_branch = Segmenter(
            backbone,
            num_classes,
            decoder_channels=decoder_channels,
            pretrained=pretrained,
            **heads,
        )
        self.x_branch = Segmenter(
            x_backbone,
            num_classes,
            decoder_channels=decoder_channels,
            pretrained=_x_pretrained(backbone, x_backbone, pretrained),
            in_chans=x_channels,
            x_branch=True,
            **heads,
        )
        self.aux_weight = self.rgb_branch.aux_weight
        rgb, xb = self.rgb_branch.tap_info, self.x_branch.tap_info
        _check_reductions(backbone, x_backbone, rgb.stage_reductions, xb.stage_reductions)
        self.fuse = nn.Conv2d(2 * num_classes, num_classes, kernel_size=1)
        with torch.no_grad():
            eye = torch.eye(num_classes)[:, :, None, None]
            self.fuse.weight.copy_(torch.cat([eye, eye], dim=1))
            self.fuse.bias.zero_()
        self.tap_info = TapInfo(
            stage_channels=tuple(
                a + b for a, b in zip(rgb.stage_channels, xb.stage_channels, strict=True)
            ),
            stage_reductions=rgb.stage_reductions,
            decoder_channels=2 * decoder_channels,
            num_classes=num_classes,
            logit_reduction=rgb.logit_reduction,
            aspp_channels=None if rgb.aspp_channels is None else 2 * rgb.aspp_channels,
        )

    def forward(self, rgb: Tensor, x: Tensor) -> Outputs:
        """rgb (N, 3, H, W), x (N, C_x, H, W) -> fused logits, concatenated stages and decoder."""
        a, b = self.rgb_branch(rgb), self.x_branch(x)
        return Outputs(
            aux=None if a.aux is None or b.aux is None else a.aux + b.aux,
            logits=self.fuse(torch.cat([a.logits, b.logits], dim=1)),
            stages=tuple(
                torch.cat([fa, fb], dim=1) for fa, fb in zip(a.stages, b.stages, strict=True)
            ),
            decoder=torch.cat([a.decoder, b.decoder], dim=1),
            aspp=None if a.aspp is None or b.aspp is None else torch.cat([a.aspp, b.aspp], dim=1),
        )


@register_teacher("rgb", "RGB-only segmenter (classic KD baseline); ignores x")
class RGBTeacher(Segmenter):
    """A plain :class:`Segmenter` built with the teacher signature; ``x`` is ignored.

    ``x_channels`` is accepted for a uniform constructor and unused; an ``x_backbone`` is an
    error, since this teacher has no X branch.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        x_channels: int,
        *,
        x_backbone: str | None = None,
        decoder_channels: int = 64,
        pretrained: Pretrained = None,
        head: str = "fpn",
        head_options: dict[str, Any] | None = None,
    ) -> None:
        if x_backbone is not None:
            raise KdbenchError(f"teacher 'rgb' has no X branch: remove x_backbone={x_backbone!r}")
        super().__init__(
            backbone,
            num_classes,
            decoder_channels=decoder_channels,
            pretrained=pretrained,
            head=head,
            head_options=head_options,
        )
