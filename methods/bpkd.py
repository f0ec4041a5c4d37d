r"""BPKD, boundary-privileged knowledge distillation: separate edge and body terms on the logits.

Liu et al., "BPKD: Boundary Privileged Knowledge Distillation for
Semantic Segmentation", WACV 2024 (arXiv 2306.08075); AkideLiu/BPKD.

**This is kdbench's reconstruction, not the authors' code.** The authors released no training
code, only the method figure (Fig. 3): the logits are split by a boundary mask derived from the
ground truth into an edge region, distilled by a KL divergence inside the edge, and a body
region, distilled by channel-wise distillation (CWD). The band width, the softening, the
temperatures and the weights are not given; each is an option here (``width``, ``pool``,
``tau``, ``edge_tau``, ``edge_weight``, ``body_weight``) with the defaults of
shared/METHODS.md.

For student and teacher logits z^S, z^T of shape (N, K, h, w) (the teacher's resized
bilinearly to the student's grid, the labels by nearest neighbour, Ω the labelled pixels):

- boundary mask (:func:`boundary_mask`): per class c, with o_c = [label = c] and
  ō_c = [label ∈ Ω, label ≠ c], the band B_c = dilate(o_c) − o_c·(1 − dilate(ō_c)), a
  ``width``×``width`` square structuring element (so the band is the pixels of class c next to
  another labelled class, and the labelled pixels of other classes next to class c; ignored
  pixels and the image border make no boundary), then M_E = avgpool_{pool}(B)·[p ∈ Ω] ∈ [0, 1];
- edge term: with q = softmax_K(z ⊙ M_E / τ_E) per pixel,

      L_E = Σ_{n,p,k} M_E[n,k,p] · q^T_k (log q^T_k − log q^S_k) / Σ M_E

  (0 when the batch has no boundary);
- body term: L_B = CWD(z^S ⊙ (1 − max_c M_E), z^T ⊙ (1 − max_c M_E)) at temperature τ
  (:func:`methods.cwd.cwd_loss`: per-class softmax over positions, τ²·mean over (N, K) of KL);
- loss λ_E·L_E + λ_B·L_B.

Identities (tested): with no boundary in the batch, L_E = 0 and L_B is CWD on the logits.

Data parallelism: the boundary mask is per image (a band never crosses from one image to
another), L_B is a mean over the rank's (N, K) of per-image terms, and L_E's normaliser is the
global batch's Σ M_E divided by the number of ranks (:func:`global_mass`, as the cross-entropy's
:func:`kdbench.distributed.global_count`), so each rank's L_E is its share of the single
process's L_E times the number of ranks: W ranks with B/W images each have, averaged, the
single process's loss on B images, and its gradients (tested with 2 gloo ranks).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.distributed import mean_over_ranks
from kdbench.method import IGNORE_INDEX, Batch, Method, resize_labels, resize_like
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Ge, Gt, Odd
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform
from methods.cwd import cwd_loss


def _dilate(x: Tensor, width: int) -> Tensor:
    """Binary dilation of (N, K, h, w) {0, 1} maps by a ``width``×``width`` square (odd width);
    the border is padded with 0 (max-pool pads with −∞)."""
    return F.max_pool2d(x, width, stride=1, padding=width // 2)


def boundary_mask(
    labels: Tensor,
    num_classes: int,
    width: int = 3,
    pool: int = 3,
    ignore_index: int = IGNORE_INDEX,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The soft per-class boundary mask M_E ∈ [0, 1]^{N×K×h×w} of (N, h, w) int64 labels.

    Band B_c = dilate(o_c) − o_c·(1 − dilate(ō_c)) with o_c the pixels of class c and ō_c the
    labelled pixels of other classes (module docstring), softened by a ``pool``×``pool`` average
    pool (stride 1, padding excluded from the average) and zeroed on ignored pixels. ``width``
    and ``pool`` are odd; 1 means no dilation (no band at all) and no softening respectively.
    The mask is computed in ``dtype``.
    """
    valid = labels != ignore_index
    target = labels.masked_fill(~valid, 0)
    inside = valid.unsqueeze(1).to(dtype)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(dtype) * inside
    others = inside - onehot
    band = _dilate(onehot, width) - onehot * (1.0 - _dilate(others, width))
    soft = F.avg_pool2d(band * inside, pool, stride=1, padding=pool // 2, count_include_pad=False)
    return soft * inside


def edge_loss(
    student: Tensor, teacher: Tensor, mask: Tensor, tau: float = 1.0,
    normaliser: Tensor | None = None,
) -> Tensor:
    """Σ M_E·q^T(log q^T − log q^S) / Σ M_E, q = softmax over K of z ⊙ M_E / τ; 0 if M_E = 0.

    ``student``, ``teacher``, ``mask``: (N, K, h, w). ``normaliser`` replaces Σ M_E (the method
    passes the mean over the ranks of their Σ M_E: module docstring).
    """
    log_qs = F.log_softmax(student * mask / tau, dim=1)
    log_qt = F.log_softmax(teacher * mask / tau, dim=1)
    kl = mask * log_qt.exp() * (log_qt - log_qs)
    total = mask.sum() if normaliser is None else normaliser
    return kl.sum() / total.clamp_min(1e-12)


def body_loss(student: Tensor, teacher: Tensor, mask: Tensor, tau: float = 4.0) -> Tensor:
    """CWD of the logits outside the boundary: ``cwd_loss(z^S ⊙ b, z^T ⊙ b, τ)``,
    b = 1 − max_c M_E (broadcast over the K channels)."""
    body = 1.0 - mask.amax(dim=1, keepdim=True)
    return cwd_loss(student * body, teacher * body, tau)


def global_mass(mask: Tensor) -> Tensor:
    """Σ M_E over every rank's images divided by the number of ranks (Σ M_E alone)."""
    return mean_over_ranks(mask.sum())


Window = Annotated[int, Ge(1), Odd()]
"""A centred window (dilation band, smoothing kernel): an odd integer >= 1."""


@register_method("bpkd", "Liu et al. WACV 2024, reconstructed: KL in a boundary band + CWD on body")
class BPKD(Method):
    """BPKD on the logits (a reconstruction: see the module docstring)."""

    taps = ("logits",)
    search_space = {
        "tau": Choice(1.0, 2.0, 4.0, 8.0),
        "edge_weight": LogUniform(0.1, 10.0),
        "body_weight": LogUniform(0.1, 10.0),
    }
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        width: Window = 3,
        pool: Window = 3,
        tau: Annotated[float, Gt(0)] = 4.0,
        edge_tau: Annotated[float, Gt(0)] = 1.0,
        edge_weight: float = 1.0,
        body_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        self.width, self.pool, self.tau, self.edge_tau = width, pool, tau, edge_tau
        self.edge_weight, self.body_weight = edge_weight, body_weight

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        zs = student.logits
        zt = resize_like(teacher.logits, zs).to(zs.dtype)
        label = resize_labels(batch.label, tuple(zs.shape[-2:]))
        mask = boundary_mask(label, zs.shape[1], self.width, self.pool, dtype=zs.dtype)
        return {
            "edge": self.edge_weight * edge_loss(zs, zt, mask, self.edge_tau, global_mass(mask)),
            "body": self.body_weight * body_loss(zs, zt, mask, self.tau),
        }


__all__ = ["BPKD", "body_loss", "boundary_mask", "edge_loss", "global_mass"]
