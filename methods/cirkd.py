r"""Cross-image relational knowledge distillation (CIRKD).

Yang, Zhou, An, Jiang, Xu and Zhang, "Cross-Image Relational Knowledge Distillation for
Semantic Segmentation", CVPR 2022. Implemented from the paper and the authors' code
(``losses/cirkd_mini_batch.py``, ``losses/cirkd_memory.py``, ``train_cirkd.py``).

Features. By default the decoder feature (the embedding the classifier reads; the authors use
DeepLabV3's feature after ASPP), or with ``feature="stages"`` the selected encoder stages, each
distilled separately and summed. The paper's embeddings are at 1/8 of the input; a feature at
reduction r < ``stride`` is average-pooled (ceil mode) by k = ``stride`` // r first (default
stride 8: the built-in decoder at 1/4 is pooled 2×2), which also bounds the memory of the
pixel-pair matrices. The student map is then resized bilinearly to the teacher's (H, W) if they
differ, and labels are nearest-resized to (H, W). Below f̂ = f / max(‖f‖₂, 1e-12) over
channels, P = H·W, and KL_τ(t ‖ s) = KL(softmax(t/τ) ‖ softmax(s/τ)) over the last axis
(:func:`methods.kd.pixel_kl`).

1. Mini-batch pixel-to-pixel term. The batch is split into consecutive groups G of
   ``pair_group`` images (default 2); for every ordered pair of images (i, j) of a group,
   S_ij = F̂ᵢ^Sᵀ F̂ⱼ^S and T_ij = F̂ᵢ^Tᵀ F̂ⱼ^T (P × P, on the unprojected features, so the channel
   counts may differ, as in the authors' code), and

       L_pair = mean_G (1/|G|²) Σ_{i,j ∈ G} (1/P) Σ_{p} KL_τ(T_ij[p, :] ‖ S_ij[p, :])

   Groups of 2 are the authors' published setting: their scripts train with 16 images over 8
   GPUs and the term relates the 2 images of each GPU (its all-gather is commented out), so the
   cost grows linearly with the batch, not quadratically. ``pair_group: null`` relates every
   pair of the whole batch (METHODS.md's literal reading; N² blocks).

2. Memory-based pixel-to-pixel and pixel-to-region terms. A projector g (conv1x1 C_S -> C_T,
   BatchNorm, ReLU, conv1x1 C_T -> C_T, no biases, as in the authors' code) maps the student
   into the teacher's space. Per class k there is a pixel queue Q^pix_k (``pixel_memory`` ×
   C_T) and a region queue Q^reg_k (``region_memory`` × C_T) of unit teacher embeddings,
   initialised with random unit vectors (as the authors do), with FIFO write pointers. Each
   call samples m_pix = ``pixel_contrast`` // K + 1 slots (one ``torch.randperm`` of the
   slots, shared by all classes, as the authors do) from every class's pixel queue, giving the
   contrast set V^pix (K·m_pix × C_T), and likewise V^reg with m_reg = ``region_contrast`` //
   K + 1. With anchors a = every labelled pixel of the batch (Ω), student ŝ_a = normalised
   g(f^S)_a and teacher t̂_a = f̂^T_a:

       L_pix = mean_{a ∈ Ω} KL_τ(t̂_a V^pixᵀ ‖ ŝ_a V^pixᵀ)
       L_reg = mean_{a ∈ Ω} KL_τ(t̂_a V^regᵀ ‖ ŝ_a V^regᵀ)

   As in the authors' code every labelled pixel is an anchor.

   Cost. Both terms are sums of row-wise KLs between similarity matrices S = A·Bᵀ (student)
   and T (teacher). :func:`relation_kl_sum` computes them :data:`ROW_CHUNK` rows at a time and
   forms the gradient in the forward pass from its closed form (∂KL/∂S = (p^S − p^T)/τ), so no
   P×P or |Ω|×|V| matrix is stored or recomputed for the backward pass: memory O(chunk·Q)
   instead of O(N²·P²) (at batch 8 and 512×1024, P = 8,192 pixels per image and
   |Ω|·|V| ≈ 65,536 × 4,104 values), and about 40% fewer FLOPs than checkpointing.

   (the authors' second temperature, on the similarity distributions, is 1 and omitted). A
   batch without labelled pixels gives graph-connected zeros.

   After the losses are computed, and only in training mode, the current teacher embeddings
   are enqueued: for every image and every class k present in it, the normalised mean of its
   unit teacher embeddings over the class's pixels goes to Q^reg_k, and ``pixels_per_class``
   (16) of its unit pixel embeddings, picked by ``torch.randperm``, go to Q^pix_k; each write
   advances the class's pointer modulo the queue size, overwriting the oldest entries (a plain
   ring buffer; the authors' code instead enqueues before computing the loss, and on reaching
   the end of a pixel queue overwrites its last entries and resets the pointer to 0). Queues
   and pointers are buffers, so they are checkpointed. With several processes (data
   parallelism) the queues take the global batch, as the authors' multi-GPU code does: every
   rank enqueues the teacher embeddings and labels gathered from all ranks
   (:func:`kdbench.distributed.gathered`), so the queues stay equal on every rank; the losses,
   and the mini-batch term's groups, are each rank's own shard (the authors' mini-batch term is
   per GPU too).

Loss: pair_weight · L_pair + pixel_weight · L_pix + region_weight · L_reg, reported as three
terms. Defaults: τ = 0.1, weights 1, 0.1, 0.1, queues of 20000 pixel and 2000 region embeddings
per class, 4096 and 1024 contrast embeddings, 16 pixels enqueued per class and image, pair
groups of 2 images (the authors' settings, ``train_cirkd.py`` and their training scripts). The
paper's full row adds pixel-wise KD on the logits: that is the composite row ``kd+cirkd`` here.
Queue initialisation draws from torch's default CPU generator, sampling and enqueueing from the
default generator of the features' device, so ``torch.manual_seed`` makes the method
deterministic. The method makes no host synchronisation: the anchors are every pixel with a
weight (1 labelled, 0 not) rather than a selection of the labelled ones, and the queues are
written by indexed writes of fixed size (:meth:`ClassMemory.push`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from kdbench.distributed import gathered
from kdbench.method import (
    IGNORE_INDEX,
    Batch,
    FeatureSource,
    Method,
    aligned_pairs,
    distilled_channels,
    distilled_features,
    distilled_reductions,
    resize_labels,
    resolve_stages,
)
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Ge, Gt
from kdbench.registry import register_method
from kdbench.search import LogUniform
from methods.kd import pixel_kl

ROW_CHUNK = 2048
"""Rows of a similarity matrix computed at a time (bounds memory, not the values)."""

Count = Annotated[int, Ge(1)]
"""A size option: queue lengths, contrast counts, stride, group size."""


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or kept in float64 (half-precision norms overflow and lose the eps)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def pool_to_stride(feature: Tensor, reduction: int, stride: int) -> Tensor:
    """Average-pool an (N, C, H, W) map at ``reduction`` by k = stride // reduction (if k > 1)."""
    k = stride // reduction
    if k <= 1:
        return feature
    return F.avg_pool2d(feature, kernel_size=k, stride=k, ceil_mode=True)


