r"""Structured knowledge distillation (SKD): pair-wise feature affinities plus pixel-wise KD.

Liu, Chen, Liu, Qin, Luo and Wang, "Structured Knowledge Distillation for Semantic
Segmentation", CVPR 2019; extended as Liu, Shu, Wang and Shen, "Structured Knowledge
Distillation for Dense Prediction", TPAMI 2020.

Pair-wise term. For each distilled feature (by default the last encoder stage; with
``feature="decoder"`` the decoder feature the classifier reads, as CIRKD's re-implementation
does), the student feature f_S (N, C_S, H_S, W_S) is resized bilinearly to the teacher's
(H, W) when the sizes differ (the channel counts may differ: the affinity is C-free), then both
features are max-pooled into "nodes" and L2-normalised over channels, F̂ = f / ‖f‖₂ at every
node. With the M nodes of image n as the columns of F̂_n (C × M), the affinity is the
cosine-similarity graph A_n = F̂_nᵀ F̂_n (M × M) and

    L_pair = Σ_features mean_{n, i, j} (A^T_{n,ij} − A^S_{n,ij})²

Two pooling conventions (option ``pool``):

- ``"max2"`` (default, the METHODS.md convention and CIRKD's re-implementation, Yang et al.
  CVPR 2022): max-pool with kernel 2 and stride 2 (ceil mode), so one node per 2×2 pixels;
  F̂ = f / max(‖f‖₂, 1e-12) with the gradient through the norm.
- ``"grid2"`` (the authors' code, pool scale 0.5): ceil-mode max-pool with kernel = stride =
  (⌊H/2⌋, ⌊W/2⌋) (at least 1), i.e. about a 2×2 grid of nodes (3 per side when a side is odd),
  and F̂ = f / (sg(‖f‖₂) + 1e-8) where sg stops the gradient. The authors' ``similarity()``
  detaches the norm for the teacher and the student alike; for the teacher this changes
  nothing, for the student it means the gradient treats the normalisation as a constant (the
  loss value is the same as with a live norm, up to the eps).

Pixel-wise term: the temperature-1 KD of :mod:`methods.kd` on the logits (teacher logits
resized bilinearly to the student's), mean over all pixels:

    L_pixel = mean_P KL(p^T ‖ p^S)

Deviation from the authors' code, one option away: their pixel-wise criterion sums the per-pixel
cross-entropy −Σ_k p^T_k log p^S_k over all N·h·w pixels and divides by h·w only, i.e. it is
N times the mean over pixels (and cross-entropy instead of KL: the two differ by the teacher's
entropy, a constant without gradient). The default ``pixel_reduction="mean"`` (METHODS.md, and
CIRKD's re-implementation) makes the term independent of the batch size;
``pixel_reduction="image_sum"`` gives the authors' scale, N · mean_P KL(p^T ‖ p^S).

Total: ``pair_weight · L_pair + pixel_weight · L_pixel``. Defaults: pair weight 10
(METHODS.md) and pixel weight 10 (the authors' training script: ``lambda_pi`` = 10; it weights
the pair term by ``lambda_pa`` = 0.5 with the ``grid2`` pooling). ``pixel_weight=0`` leaves
the pair term alone.

Out of scope: the holistic term (a conditional Wasserstein GAN whose discriminator scores
teacher vs student score maps) is not implemented; it needs a second optimiser and an
adversarial update, which the method API does not provide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.method import (
    Batch,
    FeatureSource,
    Method,
    feature_pairs,
    resize_like,
    resolve_stages,
    stage_sum,
)
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import LogUniform
from methods.kd import kd_loss

Pool = Literal["max2", "grid2"]


def pool_nodes(feature: Tensor, pool: Pool) -> Tensor:
    """Max-pool an (N, C, H, W) feature into nodes: (N, C, H', W').

    ``max2``: kernel = stride = 2; ``grid2``: kernel = stride = (max(1, H // 2), max(1, W // 2)).
    Both in ceil mode, so border pixels always belong to a node.
    """
    if pool == "max2":
        kernel = (2, 2)
    else:
        kernel = (max(1, feature.shape[-2] // 2), max(1, feature.shape[-1] // 2))
    return F.max_pool2d(feature, kernel_size=kernel, stride=kernel, ceil_mode=True)


def node_affinity(nodes: Tensor, detach_norm: bool = False) -> Tensor:
    """A = F̂ᵀF̂ per image: (N, C, H, W) nodes -> (N, H·W, H·W) cosine similarities.

    F̂ = f / max(‖f‖₂, 1e-12) over C, or with ``detach_norm`` f / (sg(‖f‖₂) + 1e-8) as in the
    authors' code. Computed in float32 at least; zero vectors give zero rows.
    """
    flat = nodes.flatten(2).to(torch.promote_types(nodes.dtype, torch.float32))
    if detach_norm:
        unit = flat / (flat.norm(dim=1, keepdim=True).detach() + 1e-8)
    else:
        unit = F.normalize(flat, p=2.0, dim=1)
    return unit.transpose(1, 2) @ unit


def pair_wise_loss(student_feature: Tensor, teacher_feature: Tensor, pool: Pool = "max2") -> Tensor:
    """mean (A^T − A^S)² over images and node pairs, for two features of the same (H, W).

    ``pool="grid2"`` also switches to the detached norm of the authors' code (module docstring).
    """
    detach = pool == "grid2"
    a_s = node_affinity(pool_nodes(student_feature, pool), detach)
    a_t = node_affinity(pool_nodes(teacher_feature, pool), detach)
    return (a_t - a_s).pow(2).mean()


@register_method("skd", "Liu et al. 2019: pair-wise feature affinity + pixel-wise KD")
class SKD(Method):
    """Pair-wise distillation on the selected features plus pixel-wise KD on the logits."""

    taps = ("stages", "decoder", "logits")
    search_space = {"pair_weight": LogUniform(1.0, 100.0), "pixel_weight": LogUniform(1.0, 100.0)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        pair_weight: float = 10.0,
        pixel_weight: float = 10.0,
        pool: Pool = "max2",
        stages: Sequence[int] = (-1,),
        feature: FeatureSource = "stages",
        pixel_reduction: Literal["mean", "image_sum"] = "mean",
    ) -> None:
        super().__init__(student, teacher)
        self.pixel_reduction = pixel_reduction
        self.pair_weight, self.pixel_weight, self.pool = pair_weight, pixel_weight, pool
        self.feature = feature
        self.stages = resolve_stages("skd", stages, student, teacher) if feature == "stages" else ()

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        pairs = feature_pairs(
            student, teacher, self.feature, self.stages, detach=True, cast=False
        )
        pair = stage_sum(pair_wise_loss(fs, ft, self.pool) for fs, ft in pairs)
        zs = student.logits
        zt = resize_like(teacher.logits.detach(), zs).to(zs.dtype)
        pixel = kd_loss(zs, zt, tau=1.0)
        if self.pixel_reduction == "image_sum":  # the authors' N · mean_P (module docstring)
            pixel = pixel * zs.shape[0]
        return {
            "skd_pair": self.pair_weight * pair,
            "skd_pixel": self.pixel_weight * pixel,
        }


__all__ = ["SKD", "node_affinity", "pair_wise_loss", "pool_nodes"]
