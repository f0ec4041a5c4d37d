r"""DIST: distillation by correlation of class probabilities, between and within classes.

Huang, You, Wang, Qian and Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

For segmentation every pixel is a sample. With student and teacher logits of shape (N, K, h, w)
(the teacher's resized bilinearly to the student's size when they differ) and temperature τ
(default 1, i.e. no temperature), let P^S, P^T be the (N·h·w, K) matrices whose rows are the
per-pixel class probabilities p = softmax(z / τ). With the Pearson correlation

    ρ(u, v) = Σ_i (u_i − ū)(v_i − v̄) / (max(‖u − ū‖₂, ε) · max(‖v − v̄‖₂, ε)),

    inter = 1 − mean over the N·h·w rows r of ρ(P^S_r, P^T_r)        (relation between classes)
    intra = 1 − mean over the K columns k of ρ(P^S_{:,k}, P^T_{:,k})  (relation within a class)

    L_DIST = τ² · (β · inter + γ · intra),    β = γ = 1.

The norms are clamped at ε = 1e-8 rather than ε being added to their product (the authors'
code), so ρ(u, u) = 1 exactly for any non-constant u, and a constant row or column (centred norm
0) gives ρ = 0 with finite gradients. Every pixel is a row, labelled or not.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdbench.method import Batch, Method, resize_like
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform


def pearson(u: Tensor, v: Tensor, dim: int, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of ``u`` and ``v`` (same shape) along ``dim``; that dim is reduced.

    Centred norms are clamped at ``eps`` before dividing (the clamp acts on the squared norm,
    so the square root never sees 0 and the gradient stays finite for constant inputs).
    """
    u = u - u.mean(dim=dim, keepdim=True)
    v = v - v.mean(dim=dim, keepdim=True)
    norm_u = u.pow(2).sum(dim=dim).clamp_min(eps**2).sqrt()
    norm_v = v.pow(2).sum(dim=dim).clamp_min(eps**2).sqrt()
    return (u * v).sum(dim=dim) / (norm_u * norm_v)


def pixel_probabilities(logits: Tensor, tau: float) -> Tensor:
    """(N, K, h, w) logits -> (N·h·w, K) rows of softmax(z / τ) over the K classes."""
    return F.softmax(logits / tau, dim=1).movedim(1, -1).reshape(-1, logits.shape[1])


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    tau: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> Tensor:
    """τ² · (β · inter + γ · intra) for (N, K, h, w) logits of the same shape (module docstring)."""
    ps = pixel_probabilities(student_logits, tau)
    pt = pixel_probabilities(teacher_logits, tau)
    inter = 1.0 - pearson(ps, pt, dim=1).mean()
    intra = 1.0 - pearson(ps, pt, dim=0).mean()
    return tau**2 * (beta * inter + gamma * intra)


@register_method("dist", "Huang et al. 2022: Pearson correlation of pixel class probabilities")
class DIST(Method):
    """DIST on the logits: inter-class (per pixel) plus intra-class (per class) relations."""

    taps = ("logits",)
    search_space = {
        "tau": Choice(1.0, 2.0, 4.0),
        "beta": LogUniform(0.1, 10.0),
        "gamma": LogUniform(0.1, 10.0),
    }
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        tau: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        self.tau, self.beta, self.gamma, self.weight = tau, beta, gamma, weight

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        zs = student.logits
        zt = resize_like(teacher.logits, zs).to(zs.dtype)
        return {"dist": self.weight * dist_loss(zs, zt, self.tau, self.beta, self.gamma)}


__all__ = ["DIST", "dist_loss", "pearson", "pixel_probabilities"]
