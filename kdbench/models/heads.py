r"""Decoder heads, registered by name like methods: ``fpn``, ``deeplabv3``, ``pspnet``, ``mlp``.

Every head is built as ``cls(stage_channels, stage_reductions, channels, num_classes,
**options)`` from the encoder's stages f_1 .. f_L (shallow to deep, f_i of shape
(N, C_i, H / r_i, W / r_i)) and its ``forward(stages)`` returns ``(d, z)``: the decoder feature
d (N, D, h, w) that the final 1x1 classifier reads, and the logits z = W_cls d + b
(N, K, h, w), with (h, w) = input / ``reduction``. So every head exposes the same taps
(encoder stages, decoder feature, logits) and every method works with every head. A head may
expose more taps, named in its class attribute ``head_taps`` and computed on the way to d:
deeplabv3's ``aspp`` (its ASPP projection, before the 3x3 conv that gives d). The model reads
them through :func:`head_forward`; :func:`heads_with_tap` names the heads that have one.

Options shared by all heads and handled by the model, not the head (:func:`split_options`):
``output_stride`` (8, 16 or 32: the encoder's last reduction, through timm's dilated
convolutions where the backbone supports it; null = the backbone's own, usually 32), ``aux``
(weight of the auxiliary FCN head's cross-entropy; 0 = no auxiliary head) and ``aux_stage``
(the encoder stage it reads, default −2: the second deepest, ResNet's layer3).

A head that reads the deepest stage alone (deeplabv3, pspnet) gives logits at that stage's
reduction (8 at output stride 8); fpn and mlp read every stage with reduction >= 4 and give
logits at 1/4.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import KdbenchError
from kdbench.models.decoder import FPNDecoder, stages_from
from kdbench.options import Ge, Option, resolve, signature_options
from kdbench.registry import register_head


def _common(
    *,
    output_stride: Literal[8, 16, 32] | None = None,
    aux: Annotated[float, Ge(0)] = 0.0,
    aux_stage: int = -2,
) -> None:
    """The options every head takes (module docstring), declared for the option resolver."""


COMMON_OPTIONS: dict[str, Option] = signature_options(_common)
"""Options of every head that the model (encoder, auxiliary head, trainer) uses."""


def head_options(name: str) -> dict[str, Option]:
    """Every option of head ``name``: the common ones, then its constructor's own (the keyword
    parameters after the four inputs every head is built from)."""
    from kdbench.registry import HEADS

    return {**COMMON_OPTIONS, **signature_options(HEADS.get(name), skip=4)}


def split_options(options: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` -> (the common options resolved, defaults filled in; the head's own)."""
    own = dict(options or {})
    given = {k: own.pop(k) for k in COMMON_OPTIONS if k in own}
    return resolve(COMMON_OPTIONS, given, "head"), own


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(t: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)


register_head("fpn", "FPN top-down pathway over the stages at 1/4 and deeper (logits at 1/4)")(
    FPNDecoder
)


class _Classifier(nn.Module):
    """Dropout then the 1x1 classifier D -> K, shared by the heads below."""

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, d: Tensor) -> Tensor:  # noqa: D102
        return self.classifier(self.dropout(d))


