r"""DWLD, the logit half of LIX: DKD with bounded per-pixel weights from a learned controller.

Guo et al., "LIX: Implicitly Infusing Spatial Geometric Prior Knowledge into Visual Semantic
Segmentation for Autonomous Driving", arXiv 2403.08215: its logit distillation with a
"logit-wise dynamic weight controller". Built on DKD (Zhao et al., CVPR 2022; methods/dkd.py).
The adversarial controller follows the learnable-weight scheme of CTKD (Li et al., "Curriculum
Temperature for Knowledge Distillation", AAAI 2023): gradient reversal with a cosine curriculum.

**This is kdbench's reconstruction, not the authors' code** (specified in shared/METHODS.md).
LIX's code and full text were not available to this project. Taken from the paper: DWLD extends
DKD by giving each logit (here each pixel) its own weights on the target-class and non-target-
class terms, produced by a small MLP, the "dynamic weight controller", whose input involves the
confidence of the logits; the paper's ablation varies the controller's number of layers.
Everything else is this project's own design: the input features u_p, the controller's width,
the bounded tanh parametrisation, the zero initialisation, the warm-up and how the controller
learns (gradient reversal). Each choice an ablation may vary is an option: ``layers``,
``hidden``, ``spread``, ``controller``, ``weights``, ``tau``, ``alpha``, ``beta``, ``warmup``,
``weight``; the features and the initialisation are fixed.

Per valid pixel p (label t, the set Ω), with TCKD_p and NCKD_p exactly as in DKD at temperature
τ and p = softmax(z / τ):

- confidence features, detached (the controller never changes the logits' gradients through
  its input): u_p = [p^S_t, p^T_t, max_k p^S_k, H(p^S)/log K, H(p^T)/log K];
- controller g: L linear layers applied per pixel (width ``hidden``, ReLU between; a 1x1 conv
  net), two raw outputs (r^T_p, r^N_p) = g(u_p); its last layer is zero-initialised, so
  training starts exactly at DKD;
- bounded, mean-preserving weights, ρ = ``spread`` in [0, 1):

      s^T_p = 1 + ρ·tanh r^T_p ∈ [1 − ρ, 1 + ρ],   w^T_p = α · s^T_p / mean_Ω(s^T)

  (likewise w^N_p with β and r^N_p). The mean weight over the batch's valid pixels is exactly α
  (resp. β) and the largest weight is at most (1 + ρ)/(1 − ρ) times the smallest (3× at
  ρ = 0.5): the controller can only move weight between pixels, never scale the whole term.
  The normaliser mean_Ω(s) is part of the graph, so the controller's gradient is the centred
  per-pixel loss; under data parallelism it is computed per rank, like DKD's own mean;

    L_DWLD = ω(progress) · τ² · mean_Ω(w^T_p·TCKD_p + w^N_p·NCKD_p)

with DKD's linear warm-up ω. Why both the bound and the normaliser: TCKD_p and NCKD_p are never
negative, so with unnormalised bounded weights the loss grows with every weight and any
controller drives all weights to one bound (measured: after 250 steps every w^T sat at 1.5α, so
DWLD was DKD with α, β scaled by 1 + ρ); with the normaliser alone, a controller minimising the
loss put all weight on the easiest pixel. How the controller learns (option ``controller``):

- ``adversarial`` (default): a gradient-reversal layer sits between g's outputs and the
  weights; forward it is the identity, backward it multiplies the gradient by −λ with
  λ(progress) = (1 − cos(π·progress)) / 2 rising from 0 to 1 over training. The controller thus
  ascends the weighted loss the student descends: with the mean fixed, it moves weight to the
  pixels where the student is furthest from the teacher (hard-pixel emphasis), within the bound;
- ``cooperative``: no reversal; the controller descends the same loss (it emphasises the pixels
  already agreed on, within the same bound);
- ``frozen``: the controller is not trained (its parameters do not require gradients), so the
  weights stay at α, β: exactly DKD, a control.

What the controller did is visible in the run's history: :meth:`DWLD.statistics` gives, for the
last forward, the mean, min and max over Ω of w^T and w^N and the Pearson and Spearman
correlations of w^T_p with TCKD_p and of w^N_p with NCKD_p (``weights: mlp`` only; Spearman's
over at most 8,192 evenly strided pixels, to keep its sorts cheaper than the loss).

Option ``weights``: ``mlp`` (the above), ``constant`` (no controller, w = α, β: exactly DKD) or
``kd`` (no controller, w^T = 1, w^N = 1 − p^T_t, α and β unused: exactly pixel KD over Ω, since
KL(p^T ‖ p^S) = TCKD + (1 − p^T_t)·NCKD per pixel).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from kdbench.method import Batch, Method
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Ge, Interval
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform
from methods.dkd import (
    Temperature,
    Warmup,
    align_logits,
    check_logit_options,
    decoupled_loss,
    decoupled_terms,
    masked_mean,
    warmup_factor,
)

Weights = Literal["mlp", "constant", "kd"]
Controller = Literal["adversarial", "cooperative", "frozen"]
NUM_FEATURES = 5
"""Channels of the controller input u_p."""


@torch.no_grad()
def confidence_features(log_ps: Tensor, log_pt: Tensor, target: Tensor) -> Tensor:
    """u = [p^S_t, p^T_t, max_k p^S_k, H(p^S)/log K, H(p^T)/log K] per pixel, detached.

    ``log_ps``, ``log_pt``: (N, K, h, w) log-probabilities at temperature τ (from
    ``log_softmax``, finite for finite logits); ``target`` (N, h, w) in [0, K). Returns
    (N, h, w, 5), pixels as rows for the controller's linear layers. Entropies
    H(p) = −Σ_k p_k log p_k are divided by log K so that they lie in [0, 1].
    """
    ps, pt = log_ps.exp(), log_pt.exp()
    index = target.unsqueeze(1)
    log_k = math.log(log_ps.shape[1])
    u = torch.cat(
        [
            ps.gather(1, index),
            pt.gather(1, index),
            ps.amax(dim=1, keepdim=True),
            -(ps * log_ps).sum(dim=1, keepdim=True) / log_k,
            -(pt * log_pt).sum(dim=1, keepdim=True) / log_k,
        ],
        dim=1,
    )
    return u.permute(0, 2, 3, 1)


def weight_controller(layers: int, hidden: int) -> nn.Sequential:
    """The dynamic weight controller: ``layers`` linear maps 5 -> hidden -> ... -> 2, ReLU between.

    Applied to (..., 5) pixel rows (equivalent to 1x1 convs on the map). One layer is a linear
    map of u_p. The last layer is zero-initialised (weight and bias), so r = 0 at every pixel
    at the start and DWLD starts as DKD.
    """
    widths = [NUM_FEATURES] + [hidden] * (layers - 1) + [2]
    modules: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            modules.append(nn.ReLU())
        modules.append(nn.Linear(c_in, c_out))
    last = modules[-1]
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*modules)


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient multiplied by −λ backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, strength: float) -> Tensor:  # noqa: D102
        ctx.strength = strength  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return -ctx.strength * grad, None  # type: ignore[attr-defined]


def gradient_reversal(x: Tensor, strength: float) -> Tensor:
    """x forward; −``strength``·∂L/∂x flows back to whatever produced x."""
    return _GradientReversal.apply(x, strength)


def reversal_strength(progress: float) -> float:
    """CTKD's cosine curriculum λ = (1 − cos(π·progress)) / 2: 0 at the start, 1 at the end."""
    return 0.5 * (1.0 - math.cos(math.pi * min(1.0, max(0.0, progress))))


