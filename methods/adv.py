r"""SKD's holistic (adversarial) term as CIRKD trains it: a discriminator on raw logits.

Liu et al., "Structured Knowledge Distillation for Semantic
Segmentation", CVPR 2019 (the holistic term); as re-implemented by CIRKD (Yang et al., CVPR
2022): winycg/CIRKD ``losses/adv.py`` and ``utils/sagan.py``. Read from CIRKD's code;
definitions pinned in shared/METHODS.md.

:class:`Discriminator` D reads the raw logits z (N, K, h, w) alone (no image):

    BatchNorm(K) → [SN conv 4×4 s2 p1 → LeakyReLU 0.1] × 3 (K → 64 → 128 → 256)
    → self-attention → SN conv 4×4 s2 p1 (→ 512) → LeakyReLU 0.1 → self-attention
    → conv 4×4 (→ 1)

(SN = spectral normalisation; each self-attention block, SAGAN's, adds γ·attention to its input
with γ initialised to 0). A 64×128 input gives an (N, 1, 1, 5) output. Hinge losses:

- student (generator) term: :func:`hinge_generator_loss` (D(z^S)) = −mean D(z^S), weighted by
  λ_adv (default 0.001);
- discriminator term: :func:`hinge_discriminator_loss` (D(z^T), D(z^S.detach())) =
  mean ReLU(1 − D(z^T)) + mean ReLU(1 + D(z^S)), weighted by λ_d (default 0.1), minimised by
  D's own optimiser (Adam, lr 4e-4, betas (0.9, 0.99)), one step per student step.

A zero discriminator gives 0 and 2. Small maps (kdbench's rule): D's four stride-2 convolutions
and its last 4×4 convolution need at least 64 pixels a side, so :func:`discriminator_input`
resizes logits smaller than 64 in either dimension bilinearly up to at least 64 in it (larger
inputs are left alone). Under data parallelism each rank's D sees its own batch; the
BatchNorm is to be synchronised across ranks, as CIRKD does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

MIN_SIDE = 64
"""Smallest input side the discriminator accepts (:func:`discriminator_input`)."""


class SelfAttention(nn.Module):
    """SAGAN's self-attention over positions: x + γ·V·softmax(QᵀK)ᵀ, Q and K 1×1 convs to
    C/8 channels, V a 1×1 conv to C channels, γ a learnable scalar initialised to 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, max(1, channels // 8), 1)
        self.key = nn.Conv2d(channels, max(1, channels // 8), 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)  # (N, C', P)
        k = self.key(x).flatten(2)
        attention = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (N, P, P): row i over j
        out = self.value(x).flatten(2) @ attention.transpose(1, 2)  # (N, C, P)
        return x + self.gamma * out.view(n, c, h, w)


def _down(c_in: int, c_out: int) -> list[nn.Module]:
    """Spectral-norm conv 4×4 stride 2 padding 1, then LeakyReLU(0.1)."""
    return [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.1)]


class Discriminator(nn.Sequential):
    """CIRKD's SAGAN-style discriminator on (N, K, h, w) logits (module docstring); output
    (N, 1, h/16 − 3, w/16 − 3) scores."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(
            nn.BatchNorm2d(num_classes),
            *_down(num_classes, 64),
            *_down(64, 128),
            *_down(128, 256),
            SelfAttention(256),
            *_down(256, 512),
            SelfAttention(512),
            nn.Conv2d(512, 1, 4),
        )


def discriminator_input(logits: Tensor) -> Tensor:
    """``logits`` bilinearly resized so that each side is at least :data:`MIN_SIDE` (64);
    unchanged when both sides already are."""
    h, w = logits.shape[-2:]
    if h >= MIN_SIDE and w >= MIN_SIDE:
        return logits
    size = (max(h, MIN_SIDE), max(w, MIN_SIDE))
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def hinge_generator_loss(d_student: Tensor) -> Tensor:
    """−mean D(z^S): the student's adversarial term (before λ_adv)."""
    return -d_student.mean()


def hinge_discriminator_loss(d_teacher: Tensor, d_student: Tensor) -> Tensor:
    """mean ReLU(1 − D(z^T)) + mean ReLU(1 + D(z^S)): D's hinge loss (before λ_d); the
    student's scores must come from detached logits."""
    return F.relu(1.0 - d_teacher).mean() + F.relu(1.0 + d_student).mean()


__all__ = [
    "Discriminator",
    "SelfAttention",
    "discriminator_input",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
]
