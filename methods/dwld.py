r"""DWLD, the logit half of LIX: DKD with per-pixel weights from a learned controller.

Guo et al., "LIX: Implicitly Infusing Spatial Geometric Prior Knowledge into Visual Semantic
Segmentation for Autonomous Driving", arXiv 2403.08215: its logit distillation with a
"logit-wise dynamic weight controller". Built on DKD (Zhao et al., CVPR 2022; methods/dkd.py).

**This is kdbench's reconstruction, not the authors' code.** LIX's code and full text were not
available to this project. Taken from the paper: DWLD extends DKD by giving each logit (here each
pixel) its own weights on the target-class and the non-target-class terms, produced by a small
MLP, the "dynamic weight controller", whose input involves the confidence of the logits; the
paper's ablation varies the controller's number of layers. Everything else is this project's
own choice: the input features u_p, the controller's width, the softplus outputs, the
normalisation of the weights, the zero initialisation and the warm-up. Options: ``layers`` and
``hidden`` (the controller), ``weights`` (mlp | constant | kd), ``tau``, ``alpha``, ``beta``,
``warmup``, ``weight``; the features, softplus, normalisation and initialisation are fixed.

Per valid pixel p (label t, the set Ω), with TCKD_p and NCKD_p exactly as in DKD at temperature
τ and p = softmax(z / τ):

- confidence features, detached from the graph (the controller never changes the logits'
  gradients through its input): u_p = [p^S_t, p^T_t, max_k p^S_k, H(p^S)/log K, H(p^T)/log K];
- controller g: L layers of 1x1 convs (width ``hidden``, ReLU between), two outputs through a
  softplus: (a_p, b_p) = softplus(g(u_p)); the last layer starts at zero, so training starts
  from uniform weights, i.e. exactly at DKD;
- normalised weights w^T_p = α·a_p / mean_Ω(a), w^N_p = β·b_p / mean_Ω(b): their means over
  Ω equal DKD's α and β and the controller only redistributes emphasis across pixels;

    L_DWLD = ω(progress) · τ² · mean_Ω(w^T_p·TCKD_p + w^N_p·NCKD_p)

with DKD's linear warm-up ω. The controller is trained jointly by this loss. Option
``weights``: ``mlp`` (the above), ``constant`` (a_p = b_p = 1: exactly DKD) or ``kd``
(w^T = 1, w^N = 1 − p^T_t, no controller, α and β unused: exactly pixel KD over Ω, since
KL(p^T ‖ p^S) = TCKD + (1 − p^T_t)·NCKD per pixel).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import KdbenchError
from kdbench.method import Batch, Method
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform
from methods.dkd import (
    align_logits,
    check_logit_options,
    decoupled_loss,
    masked_mean,
    tckd_nckd,
    warmup_factor,
)

WEIGHTS = ("mlp", "constant", "kd")
NUM_FEATURES = 5
"""Channels of the controller input u_p."""
EPS = 1e-12
"""Floor of mean_Ω(a) and mean_Ω(b) (reached only when Ω is empty)."""


@torch.no_grad()
def confidence_features(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, tau: float
) -> Tensor:
    """u = [p^S_t, p^T_t, max_k p^S_k, H(p^S)/log K, H(p^T)/log K]: (N, K, h, w) -> (N, 5, h, w).

    Probabilities at temperature τ; entropies H(p) = −Σ_k p_k log p_k with log p from
    ``log_softmax`` (finite for any finite logits), divided by log K so that they lie in [0, 1].
    Computed without gradient: the features are inputs of the controller, not loss terms.
    """
    log_ps = F.log_softmax(student_logits.float() / tau, dim=1)
    log_pt = F.log_softmax(teacher_logits.float() / tau, dim=1)
    ps, pt = log_ps.exp(), log_pt.exp()
    index = target.unsqueeze(1)
    log_k = math.log(student_logits.shape[1])
    return torch.cat(
        [
            ps.gather(1, index),
            pt.gather(1, index),
            ps.amax(dim=1, keepdim=True),
            -(ps * log_ps).sum(dim=1, keepdim=True) / log_k,
            -(pt * log_pt).sum(dim=1, keepdim=True) / log_k,
        ],
        dim=1,
    )


def weight_controller(layers: int, hidden: int) -> nn.Sequential:
    """The dynamic weight controller: ``layers`` 1x1 convs 5 -> hidden -> ... -> 2, ReLU between.

    One layer is a linear map of u_p. The last conv is zero-initialised (weight and bias), so
    a_p = b_p = softplus(0) at every pixel at the start and DWLD starts as DKD.
    """
    widths = [NUM_FEATURES] + [hidden] * (layers - 1) + [2]
    modules: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            modules.append(nn.ReLU())
        modules.append(nn.Conv2d(c_in, c_out, kernel_size=1))
    last = modules[-1]
    assert isinstance(last, nn.Conv2d)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*modules)


def normalised_weights(
    a: Tensor, b: Tensor, valid: Tensor, alpha: float, beta: float
) -> tuple[Tensor, Tensor]:
    """w^T = α·a / mean_Ω(a), w^N = β·b / mean_Ω(b) for positive (N, h, w) controller outputs."""
    w_target = alpha * a / masked_mean(a, valid).clamp_min(EPS)
    w_nontarget = beta * b / masked_mean(b, valid).clamp_min(EPS)
    return w_target, w_nontarget


@register_method("dwld", "LIX's DWLD as reconstructed here: DKD with per-pixel learned weights")
class DWLD(Method):
    """DWLD on the logits; ``controller`` is the learnable MLP (``None`` unless weights=mlp).

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
        tau: float = 4.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        weights: str = "mlp",
        layers: int = 2,
        hidden: int = 32,
        warmup: float = 0.08,
        weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        check_logit_options("dwld", student.num_classes, tau, warmup)
        if weights not in WEIGHTS:
            raise KdbenchError(
                f"method 'dwld': option 'weights' must be one of {', '.join(WEIGHTS)}, "
                f"got {weights!r}"
            )
        for key, value in (("layers", layers), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KdbenchError(
                    f"method 'dwld': option {key!r} must be an integer >= 1, got {value!r}"
                )
        self.tau, self.alpha, self.beta = tau, alpha, beta
        self.weights, self.warmup, self.weight = weights, warmup, weight
        self.controller = weight_controller(layers, hidden) if weights == "mlp" else None

    def pixel_weights(
        self, zs: Tensor, zt: Tensor, target: Tensor, valid: Tensor, pt_target: Tensor
    ) -> tuple[Tensor | float, Tensor | float]:
        """(w^T, w^N) for aligned (N, K, h, w) logits: scalars, or (N, h, w) maps (mlp, kd)."""
        if self.weights == "constant":
            return self.alpha, self.beta
        if self.weights == "kd":
            return 1.0, 1.0 - pt_target
        assert self.controller is not None
        u = confidence_features(zs, zt, target, self.tau)
        a, b = F.softplus(self.controller(u)).unbind(dim=1)
        return normalised_weights(a, b, valid, self.alpha, self.beta)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        zs, zt, target, valid = align_logits(student.logits, teacher.logits, batch.label)
        tckd, nckd, pt_target = tckd_nckd(zs, zt, target, self.tau)
        w_target, w_nontarget = self.pixel_weights(zs, zt, target, valid, pt_target)
        loss = decoupled_loss(tckd, nckd, w_target, w_nontarget, valid, self.tau)
        scale = self.weight * warmup_factor(batch.progress, self.warmup)
        return {"dwld": scale * loss}


__all__ = ["DWLD", "confidence_features", "normalised_weights", "weight_controller"]