def relation_kl(student_sim: Tensor, teacher_sim: Tensor, tau: float) -> Tensor:
    """mean over rows of KL_τ(teacher row ‖ student row) for (M, Q) similarity matrices."""
    return pixel_kl(student_sim, teacher_sim, tau).mean()


class _RelationKL(torch.autograd.Function):
    """Σ_m w_m KL_τ(softmax(T_m/τ) ‖ softmax(S_m/τ)) for S = s_a·s_bᵀ, T = t_a·t_bᵀ, in row
    chunks, with row weights w (M,) (``None``: all 1).

    The gradient is computed in the forward pass from its closed form, ∂/∂S = (p^S − p^T)/τ,
    so ∂/∂s_a = (∂/∂S)·s_b and ∂/∂s_b = (∂/∂S)ᵀ·s_a; only those (not the M×Q matrices) are
    kept for the backward pass, which neither stores nor recomputes a similarity matrix.
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx: FunctionCtx,
        s_a: Tensor,
        s_b: Tensor,
        t_a: Tensor,
        t_b: Tensor,
        tau: float,
        weight: Tensor | None,
    ) -> Tensor:
        total = s_a.new_zeros(())
        grad_a = torch.zeros_like(s_a) if s_a.requires_grad else None
        grad_b = torch.zeros_like(s_b) if s_b.requires_grad else None
        for start in range(0, len(s_a), ROW_CHUNK):
            rows = slice(start, start + ROW_CHUNK)
            log_ps = F.log_softmax(s_a[rows] @ s_b.T / tau, dim=1)
            log_pt = F.log_softmax(t_a[rows] @ t_b.T / tau, dim=1)
            p_t = log_pt.exp()
            w = None if weight is None else weight[rows, None]
            kl = p_t * (log_pt - log_ps)
            total += (kl if w is None else w * kl).sum()
            if grad_a is not None or grad_b is not None:
                d_sim = (log_ps.exp() - p_t) / tau
                d_sim = d_sim if w is None else w * d_sim
                if grad_a is not None:
                    grad_a[rows] = d_sim @ s_b
                if grad_b is not None:
                    grad_b += d_sim.T @ s_a[rows]
        ctx.save_for_backward(grad_a, grad_b)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: D102
        grad_a, grad_b = ctx.saved_tensors  # type: ignore[attr-defined]
        return (
            None if grad_a is None else grad * grad_a,
            None if grad_b is None else grad * grad_b,
            None,
            None,
            None,
            None,
        )


def relation_kl_sum(
    s_a: Tensor, s_b: Tensor, t_a: Tensor, t_b: Tensor, tau: float, weight: Tensor | None = None
) -> Tensor:
    """Σ over the M rows of KL_τ(row of t_a·t_bᵀ ‖ row of s_a·s_bᵀ); (M, D), (Q, D) inputs,
    each row's KL times ``weight`` (M,) when given.

    Memory O(:data:`ROW_CHUNK`·Q + (M + Q)·D); gradients flow to ``s_a`` and ``s_b`` only.
    """
    w = None if weight is None else weight.detach().to(s_a.dtype)
    return _RelationKL.apply(s_a, s_b, t_a.detach(), t_b.detach(), tau, w)


def pair_relation_loss(
    student_feature: Tensor, teacher_feature: Tensor, tau: float, group: int | None = None
) -> Tensor:
    """L_pair for (N, C_S, H, W) and (N, C_T, H, W) features: mean over groups of the mean over
    the ordered pairs of each group of ``group`` consecutive images (``None``: one group).

    Features are L2-normalised over channels (float32 at least).
    """
    s = F.normalize(at_least_float32(student_feature).flatten(2), dim=1).transpose(1, 2)
    t = F.normalize(at_least_float32(teacher_feature).flatten(2), dim=1).transpose(1, 2)
    n, p = s.shape[:2]
    size = n if group is None else group
    losses = []
    for start in range(0, n, size):
        members = range(start, min(n, start + size))
        blocks = [relation_kl_sum(s[i], s[j], t[i], t[j], tau) for i in members for j in members]
        losses.append(torch.stack(blocks).mean() / p)
    return torch.stack(losses).mean()


def memory_relation_loss(
    student_anchor: Tensor,
    teacher_anchor: Tensor,
    contrast: Tensor,
    tau: float,
    valid: Tensor | None = None,
) -> Tensor:
    """mean_a KL_τ(t̂_a Vᵀ ‖ ŝ_a Vᵀ): unit anchors (M, D), contrast embeddings V (Q, D).

    With the boolean ``valid`` (M,), the mean over the valid rows only: their sum divided by
    max(count, 1), so no valid row gives a graph-connected zero, with no host synchronisation.
    """
    contrast = contrast.to(student_anchor.dtype)
    total = relation_kl_sum(student_anchor, contrast, teacher_anchor, contrast, tau, valid)
    return total / (len(student_anchor) if valid is None else valid.sum().clamp_min(1))


def projector(student_channels: int, teacher_channels: int) -> nn.Sequential:
    """CIRKD's student projection head: conv1x1 -> BN -> ReLU -> conv1x1, no conv biases."""
    return nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(teacher_channels),
        nn.ReLU(),
        nn.Conv2d(teacher_channels, teacher_channels, kernel_size=1, bias=False),
    )


