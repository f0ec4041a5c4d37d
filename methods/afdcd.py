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

The total is λ_kd·KD(τ = 1, mean over all pixels) + λ_fd·L_fd + λ_ctr·L_ctr, and the gradient
norm of the connectors (align and projector) is clipped at 15 before every optimiser step
(:meth:`AfDCD.before_optimizer_step`). Projectors (option ``projector``): ``plain`` = conv3×3 →
ReLU → conv3×3; ``enhanced`` = the authors' EnhancedProjector: x₁ = ReLU(conv3×3(x)),
x₂ = ReLU(conv3×3(x₁)), out = (conv3×3(x₁) + conv3×3(x₂)) / 2; all at the teacher's width.
Data parallelism: every term is a mean over the rank's images of per-image terms (KD a mean
over its pixels; L_fd and L_ctr sums over its images divided by its N), nothing couples two
images, and the random masks are drawn for the global batch, of which each rank takes its
images' share (:func:`kdbench.distributed.rank_share`); so W ranks with B/W images each have,
averaged, the single process's loss on B images, and its gradients (the connectors' gradients
are averaged over the ranks before they are clipped). Tested with 2 gloo ranks.

Small maps (kdbench's rule, not the authors'): the defaults need H and W divisible by
pool·patch = 16 and C by the number of groups. :func:`fitted_sizes` shrinks them to fit any
map: pool' = gcd(pool, H, W), patch' = gcd(patch, H/pool', W/pool'), groups' = gcd(groups, C),
which leaves the defaults unchanged on maps that fit them.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.distributed import current, rank_share
from kdbench.method import Batch, Method, resize_like, resolve_stages
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Ge, Gt, Interval
from kdbench.registry import register_method
from kdbench.search import LogUniform
from methods.kd import kd_loss


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
    shape: tuple[int, ...],
    kind: str,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(N, 1, H, W) {0, 1} mask M for an (N, C, H, W) map: ``random`` zeroes each position
    i.i.d. with probability ``ratio``; ``centre`` zeroes the centre third (rows and columns
    ⌊H/3⌋..⌊2H/3⌋, likewise W), ``ratio`` unused."""
    n, _, h, w = shape
    if kind == "random":
        return (torch.rand(n, 1, h, w, generator=generator, device=device) >= ratio).float()
    mask = torch.ones(n, 1, h, w, device=device)
    mask[..., h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 0.0
    return mask


def _conv3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1)


class EnhancedProjector(nn.Module):
    """The authors' enhanced projector: (conv(x₁) + conv(x₂)) / 2 with x₁ = ReLU(conv(x)) and
    x₂ = ReLU(conv(x₁)), every conv 3×3 at ``channels`` channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1, self.block_2 = _conv3(channels), _conv3(channels)
        self.adaptor_1, self.adaptor_2 = _conv3(channels), _conv3(channels)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x_1 = F.relu(self.block_1(x))
        x_2 = F.relu(self.block_2(x_1))
        return (self.adaptor_1(x_1) + self.adaptor_2(x_2)) / 2


def make_projector(kind: str, channels: int) -> nn.Module:
    """``plain`` (conv3×3 → ReLU → conv3×3) or ``enhanced`` (:class:`EnhancedProjector`)."""
    if kind == "enhanced":
        return EnhancedProjector(channels)
    return nn.Sequential(_conv3(channels), nn.ReLU(), _conv3(channels))


Positive = Annotated[float, Gt(0)]
Count = Annotated[int, Ge(1)]


@register_method("afdcd", "Fan et al. NeurIPS 2023: KD + masked reconstruction + patch contrast")
class AfDCD(Method):
    """Af-DCD on the logits (KD) and one encoder stage (default the last); module docstring."""

    taps = ("logits", "stages")
    search_space = {
        "fd_weight": LogUniform(2e-7, 2e-5),
        "ctr_weight": LogUniform(5e-4, 5e-2),
    }
    """What ``tune:`` searches (:mod:`kdbench.search`): the feature-term weights."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        kd_weight: float = 1.0,
        kd_tau: Positive = 1.0,
        fd_weight: float = 2e-6,
        ctr_weight: float = 5e-3,
        tau: Positive = 0.07,
        groups: Count = 16,
        patch: Count = 4,
        pool: Count = 4,
        mask: Literal["random", "centre"] = "random",
        mask_ratio: Annotated[float, Interval(0, 1, closed="left")] = 0.75,
        projector: Literal["plain", "enhanced"] = "plain",
        clip: Positive = 15.0,
        stage: int = -1,
    ) -> None:
        super().__init__(student, teacher)
        (self.stage,) = resolve_stages("afdcd", (stage,), student, teacher)
        c_s, c_t = student.stage_channels[stage], teacher.stage_channels[stage]
        self.align = nn.Conv2d(c_s, c_t, 1) if c_s != c_t else nn.Identity()
        self.projector = make_projector(projector, c_t)
        self.kd_weight, self.kd_tau = kd_weight, kd_tau
        self.fd_weight, self.ctr_weight, self.clip = fd_weight, ctr_weight, clip
        self.tau, self.groups, self.patch, self.pool = tau, groups, patch, pool
        self.mask, self.mask_ratio = mask, mask_ratio

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        zs = student.logits
        kd = kd_loss(zs, resize_like(teacher.logits, zs).to(zs.dtype), self.kd_tau)
        f_t = teacher.stages[self.stage]
        f_s = resize_like(self.align(student.stages[self.stage]), f_t)
        n, *rest = f_s.shape
        drawn = (n * current().world, *rest)  # for the global batch: rank_share's docstring
        keep = rank_share(spatial_mask(drawn, self.mask, self.mask_ratio, device=f_s.device))
        g = self.projector(f_s * keep.to(f_s.dtype))
        f_t = f_t.to(g.dtype)
        contrast = patch_contrast_loss(g, f_t, self.tau, self.groups, self.patch, self.pool)
        return {
            "kd": self.kd_weight * kd,
            "fd": self.fd_weight * reconstruction_loss(g, f_t),
            "ctr": self.ctr_weight * contrast,
        }

    def before_optimizer_step(self) -> None:
        """Clip the gradient norm of the connectors (align and projector) at ``clip``."""
        params = [p for p in self.parameters() if p.grad is not None]
        if params:
            nn.utils.clip_grad_norm_(params, self.clip)


__all__ = [
    "AfDCD",
    "EnhancedProjector",
    "fitted_sizes",
    "patch_contrast_loss",
    "make_projector",
    "reconstruction_loss",
    "spatial_mask",
]
