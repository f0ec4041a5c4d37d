"""Fake model outputs and batches shared by the feature-method tests."""

from __future__ import annotations

import torch

from kdbench.method import IGNORE_INDEX, Batch
from kdbench.models.outputs import Outputs, TapInfo


def stage_outputs(
    info: TapInfo, gen: torch.Generator, size: int = 16, scale: float = 1.0
) -> Outputs:
    """Outputs with random float64 stage features for two ``size`` x ``size`` images."""
    stages = tuple(
        scale * torch.randn(2, c, size // r, size // r, generator=gen, dtype=torch.float64)
        for c, r in zip(info.stage_channels, info.stage_reductions, strict=True)
    )
    logits = torch.zeros(2, info.num_classes, size // 4, size // 4, dtype=torch.float64)
    return Outputs(logits=logits, stages=stages, decoder=logits)


def ignored_batch(size: int = 16) -> Batch:
    """Two ``size`` x ``size`` images whose every pixel is ignored (labels are not read)."""
    label = torch.full((2, size, size), IGNORE_INDEX)
    return Batch(rgb=torch.zeros(2, 3, size, size), x=torch.zeros(2, 1, size, size), label=label)


def rand(seed: int, *shape: int) -> torch.Tensor:
    """A float64 standard-normal tensor of ``shape``, determined by ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def batch(label: torch.Tensor) -> Batch:
    """A batch around (N, H, W) ``label``; its images are zeros (only the labels matter)."""
    n, h, w = label.shape
    return Batch(rgb=torch.zeros(n, 3, h, w), x=torch.zeros(n, 1, h, w), label=label)