class ClassMemory(nn.Module):
    """Per-class FIFO queues of unit teacher embeddings: pixels and regions (all buffers).

    ``pixel_queue`` (K, pixel_size, D) and ``region_queue`` (K, region_size, D) start as random
    unit vectors; ``pixel_ptr`` / ``region_ptr`` (K,) int64 are the next slot to overwrite.
    """

    def __init__(
        self, num_classes: int, dim: int, pixel_size: int, region_size: int, pixels_per_class: int
    ) -> None:
        super().__init__()
        self.pixels_per_class = pixels_per_class
        pixel = F.normalize(torch.randn(num_classes, pixel_size, dim), dim=2)
        region = F.normalize(torch.randn(num_classes, region_size, dim), dim=2)
        self.register_buffer("pixel_queue", pixel)
        self.register_buffer("pixel_ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("region_queue", region)
        self.register_buffer("region_ptr", torch.zeros(num_classes, dtype=torch.long))

    @staticmethod
    def push(queue: Tensor, ptr: Tensor, rows: Tensor, keep: Tensor) -> None:
        """Write rows into every class's ring at its pointer and advance it, on the device.

        ``rows`` (K, R, D) with R ≤ the queue size, ``keep`` (K, R) bool, true on a prefix of
        each class's rows (the rows it writes): row r of class k goes to slot (ptr_k + r) mod
        size where kept; ptr_k advances by the kept count. The R slots of a class are distinct,
        so one indexed write does it, with no host synchronisation.
        """
        k, r, size = rows.shape[0], rows.shape[1], queue.shape[1]
        classes = torch.arange(k, device=queue.device)[:, None].expand(k, r)
        slots = (ptr[:, None] + torch.arange(r, device=queue.device)) % size
        old = queue[classes, slots]
        queue[classes, slots] = torch.where(keep[..., None], rows.to(queue.dtype), old)
        ptr.copy_((ptr + keep.sum(dim=1)) % size)

    @torch.no_grad()
    def enqueue(self, teacher_unit: Tensor, label: Tensor) -> None:
        """Enqueue a batch: unit teacher embeddings (N, D, H, W), labels (N, H, W) at that size.

        Per image and present class: its normalised mean embedding to the region queue and
        ``pixels_per_class`` (at most the class's pixel count) of its pixel embeddings, picked
        uniformly at random without replacement, to the pixel queue; classes in increasing
        order, all on the device.
        """
        for feats, lab in zip(teacher_unit.flatten(2), label.flatten(1), strict=True):
            self._enqueue_image(feats, lab)

    def _enqueue_image(self, feats: Tensor, lab: Tensor) -> None:
        """:meth:`enqueue` for one image: (D, P) embeddings, (P,) labels.

        Class membership is the one-hot (P, K) matrix (region sums as one product); the random
        picks sort the pixels by class + u, u ~ U[0, 1) per pixel, so each class's pixels form
        a contiguous run in random order, and the first ``take`` of each run are its picks.
        """
        k = self.pixel_ptr.numel()
        take = min(self.pixels_per_class, self.pixel_queue.shape[1])
        valid = lab != IGNORE_INDEX
        cls = torch.where(valid, lab, k)  # ignored pixels: an extra class K, sorted last
        member = F.one_hot(cls, k + 1)[:, :k].to(feats.dtype)  # (P, K)
        counts = member.sum(dim=0).long()  # (K,)
        region = F.normalize((feats @ member / counts.clamp_min(1)).T, dim=1)  # (K, D)
        self.push(self.region_queue, self.region_ptr, region[:, None], (counts > 0)[:, None])
        u = torch.rand(lab.shape, device=lab.device, dtype=torch.float64)
        order = torch.argsort(cls.to(torch.float64) + u)
        first = torch.cumsum(counts, 0) - counts  # (K,): where each class's run starts
        rank = torch.arange(take, device=lab.device)
        picked = order[(first[:, None] + rank).clamp_max(lab.numel() - 1)]  # (K, take)
        self.push(self.pixel_queue, self.pixel_ptr, feats[:, picked].permute(1, 2, 0),
                  rank < counts[:, None])

    @staticmethod
    def sample(queue: Tensor, per_class: int) -> Tensor:
        """The same ``per_class`` random slots of every class's queue: (K·per_class, D)."""
        index = torch.randperm(queue.shape[1], device=queue.device)[:per_class]
        return queue[:, index].flatten(0, 1)


@register_method("cirkd", "Yang et al. 2022: cross-image pixel-pair and memory-based relational KD")
class CIRKD(Method):
    """CIRKD: mini-batch pixel-pair KL plus pixel and region memory contrast, per feature."""

    taps = ("stages", "decoder")
    search_space = {
        "tau": LogUniform(0.05, 0.5),
        "pair_weight": LogUniform(0.1, 10.0),
        "pixel_weight": LogUniform(0.01, 1.0),
        "region_weight": LogUniform(0.01, 1.0),
    }
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        tau: Annotated[float, Gt(0)] = 0.1,
        pair_weight: float = 1.0,
        pixel_weight: float = 0.1,
        region_weight: float = 0.1,
        pixel_memory: Count = 20000,
        region_memory: Count = 2000,
        pixel_contrast: Count = 4096,
        region_contrast: Count = 1024,
        pixels_per_class: Count = 16,
        stride: Count = 8,
        pair_group: Count | None = 2,
        feature: FeatureSource = "decoder",
        stages: Sequence[int] = (-1,),
    ) -> None:
        super().__init__(student, teacher)
        self.tau, self.stride, self.feature, self.pair_group = tau, stride, feature, pair_group
        self.weights = (pair_weight, pixel_weight, region_weight)
        k = student.num_classes
        self.per_class = (pixel_contrast // k + 1, region_contrast // k + 1)
        self.stages = (
            resolve_stages("cirkd", stages, student, teacher) if feature == "stages" else ()
        )
        s_channels = distilled_channels(student, feature, self.stages)
        t_channels = distilled_channels(teacher, feature, self.stages)
        self.projectors = nn.ModuleList(
            projector(cs, ct) for cs, ct in zip(s_channels, t_channels, strict=True)
        )
        self.memories = nn.ModuleList(
            ClassMemory(k, ct, pixel_memory, region_memory, pixels_per_class) for ct in t_channels
        )

    def _features(self, out: Outputs, info: TapInfo) -> list[Tensor]:
        """The distilled maps of one model, each pooled to ``stride``."""
        maps = distilled_features(out, self.feature, self.stages)
        reductions = distilled_reductions(info, self.feature, self.stages)
        return [pool_to_stride(f, r, self.stride) for f, r in zip(maps, reductions, strict=True)]

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        pair, pix, reg = [], [], []
        pairs = aligned_pairs(
            self._features(student, self.student_info),
            self._features(teacher, self.teacher_info),
            detach=True,
            cast=False,
        )
        for (fs, ft), project, memory in zip(pairs, self.projectors, self.memories, strict=True):
            label = resize_labels(batch.label, tuple(ft.shape[-2:]))
            pair.append(pair_relation_loss(fs, ft, self.tau, self.pair_group))
            s_unit = F.normalize(at_least_float32(project(fs)), dim=1)
            t_unit = F.normalize(at_least_float32(ft), dim=1)
            valid = (label != IGNORE_INDEX).flatten()  # anchors: the labelled pixels
            s_anchor = s_unit.permute(0, 2, 3, 1).flatten(0, 2)
            t_anchor = t_unit.permute(0, 2, 3, 1).flatten(0, 2)
            v_pix = ClassMemory.sample(memory.pixel_queue, self.per_class[0])
            v_reg = ClassMemory.sample(memory.region_queue, self.per_class[1])
            pix.append(memory_relation_loss(s_anchor, t_anchor, v_pix, self.tau, valid))
            reg.append(memory_relation_loss(s_anchor, t_anchor, v_reg, self.tau, valid))
            if self.training:  # data parallel: every rank enqueues the global batch
                memory.enqueue(gathered(t_unit), gathered(label))
        w_pair, w_pix, w_reg = self.weights
        return {
            "cirkd_pair": w_pair * torch.stack(pair).sum(),
            "cirkd_pixel_memory": w_pix * torch.stack(pix).sum(),
            "cirkd_region_memory": w_reg * torch.stack(reg).sum(),
        }


__all__ = [
    "CIRKD",
    "ClassMemory",
    "memory_relation_loss",
    "pair_relation_loss",
    "pool_to_stride",
    "projector",
    "relation_kl",
    "relation_kl_sum",
]