@register_head("deeplabv3", "Chen et al. 2017: ASPP on the deepest stage (logits at its stride)")
class DeepLabV3Head(nn.Module):
    r"""DeepLabV3's ASPP head (Chen et al., "Rethinking Atrous Convolution for Semantic Image
    Segmentation", arXiv 1706.05587) on the deepest stage f_L (N, C_L, h, w):

        a_0 = ReLU(BN(W_0 f_L))                                    1x1
        a_j = ReLU(BN(W_j *_{r_j} f_L)),  j = 1, 2, 3              3x3, dilation r_j
        a_4 = up(ReLU(BN(W_4 avgpool(f_L))), (h, w))               image pooling
        a   = ReLU(BN(W_p [a_0; ..; a_4]))                         (N, D, h, w)  tap ``aspp``
        d   = ReLU(BN(Conv3x3(a)))                                 (N, D, h, w)  ``decoder``
        z   = W_cls dropout(d) + b

    ``rates`` default to (12, 24, 36) at output stride 8 and (6, 12, 18) otherwise, as in the
    paper. Each branch has D channels. :meth:`aspp` gives a and :meth:`tail` (d, z) from it;
    ``forward`` is their composition.
    """

    head_taps: ClassVar[tuple[str, ...]] = ("aspp",)

    def __init__(
        self,
        stage_channels: Sequence[int],
        stage_reductions: Sequence[int],
        channels: int,
        num_classes: int,
        *,
        rates: Sequence[int] | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.used = (len(stage_channels) - 1,)
        self.reduction = stage_reductions[-1]
        self.channels = channels
        c = stage_channels[-1]
        rates = tuple(rates or ((12, 24, 36) if self.reduction <= 8 else (6, 12, 18)))
        self.branches = nn.ModuleList(
            [conv_bn_relu(c, channels)] + [conv_bn_relu(c, channels, 3, r) for r in rates]
        )
        self.pool = conv_bn_relu(c, channels)
        self.project = conv_bn_relu((len(rates) + 2) * channels, channels)
        self.smooth = conv_bn_relu(channels, channels, 3)
        self.head = _Classifier(channels, num_classes, dropout)

    def aspp(self, stages: Sequence[Tensor]) -> Tensor:
        """a = ReLU(BN(W_p [a_0; ..; a_4])) (N, D, h, w): the ASPP projection of f_L."""
        f = stages[-1]
        pooled = self.pool(F.adaptive_avg_pool2d(f, 1))
        parts = [b(f) for b in self.branches] + [pooled.expand(-1, -1, *f.shape[-2:])]
        return self.project(torch.cat(parts, dim=1))

    def tail(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """(d, z) from the ASPP projection a: the 3x3 conv, then the classifier."""
        d = self.smooth(a)
        return d, self.head(d)

    def forward(self, stages: Sequence[Tensor]) -> tuple[Tensor, Tensor]:  # noqa: D102
        return self.tail(self.aspp(stages))


@register_head("pspnet", "Zhao et al. 2017: pyramid pooling on the deepest stage")
class PSPHead(nn.Module):
    r"""PSPNet's pyramid pooling module (Zhao et al., "Pyramid Scene Parsing Network", CVPR
    2017) on the deepest stage f_L (N, C_L, h, w), with bins b in ``bins`` (1, 2, 3, 6):

        p_b = up(ReLU(BN(W_b avgpool_{b x b}(f_L))), (h, w))       C_L / len(bins) channels
        d   = ReLU(BN(Conv3x3([f_L; p_1; ..; p_6])))               (N, D, h, w)
        z   = W_cls dropout(d) + b
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        stage_reductions: Sequence[int],
        channels: int,
        num_classes: int,
        *,
        bins: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.used = (len(stage_channels) - 1,)
        self.reduction = stage_reductions[-1]
        self.channels = channels
        c = stage_channels[-1]
        self.bins = tuple(int(b) for b in bins)
        branch = max(1, c // len(self.bins))
        self.branches = nn.ModuleList(conv_bn_relu(c, branch) for _ in self.bins)
        self.bottleneck = conv_bn_relu(c + branch * len(self.bins), channels, 3)
        self.head = _Classifier(channels, num_classes, dropout)

    def forward(self, stages: Sequence[Tensor]) -> tuple[Tensor, Tensor]:  # noqa: D102
        f = stages[-1]
        pooled = [
            _up(branch(F.adaptive_avg_pool2d(f, b)), f.shape[-2:])
            for b, branch in zip(self.bins, self.branches, strict=True)
        ]
        d = self.bottleneck(torch.cat([f, *pooled], dim=1))
        return d, self.head(d)


@register_head("mlp", "Xie et al. 2021 (SegFormer): all-MLP head over the stages at 1/4 and deeper")
class MLPHead(nn.Module):
    r"""SegFormer's all-MLP decoder (Xie et al., "SegFormer: Simple and Efficient Design for
    Semantic Segmentation with Transformers", NeurIPS 2021) over the stages f_i with reduction
    r_i >= ``min_reduction`` (all stages if none qualifies), f_1 the shallowest of them:

        g_i = up(W_i f_i, size of f_1)                             1x1 (linear) C_i -> D
        d   = ReLU(BN(W_f [g_L; ..; g_1]))                         1x1 fuse L·D -> D
        z   = W_cls dropout(d) + b
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        stage_reductions: Sequence[int],
        channels: int,
        num_classes: int,
        *,
        min_reduction: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.used = stages_from(stage_reductions, min_reduction)
        self.reduction = stage_reductions[self.used[0]]
        self.channels = channels
        self.linear = nn.ModuleList(
            nn.Conv2d(stage_channels[i], channels, kernel_size=1) for i in self.used
        )
        self.fuse = conv_bn_relu(len(self.used) * channels, channels)
        self.head = _Classifier(channels, num_classes, dropout)

    def forward(self, stages: Sequence[Tensor]) -> tuple[Tensor, Tensor]:  # noqa: D102
        size = stages[self.used[0]].shape[-2:]
        parts = [_up(lin(stages[i]), size) for lin, i in zip(self.linear, self.used, strict=True)]
        d = self.fuse(torch.cat(parts[::-1], dim=1))
        return d, self.head(d)


class AuxHead(nn.Module):
    r"""The auxiliary FCN head of PSPNet/DeepLab training recipes on an intermediate stage f
    (N, C, h, w): z_aux = W_cls dropout_{0.1}(ReLU(BN(Conv3x3(f)))) with C/4 hidden channels.
    Its cross-entropy, weighted by the head option ``aux``, is added to the training loss; it is
    not used at evaluation. A frozen teacher whose method reads its ``aux`` tap (MasKD) runs it
    in eval mode too (:func:`emit_aux`)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        hidden = max(1, in_channels // 4)
        self.body = conv_bn_relu(in_channels, hidden, 3)
        self.head = _Classifier(hidden, num_classes, 0.1)

    def forward(self, f: Tensor) -> Tensor:  # noqa: D102
        return self.head(self.body(f))


def head_forward(
    head: nn.Module, stages: Sequence[Tensor]
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """``(d, z, taps)``: the head's decoder feature and logits, and its own taps by name
    (``head_taps``; deeplabv3: ``{"aspp": a}``, computed once on the way to d; else empty)."""
    if "aspp" in getattr(head, "head_taps", ()):
        a = head.aspp(stages)
        d, z = head.tail(a)
        return d, z, {"aspp": a}
    d, z = head(stages)
    return d, z, {}


def aspp_channels(head: nn.Module) -> int | None:
    """Channels of the head's ``aspp`` tap (its width D), or None when it has none."""
    return int(head.channels) if "aspp" in getattr(head, "head_taps", ()) else None


def heads_with_tap(tap: str) -> list[str]:
    """The registered heads whose ``head_taps`` include ``tap`` (for error messages)."""
    from kdbench.registry import HEADS

    return [e.name for e in HEADS if tap in getattr(e.obj, "head_taps", ())]


def emit_aux(model: nn.Module) -> None:
    """Make every part of ``model`` with an auxiliary head give its logits (``Outputs.aux``) in
    eval mode too, for a frozen teacher whose method reads the ``aux`` tap."""
    for module in model.modules():
        if hasattr(module, "aux_in_eval"):
            module.aux_in_eval = True


def build_head(
    name: str,
    stage_channels: Sequence[int],
    stage_reductions: Sequence[int],
    channels: int,
    num_classes: int,
    options: dict[str, Any],
) -> tuple[nn.Module, AuxHead | None, float, int]:
    """The head ``name`` with its own ``options`` (common ones included), its auxiliary head (or
    None), the auxiliary weight and the stage index the auxiliary head reads."""
    from kdbench.registry import HEADS

    common, own = split_options(options)
    try:
        head = HEADS.get(name)(stage_channels, stage_reductions, channels, num_classes, **own)
    except TypeError as err:
        raise KdbenchError(f"head {name!r}: {err}") from err
    stage = common["aux_stage"] % len(stage_channels)
    weight = float(common["aux"])
    aux = AuxHead(stage_channels[stage], num_classes) if weight > 0 else None
    return head, aux, weight, stage