def bounded_weights(
    raw: Tensor, valid: Tensor, alpha: float, beta: float, spread: float
) -> tuple[Tensor, Tensor]:
    """(w^T, w^N), each (N, h, w), from (N, h, w, 2) raw outputs: s = 1 + ρ·tanh r and
    w = α·s / mean_Ω(s^T) (resp. β, s^N), with the normaliser in the graph.

    mean_Ω w^T = α and max w / min w ≤ (1 + ρ)/(1 − ρ) for any ``raw``; with no valid pixel the
    normaliser is taken over nothing and replaced by 1 (the loss is 0 there anyway).
    """
    bounded = 1.0 + spread * torch.tanh(raw)
    mean = masked_mean_last(bounded, valid)
    return alpha * bounded[..., 0] / mean[0], beta * bounded[..., 1] / mean[1]


def masked_mean_last(x: Tensor, valid: Tensor) -> Tensor:
    """mean_Ω over the leading (N, h, w) axes of (N, h, w, C) ``x``: C values; 1 where Ω is
    empty. No host synchronisation."""
    mask = valid.unsqueeze(-1)
    total = torch.where(mask, x, torch.zeros_like(x)).flatten(0, -2).sum(dim=0)
    count = valid.sum()
    return torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))


def pearson(x: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    """Pearson correlation of x and y over the ``valid`` entries (all three of one shape);
    0 when either is constant there (or Ω is empty). No host synchronisation."""
    mask = valid.to(x.dtype)
    count = mask.sum().clamp_min(1)
    dx = (x - (x * mask).sum() / count) * mask
    dy = (y - (y * mask).sum() / count) * mask
    norm = (dx.square().sum() * dy.square().sum()).sqrt()
    return torch.where(norm > 0, (dx * dy).sum() / norm.clamp_min(1e-30), torch.zeros_like(norm))


def average_ranks(x: Tensor, valid: Tensor) -> Tensor:
    """Rank of each valid entry of ``x`` among the valid entries (0-based; ties get the mean of
    their ranks, as Spearman's ρ needs); invalid entries get arbitrary values.

    Invalid entries are set to +∞, so they sort after every valid one; the rank of v is
    (#{< v} + #{≤ v} − 1) / 2, found by binary search in the sorted values.
    """
    flat = torch.where(valid, x, torch.full_like(x, math.inf)).flatten()
    ordered = flat.sort().values
    below = torch.searchsorted(ordered, flat, right=False)
    upto = torch.searchsorted(ordered, flat, right=True)
    return ((below + upto - 1).to(x.dtype) / 2).view_as(x)


RANKED_PIXELS = 8192
"""At most this many pixels, evenly strided, enter the logged Spearman correlations."""


def spearman(x: Tensor, y: Tensor, valid: Tensor, limit: int | None = None) -> Tensor:
    """Spearman's rank correlation of x and y over the ``valid`` entries (ties averaged).

    With ``limit``, only every ⌈n/limit⌉-th entry of the flattened tensors is ranked (sorting
    every pixel of a batch each step would cost more than the loss itself).
    """
    x, y, valid = x.flatten(), y.flatten(), valid.flatten()
    if limit is not None and x.numel() > limit:
        stride = -(-x.numel() // limit)
        x, y, valid = x[::stride], y[::stride], valid[::stride]
    return pearson(average_ranks(x, valid), average_ranks(y, valid), valid)


def weight_statistics(
    w_target: Tensor, w_nontarget: Tensor, tckd: Tensor, nckd: Tensor, valid: Tensor
) -> dict[str, Tensor]:
    """Detached 0-d statistics over Ω of the per-pixel weights, for the run's history.

    ``w_t_mean``, ``w_t_min``, ``w_t_max``, ``w_t_pearson``, ``w_t_spearman`` (correlations of
    w^T_p with TCKD_p) and the same for ``w_n`` with NCKD_p. With no valid pixel, min and max
    are the mean and the correlations 0. Spearman's ρ is taken over at most
    :data:`RANKED_PIXELS` evenly strided pixels; everything else over all of Ω.
    """
    stats: dict[str, Tensor] = {}
    with torch.no_grad():
        for key, w, loss in (("w_t", w_target, tckd), ("w_n", w_nontarget, nckd)):
            mean = masked_mean(w, valid)
            lowest = torch.where(valid, w, torch.full_like(w, math.inf)).amin()
            highest = torch.where(valid, w, torch.full_like(w, -math.inf)).amax()
            stats[f"{key}_mean"] = mean
            stats[f"{key}_min"] = torch.where(valid.any(), lowest, mean)
            stats[f"{key}_max"] = torch.where(valid.any(), highest, mean)
            stats[f"{key}_pearson"] = pearson(w, loss, valid)
            stats[f"{key}_spearman"] = spearman(w, loss, valid, RANKED_PIXELS)
    return stats


@register_method(
    "dwld", "LIX's DWLD as reconstructed here: DKD, per-pixel mean-preserving bounded weights"
)
class DWLD(Method):
    """DWLD on the logits; ``controller`` is the MLP (``None`` unless weights=mlp).

    kdbench's reconstruction of LIX's logit half (LIX's code and full text were not available);
    the module docstring says which parts come from the paper and which are this project's.
    """

    taps = ("logits",)
    search_space = {
        "tau": Choice(1.0, 2.0, 4.0, 8.0),
        "alpha": LogUniform(0.1, 10.0),
        "beta": LogUniform(0.5, 16.0),
    }
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo | None,
        *,
        tau: Temperature = 4.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        weights: Weights = "mlp",
        controller: Controller = "adversarial",
        spread: Annotated[float, Interval(0, 1, closed="left")] = 0.5,
        layers: Annotated[int, Ge(1)] = 2,
        hidden: Annotated[int, Ge(1)] = 32,
        warmup: Warmup = 0.08,
        weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        check_logit_options("dwld", student.num_classes)
        self.tau, self.alpha, self.beta, self.spread = tau, alpha, beta, float(spread)
        self.weights, self.mode = weights, controller
        self.warmup, self.weight = warmup, weight
        self.controller = weight_controller(layers, hidden) if weights == "mlp" else None
        self._statistics: dict[str, Tensor] = {}
        if self.controller is not None and controller == "frozen":
            self.controller.requires_grad_(False)

    def pixel_weights(
        self, log_ps: Tensor, log_pt: Tensor, target: Tensor, valid: Tensor, progress: float
    ) -> tuple[Tensor, Tensor]:
        """(w^T, w^N), each (N, h, w), from (N, K, h, w) log-probabilities (``weights: mlp``);
        normalised over the (N, h, w) boolean ``valid`` (Ω)."""
        assert self.controller is not None
        u = confidence_features(log_ps, log_pt, target)
        param = next(self.controller.parameters())
        raw = self.controller(u.to(param.dtype)).to(log_ps.dtype)
        if self.mode == "adversarial":
            raw = gradient_reversal(raw, reversal_strength(progress))
        return bounded_weights(raw, valid, self.alpha, self.beta, self.spread)

    def statistics(self) -> dict[str, Tensor]:
        """The weight statistics of the last forward (:func:`weight_statistics`); empty unless
        ``weights: mlp``."""
        return dict(self._statistics)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        zs, zt, target, valid = align_logits(student.logits, teacher.logits, batch.label)
        log_ps = F.log_softmax(zs / self.tau, dim=1)
        log_pt = F.log_softmax(zt / self.tau, dim=1)
        tckd, nckd, pt_target = decoupled_terms(log_ps, log_pt, target)
        w_target: float | Tensor
        w_nontarget: float | Tensor
        if self.weights == "constant":
            w_target, w_nontarget = self.alpha, self.beta
        elif self.weights == "kd":
            w_target, w_nontarget = 1.0, 1.0 - pt_target
        else:
            w_target, w_nontarget = self.pixel_weights(
                log_ps, log_pt, target, valid, batch.progress
            )
            self._statistics = weight_statistics(w_target, w_nontarget, tckd, nckd, valid)
        loss = decoupled_loss(tckd, nckd, w_target, w_nontarget, valid, self.tau)
        scale = self.weight * warmup_factor(batch.progress, self.warmup)
        return {"dwld": scale * loss}


__all__ = [
    "DWLD",
    "bounded_weights",
    "confidence_features",
    "average_ranks",
    "gradient_reversal",
    "masked_mean_last",
    "pearson",
    "reversal_strength",
    "spearman",
    "weight_controller",
    "weight_statistics",
]
