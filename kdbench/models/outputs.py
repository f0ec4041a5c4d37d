"""What a segmentation model hands to a distillation method: its taps and their shapes."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class TapInfo:
    """Static description of a model's taps, known before the first forward pass.

    Methods read it in their constructor to size adapters (for example a 1x1 conv from
    ``student.stage_channels[-1]`` to ``teacher.stage_channels[-1]``).
    """

    stage_channels: tuple[int, ...]
    """Channels of each encoder stage, shallow to deep."""
    stage_reductions: tuple[int, ...]
    """Downsampling factor of each encoder stage relative to the input (e.g. 4, 8, 16, 32)."""
    decoder_channels: int
    """Channels of the decoder feature that the classifier reads."""
    num_classes: int
    logit_reduction: int
    """Downsampling factor of the logits relative to the input (4 for the built-in decoder)."""
    aspp_channels: int | None = None
    """Channels of the ASPP projection (``Outputs.aspp``), or None when the head has none."""


@dataclass
class Outputs:
    """One forward pass of a student or teacher.

    - ``logits``: (N, K, h, w) at the decoder's resolution (input / ``logit_reduction``).
    - ``stages``: encoder stage features (N, C_i, H / r_i, W / r_i), shallow to deep; for an
      RGB-X teacher these are the fused RGB-X features.
    - ``decoder``: (N, D, h, w), the feature the 1x1 classifier turns into ``logits``.
    - ``aux``: (N, K, h', w') logits of the auxiliary FCN head (head option ``aux``), or None;
      in training mode, or in eval mode after :func:`kdbench.models.heads.emit_aux` (the tap
      ``aux`` of a method, e.g. MasKD, on a frozen teacher).
    - ``aspp``: (N, D_a, h, w), the ASPP projection of a DeepLabV3 head (before the 3x3 conv
      that gives ``decoder``; :class:`~kdbench.models.heads.DeepLabV3Head`), or None for a head
      without one.
    """

    logits: Tensor
    stages: tuple[Tensor, ...]
    decoder: Tensor
    aux: Tensor | None = None
    aspp: Tensor | None = None
