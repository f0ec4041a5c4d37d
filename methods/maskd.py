r"""MasKD's losses: learnable receptive tokens on the teacher's logits, and the masked logit loss.

Huang, You, Wang, Qian and Xu, "Masked Distillation with Receptive Tokens", ICLR 2023;
hunto/MasKD, ``segmentation/losses/maskd.py`` (the student loss) and
``segmentation/train_mask_module.py`` (the token-learning stage). Read from the authors' code;
the definitions are pinned in shared/METHODS.md.

MasKD runs in two stages. Stage 1 learns T receptive tokens E ∈ R^{T×K} on the frozen teacher;
each token gives a per-pixel mask over the teacher's raw logits z^T ∈ R^{N×K×h×w}:

    M_t(p) = σ(⟨E_t, z^T(p)⟩)                                        (:func:`token_masks`)

trained by the cross-entropy of the upsampled sum Σ_t M_t ⊙ z^T against the labels plus a
dice term that keeps the T masks apart (:func:`token_loss`, :func:`dice_term`):

    dice = mean over the N·T·(T−1) ordered pairs t ≠ u of 2⟨m_t, m_u⟩ / (‖m_t‖² + ‖m_u‖² + 2e-12)

with m_t the flattened mask of one image. Stage 2 freezes E and distils the student's raw
logits z^S at the head's resolution, every pixel, no KD term (:func:`maskd_loss`):

    L = 0.5 · mean over (N, T, K) of Σ_p M_t(p)²·(z^S_k(p) − z^T_k(p))² / (Σ_p M_t(p) + 1e-5)

Identity: zero tokens give M_t = 1/2 everywhere, so with P = h·w pixels

    L = 0.5 · mean_{n,k} (1/4)·Σ_p (z^S − z^T)² / (P/2 + 1e-5)
      = 0.25 · MSE(z^S, z^T) · P/(P + 2e-5),

0.25 × the logit MSE up to the constant in the denominator. Under data parallelism every mask
and every term is per image; only the final mean over the batch is per rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.method import IGNORE_INDEX

MASK_EPS = 1e-5
"""Added to Σ_p M_t(p) in :func:`maskd_loss` (the authors' constant)."""
DICE_EPS = 2e-12
"""Added to the dice denominator (the authors' constant)."""


def token_masks(teacher_logits: Tensor, tokens: Tensor) -> Tensor:
    """M = σ(E · z^T) per pixel: (N, T, h, w) masks from (N, K, h, w) logits and (T, K) tokens."""
    return torch.sigmoid(torch.einsum("tk,nkhw->nthw", tokens, teacher_logits))


def maskd_loss(student_logits: Tensor, teacher_logits: Tensor, tokens: Tensor) -> Tensor:
    """MasKD's student loss for (N, K, h, w) logits of one size and (T, K) tokens (module doc).

    The masks come from the teacher and carry no gradient to the tokens' input; the loss
    reaches the student only.
    """
    masks = token_masks(teacher_logits, tokens)  # (N, T, h, w)
    diff = (student_logits - teacher_logits).square()  # (N, K, h, w)
    weighted = torch.einsum("nthw,nkhw->ntk", masks.square(), diff)
    norm = masks.sum(dim=(2, 3)).unsqueeze(-1) + MASK_EPS  # (N, T, 1)
    return 0.5 * (weighted / norm).mean()


def dice_term(masks: Tensor) -> Tensor:
    """Mean over the N·T·(T−1) ordered pairs t ≠ u of 2⟨m_t, m_u⟩ / (‖m_t‖² + ‖m_u‖² + 2e-12)
    for (N, T, h, w) masks; 0 when T = 1 (no pair)."""
    n, t = masks.shape[:2]
    flat = masks.flatten(2)
    inner = flat @ flat.transpose(1, 2)  # (N, T, T)
    sq = inner.diagonal(dim1=1, dim2=2)  # (N, T)
    ratio = 2 * inner / (sq.unsqueeze(2) + sq.unsqueeze(1) + DICE_EPS)
    off = ~torch.eye(t, dtype=torch.bool, device=masks.device)
    pairs = n * t * (t - 1)
    return (ratio * off).sum() / max(pairs, 1)


def token_loss(teacher_logits: Tensor, tokens: Tensor, labels: Tensor) -> Tensor:
    """Stage 1: CE(up(Σ_t M_t ⊙ z^T), y) + dice(M) for (N, K, h, w) teacher logits, (T, K)
    tokens and (N, H, W) labels (ignored pixels excluded; the sum is upsampled bilinearly)."""
    masks = token_masks(teacher_logits, tokens)
    combined = masks.sum(dim=1, keepdim=True) * teacher_logits  # Σ_t M_t ⊙ z^T
    combined = F.interpolate(combined, size=labels.shape[-2:], mode="bilinear",
                             align_corners=False)
    valid = labels != IGNORE_INDEX
    ce = F.cross_entropy(combined, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return ce / valid.sum().clamp_min(1) + dice_term(masks)


def initial_tokens(num_tokens: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """The authors' initial tokens: (T, K) normal with mean 0 and standard deviation 0.01."""
    return torch.randn(num_tokens, num_classes, generator=generator) * 0.01


__all__ = ["dice_term", "initial_tokens", "maskd_loss", "token_loss", "token_masks"]
