r"""Af-DCD's feature losses: masked reconstruction and the patch-wise channel-group contrast.

Fan et al., "Augmentation-free Dense
Contrastive Knowledge Distillation for Efficient Semantic Segmentation", NeurIPS 2023;
OSVAI/Af-DCD, ``losses/ocmgd.py``. Read from the authors' code; definitions pinned in
shared/METHODS.md. (The authors' R18 training script cannot parse its own flags, so the mask
and projector their published R18 numbers used are unknown; kdbench's defaults are ``mask:
random`` at 0.75 and the plain projector.)

On the last encoder stage, with the student feature aligned to the teacher's channels and
masked (M zeroes positions), G = proj(align(f_S) ⊙ M) and the teacher feature f_T, both
(N, C, H, W):

- reconstruction (:func:`reconstruction_loss`): L_fd = Σ (G − f_T)² / N;
- patch contrast (:func:`patch_contrast_loss`): both maps are max-pooled by ``pool`` (kernel =
  stride), cut into ``patch``×``patch`` spatial patches, and the C channels into ``groups``
  contiguous groups of C/groups; a token is one (position, group) of a patch, so a patch holds
  patch²·groups tokens (256 at the defaults). For the student token i, the logits are
  −‖g_i − t_j‖₁ / τ over the teacher tokens j of the same patch that are either i itself (the
  positive) or of another channel group (the negatives: 240 at the defaults); the loss is the
  cross-entropy of the positive, summed over every token and patch, divided by H'·W' (the
  pooled map's size) and by N. With one channel group there is no negative and the term is 0.

The total is λ_kd·KD(τ = 1) + λ_fd·L_fd + λ_ctr·L_ctr with the connectors' gradient norm
clipped at 15 (the method, not this file). Under data parallelism every term is per image.

Small maps (kdbench's rule, not the authors'): the defaults need H and W divisible by
pool·patch = 16 and C by the number of groups. :func:`fitted_sizes` shrinks them to fit any
map: pool' = gcd(pool, H, W), patch' = gcd(patch, H/pool', W/pool'), groups' = gcd(groups, C),
which leaves the defaults unchanged on maps that fit them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def reconstruction_loss(g: Tensor, f_t: Tensor) -> Tensor:
    """Σ (G − f_T)² / N for (N, C, H, W) maps of one shape."""
    return (g - f_t).square().sum() / g.shape[0]


def fitted_sizes(
    shape: tuple[int, ...], groups: int, patch: int, pool: int
) -> tuple[int, int, int]:
    """(groups', patch', pool') for an (N, C, H, W) map: the largest divisors of the requested
    sizes that tile the map (module docstring); equal to the request when it fits."""
    _, c, h, w = shape
    pool = math.gcd(pool, h, w)
    patch = math.gcd(patch, h // pool, w // pool)
    return math.gcd(groups, c), patch, pool


def _tokens(x: Tensor, groups: int, patch: int) -> Tensor:
    """(N, C, H', W') -> (N·patches, patch²·groups, C/groups): the tokens of every patch,
    ordered by group, then row, then column inside the patch."""
    n, c, h, w = x.shape
    d, rows, cols = c // groups, h // patch, w // patch
    x = x.reshape(n, groups, d, rows, patch, cols, patch)
    x = x.permute(0, 3, 5, 1, 4, 6, 2)  # n, rows, cols, group, py, px, d
    return x.reshape(n * rows * cols, groups * patch * patch, d)


def patch_contrast_loss(
    g: Tensor, f_t: Tensor, tau: float = 0.07, groups: int = 16, patch: int = 4, pool: int = 4
) -> Tensor:
    """Af-DCD's patch-wise contrast of (N, C, H, W) student G and teacher f_T (module docstring).

    Sizes that do not fit the map are shrunk by :func:`fitted_sizes` first. Distances come from
    ``torch.cdist`` (p = 1); the softmax is a ``logsumexp`` over the positive and the negatives.
    """
    groups, patch, pool = fitted_sizes(tuple(g.shape), groups, patch, pool)
    gs, ts = F.max_pool2d(g, pool), F.max_pool2d(f_t, pool)
    h, w = gs.shape[-2:]
    s_tok, t_tok = _tokens(gs, groups, patch), _tokens(ts, groups, patch)
    logits = -torch.cdist(s_tok, t_tok, p=1) / tau  # (patches, M, M)
    group_of = torch.arange(groups, device=g.device).repeat_interleave(patch * patch)
    same = torch.eye(group_of.numel(), dtype=torch.bool, device=g.device)
    allowed = (group_of[:, None] != group_of[None, :]) | same
    masked = logits.masked_fill(~allowed, float("-inf"))
    rows = masked.logsumexp(dim=-1) - logits.diagonal(dim1=-2, dim2=-1)
    return rows.sum() / (h * w) / g.shape[0]


def spatial_mask(
    shape: tuple[int, ...], kind: str, ratio: float, generator: torch.Generator | None = None
) -> Tensor:
    """(N, 1, H, W) {0, 1} mask M for an (N, C, H, W) map: ``random`` zeroes each position
    i.i.d. with probability ``ratio``; ``centre`` zeroes the centre third (rows and columns
    ⌊H/3⌋..⌊2H/3⌋, likewise W), ``ratio`` unused."""
    n, _, h, w = shape
    if kind == "random":
        return (torch.rand(n, 1, h, w, generator=generator) >= ratio).float()
    mask = torch.ones(n, 1, h, w)
    mask[..., h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 0.0
    return mask


__all__ = ["fitted_sizes", "patch_contrast_loss", "reconstruction_loss", "spatial_mask"]
