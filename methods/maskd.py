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

0.25 × the logit MSE up to the constant in the denominator.

In kdbench (:class:`MasKD`) stage 1 is its own kind of run, ``maskd_tokens`` (:data:`STAGE`,
executed by :mod:`kdbench.train.tokens`): one per teacher and setting of ``num_tokens`` and
``token_steps``, after the teacher and before every maskd student of that teacher, which reads
the tokens it wrote (:data:`TOKENS_FILE`). The student loss is ``weight`` × L on the main
logits plus ``aux`` × L on the auxiliary logits, with the same tokens on the teacher's auxiliary
logits, when both student and teacher have an auxiliary head.

Data parallelism: every mask M_t depends on one image's teacher logits, and Σ_p M_t(p) sums
over that image's pixels only, so every term is per image; the loss of a rank is the mean over
its own images, and the ranks' mean (DistributedDataParallel's gradient average) is the global
batch's loss: nothing couples the images of a batch. In stage 1 the dice term is per image
and the cross-entropy is the mean over the rank's labelled pixels; the stage averages the ranks'
token gradients (:mod:`kdbench.train.tokens`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, Batch, Method, MethodStage, resize_like
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Ge
from kdbench.registry import register_method
from kdbench.search import LogUniform

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


TOKENS_FILE = "tokens.pt"
"""What the stage run writes into its folder: ``{"tokens": (T, K) float32}``."""

STAGE = MethodStage(
    kind="maskd_tokens",
    execute="kdbench.train.tokens:learn_tokens",
    options=("num_tokens", "token_steps"),
    steps="token_steps",
    recipe={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3,
            "schedule": "poly", "warmup_steps": 0},
)
"""Stage 1 as its own kind of run: the authors' SGD (lr 0.1, momentum 0.9, weight decay 1e-3,
poly 0.9) for ``token_steps`` steps, on the teacher's data recipe."""


def read_tokens(folder: Path, num_tokens: int, num_classes: int) -> Tensor:
    """The (T, K) tokens a stage run wrote into ``folder``, checked against the shape expected."""
    path = folder / TOKENS_FILE
    if not path.is_file():
        raise KdbenchError(f"{path}: no receptive tokens; run the maskd_tokens stage first")
    tokens = torch.load(path, map_location="cpu", weights_only=True).get("tokens")
    if not isinstance(tokens, Tensor) or tuple(tokens.shape) != (num_tokens, num_classes):
        raise KdbenchError(
            f"{path}: expected tokens of shape ({num_tokens}, {num_classes}) under 'tokens'"
        )
    return tokens.float()


@register_method("maskd", "Huang et al. ICLR 2023: logit MSE under learned receptive-token masks")
class MasKD(Method):
    """MasKD's student term (module doc): ``weight`` × L(z^S, z^T) on the main logits (the
    teacher's resized bilinearly to the student's size), plus ``aux`` × L on the auxiliary
    logits when both models have an auxiliary head (tap ``aux``).

    The tokens are a non-persistent buffer: the stage run's (:meth:`load_stage`) in training,
    zero when built without its stage (loss tests, FLOP counts: every mask is 1/2).
    """

    taps = ("logits", "aux")
    stage = STAGE
    search_space = {"weight": LogUniform(0.1, 10.0), "aux": LogUniform(0.1, 1.0)}
    """What ``tune:`` searches (:mod:`kdbench.search`): the loss weights (never a stage option,
    so every trial of a row shares the row's stage run)."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        weight: float = 1.0,
        aux: Annotated[float, Ge(0)] = 0.4,
        num_tokens: Annotated[int, Ge(1)] = 8,
        token_steps: Annotated[int, Ge(1)] = 10_000,
    ) -> None:
        super().__init__(student, teacher)
        self.weight, self.aux = weight, aux
        zeros = torch.zeros(num_tokens, teacher.num_classes)
        self.register_buffer("tokens", zeros, persistent=False)

    def load_stage(self, folder: Path) -> None:
        """Take the tokens the ``maskd_tokens`` run wrote into ``folder``."""
        num_tokens, num_classes = self.tokens.shape
        self.tokens.copy_(read_tokens(folder, num_tokens, num_classes))

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        out = {"maskd": self.weight * self._loss(student.logits, teacher.logits)}
        if self.aux > 0 and student.aux is not None and teacher.aux is not None:
            out["maskd_aux"] = self.aux * self._loss(student.aux, teacher.aux)
        return out

    def _loss(self, zs: Tensor, zt: Tensor) -> Tensor:
        """L for one pair of (N, K, h, w) logits, the teacher's at the student's size."""
        zt = resize_like(zt, zs).to(zs.dtype)
        return maskd_loss(zs, zt, self.tokens.to(zs.dtype))


__all__ = [
    "STAGE",
    "TOKENS_FILE",
    "MasKD",
    "dice_term",
    "initial_tokens",
    "maskd_loss",
    "read_tokens",
    "token_loss",
    "token_masks",
]
