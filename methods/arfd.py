r"""ARFD, the feature half of LIX: kernel-regression recalibration and CKA consistency.

Guo et al., "LIX: Implicitly Infusing Spatial Geometric Prior Knowledge into Visual Semantic
Segmentation for Autonomous Driving", arXiv 2403.08215 (its "adaptively-recalibrated feature
distillation"). CKA: Kornblith, Norouzi, Lee and Hinton, "Similarity of Neural Network
Representations Revisited", ICML 2019; HSIC: Gretton et al., ALT 2005.

**This is kdbench's reconstruction, not the authors' code.** LIX's code and full text were not
available to this project. Taken from the paper: ARFD recalibrates student features towards the
teacher by kernel regression with a Laplace kernel and measures the consistency of the two with
centred kernel alignment (CKA, built on HSIC); the paper's ablation varies the kernel. Everything
else is this project's own choice: the anchors and their number, how they and σ are initialised,
the stages, the linear-CKA estimator and its RBF alternative, the loss Σ (1 − CKA). Options:
``stages``, ``kernel``, ``anchors``, ``cka``, ``subsample`` (for rbf), ``weight``; the
initialisation and the loss form are fixed.

For each distilled stage (default the last two encoder stages; the teacher's tap is its fused
RGB-X stage feature), with student map f_S (N, C_S, H_S, W_S) and teacher map f_T (N, C_T, H, W):

1. Spatial alignment: f_S is resized bilinearly to (H, W) when the sizes differ; pixels become
   rows: X ∈ R^{n×C_S}, Y ∈ R^{n×C_T}, n = N·H·W.
2. Recalibration by Nadaraya–Watson regression with M learnable anchors, keys c_m ∈ R^{C_S} in
   the student space and values v_m ∈ R^{C_T} in the teacher space:
   R(x) = Σ_m k(x, c_m)·v_m / Σ_m k(x, c_m), computed as softmax_m(log k(x, c_m)) · V so that
   it is finite even when every k underflows. Kernels (option ``kernel``):
   ``laplace`` k = exp(−‖x − c‖₂ / σ) (default), ``laplace_l1`` k = exp(−‖x − c‖₁ / σ),
   ``gaussian`` k = exp(−‖x − c‖₂² / (2σ²)), and ``linear``: no kernel regression, a plain
   learnable 1x1 adapter C_S -> C_T without bias (always learnable, also when C_S = C_T).
   σ = exp(log σ) is learnable. On the first training batch, the keys and values are set to the
   student and teacher features of M random pixels and σ to the median distance between the
   batch's pixels and the keys; a persistent buffer ``initialised`` records this, so a resumed
   run does not initialise again.
3. Consistency: linear CKA with pixels as samples, columns centred,
   CKA(R, Y) = ‖YᵀR‖_F² / (‖RᵀR‖_F · ‖YᵀY‖_F), in feature space (no n×n Gram matrix). R is
   never formed: it is a product R = A·V of the (n, M) regression weights and the (M, C_T)
   anchor values (for ``linear``, of X and the adapter's Wᵀ), so the student side costs
   O(n·M·(M + C_T)) instead of O(n·C_T²) (:func:`factored_linear_cka`). Option ``cka: rbf``:
   CKA through HSIC with Gaussian Gram matrices of median-heuristic bandwidth on ``subsample``
   random pixels.

    L_ARFD = Σ_stages (1 − CKA(R(X), Y))

Like every method, ARFD computes in float32 (float64 for float64 inputs) with autocast
disabled (:class:`kdbench.method.Method`): the distance and Gram products lose too much in
float16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from kdbench.distributed import from_rank0
from kdbench.method import Batch, Method, feature_pairs, resolve_stages, stage_sum
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Ge
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform

Kernel = Literal["laplace", "gaussian", "laplace_l1", "linear"]
Cka = Literal["linear", "rbf"]
EPS = 1e-12
"""Floor of squared distances under a square root, whose gradient is infinite at 0."""


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA of (n, d1) and (n, d2) samples, in feature space: a scalar in [0, 1].

    With centred columns, CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F·‖YᵀY‖_F), which equals
    HSIC(K, L) / sqrt(HSIC(K, K)·HSIC(L, L)) for the Gram matrices K = XXᵀ, L = YYᵀ, without
    forming them. Each side is first divided by its (detached) Frobenius norm: CKA is invariant
    to isotropic scaling, so value and gradient are unchanged while every product stays ≤ 1 and
    cannot overflow. A constant side has CKA 0 (the denominator is floored, never 0/0).
    """
    x, y = _unit_frobenius(x - x.mean(dim=0)), _unit_frobenius(y - y.mean(dim=0))
    cross = (y.T @ x).pow(2).sum()
    norms = (x.T @ x).pow(2).sum() * (y.T @ y).pow(2).sum()
    return cross / norms.clamp_min(torch.finfo(norms.dtype).tiny).sqrt()


def factored_linear_cka(a: Tensor, v: Tensor, y: Tensor) -> Tensor:
    """Linear CKA of X = A·V and Y without forming X: (n, r) ``a``, (r, d1) ``v``, and ``y``
    either (n, d2) rows or (N, d2, P) maps whose n = N·P pixels are a's rows in order.

    With centred columns (centring X is centring A, since X_c = A_c·V), YᵀX = (Y_cᵀA_c)·V and
    XᵀX = Vᵀ(A_cᵀA_c)V, so the cost is O(n·r·(r + d2)) for the student side instead of
    O(n·d1·(d1 + d2)); ‖YᵀY‖_F costs O(n·d2²) without gradient. ARFD's recalibration is such
    a product: softmax weights (n, M) times the M anchor values, or features times the adapter.
    Y in map form is read in place (no transposed copy). The small products are divided by
    the (detached) squared Frobenius norms of A_c, V and Y_c before squaring: CKA is invariant
    to those scales, so value and gradient are unchanged and nothing overflows.
    """
    maps = y if y.dim() == 3 else y.T[None]
    a = a.reshape(maps.shape[0], maps.shape[2], a.shape[1])
    a = a - a.mean(dim=(0, 1))
    maps = maps - maps.mean(dim=(0, 2), keepdim=True)
    ya = torch.bmm(maps, a).sum(dim=0)
    aa = torch.bmm(a.transpose(1, 2), a).sum(dim=0)
    with torch.no_grad():
        yy = torch.bmm(maps, maps.transpose(1, 2)).sum(dim=0)
    tiny = torch.finfo(aa.dtype).tiny
    a_sq = aa.detach().diagonal().sum().clamp_min(tiny)
    y_sq = yy.diagonal().sum().clamp_min(tiny)
    v = v / v.detach().norm().clamp_min(tiny)
    cross = ((ya / (a_sq * y_sq).sqrt()) @ v).pow(2).sum()
    xx = (v.T @ (aa / a_sq) @ v).pow(2).sum()
    norms = xx * (yy / y_sq).pow(2).sum()
    return cross / norms.clamp_min(tiny).sqrt()


def rbf_cka(x: Tensor, y: Tensor) -> Tensor:
    """CKA through HSIC with Gaussian Gram matrices for (n, d1) and (n, d2) samples.

    K_ij = exp(−‖x_i − x_j‖² / (2σ²)) with σ² the median of the squared pairwise distances
    (median heuristic, detached), and CKA = ⟨HKH, HLH⟩ / (‖HKH‖_F·‖HLH‖_F) with the centring
    matrix H = I − 11ᵀ/n. Forms n×n matrices: call it on a subsample of pixels.
    """
    k, l_ = _centred_gram(_rbf_gram(x)), _centred_gram(_rbf_gram(y))
    norms = k.pow(2).sum() * l_.pow(2).sum()
    return (k * l_).sum() / norms.clamp_min(torch.finfo(norms.dtype).tiny).sqrt()


def _unit_frobenius(x: Tensor) -> Tensor:
    return x / x.detach().norm().clamp_min(torch.finfo(x.dtype).tiny)


def _rbf_gram(x: Tensor) -> Tensor:
    sq = squared_distance(x, x)
    i, j = torch.triu_indices(len(x), len(x), offset=1, device=x.device)
    sigma_sq = sq.detach()[i, j].median().clamp_min(torch.finfo(sq.dtype).tiny)
    return torch.exp(-sq / (2 * sigma_sq))


def _centred_gram(k: Tensor) -> Tensor:
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def squared_distance(x: Tensor, keys: Tensor) -> Tensor:
    """‖x_i − c_m‖₂² for (n, d) rows and (M, d) keys -> (n, M), in O(n·M + n·d) memory.

    Expanded as ‖x‖² + ‖c‖² − 2x·c after a shift by the keys' mean (distances are translation
    invariant; the shift reduces cancellation), floored at 0.
    """
    shift = keys.detach().mean(dim=0)
    x, keys = x - shift, keys - shift
    sq = x.pow(2).sum(dim=1, keepdim=True) + keys.pow(2).sum(dim=1) - 2 * x @ keys.T
    return sq.clamp_min(0.0)


class _L1Distance(torch.autograd.Function):
    """‖x_i − c_m‖₁ -> (n, M) with a backward pass that loops over the M keys.

    The gradient Σ_m g_im·sign(x_i − c_m) is accumulated one key at a time, so neither pass holds
    an (n, M, d) tensor (the backward of ``torch.cdist`` may allocate one).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, keys: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x, keys)
        return torch.cdist(x, keys, p=1.0)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        x, keys = ctx.saved_tensors  # type: ignore[attr-defined]
        grad_x, grad_keys = torch.zeros_like(x), torch.empty_like(keys)
        for m in range(len(keys)):
            g = grad[:, m : m + 1] * torch.sign(x - keys[m])
            grad_x += g
            grad_keys[m] = -g.sum(dim=0)
        return grad_x, grad_keys


def kernel_distance(x: Tensor, keys: Tensor, kernel: str) -> Tensor:
    """The distance a kernel uses: L1 for ``laplace_l1``, else L2; (n, d), (M, d) -> (n, M).

    The L2 distance is sqrt(max(d², 1e-12)): finite gradients when x coincides with a key.
    """
    if kernel == "laplace_l1":
        return _L1Distance.apply(x, keys)
    return squared_distance(x, keys).clamp_min(EPS).sqrt()


def kernel_weights(x: Tensor, keys: Tensor, sigma: Tensor, kernel: str = "laplace") -> Tensor:
    """k(x_i, c_m) / Σ_m k(x_i, c_m) for (n, d) rows and (M, d) keys -> (n, M).

    log k = −d/σ (``laplace``, ``laplace_l1``) or −d²/(2σ²) (``gaussian``); the normalised
    weights are a softmax over the M anchors of log k.
    """
    d = kernel_distance(x, keys, kernel)
    log_k = -d.pow(2) / (2 * sigma.pow(2)) if kernel == "gaussian" else -d / sigma
    return torch.softmax(log_k, dim=1)


def nadaraya_watson(
    x: Tensor, keys: Tensor, values: Tensor, sigma: Tensor, kernel: str = "laplace"
) -> Tensor:
    """R(x) = Σ_m k(x, c_m)·v_m / Σ_m k(x, c_m) for (n, d) rows, (M, d) keys, (M, e) values.

    :func:`kernel_weights` times the values; returns (n, e).
    """
    return kernel_weights(x, keys, sigma, kernel) @ values


class KernelRegression(nn.Module):
    """Nadaraya–Watson recalibration (n, C_S) -> (n, C_T) with M learnable anchors and σ.

    Parameters: ``keys`` (M, C_S), ``values`` (M, C_T), ``log_sigma`` (scalar); buffer
    ``initialised`` (bool), set by :meth:`initialise` on the first batch.
    """

    def __init__(self, in_channels: int, out_channels: int, anchors: int, kernel: str) -> None:
        super().__init__()
        self.kernel = kernel
        self.keys = nn.Parameter(torch.zeros(anchors, in_channels))
        self.values = nn.Parameter(torch.zeros(anchors, out_channels))
        self.log_sigma = nn.Parameter(torch.zeros(()))
        self.register_buffer("initialised", torch.tensor(False))
        self._known: bool | None = None
        """The buffer's value once read (a host read, once per built or loaded module)."""

    def ready(self) -> bool:
        """Whether the anchors are set: ``initialised``, read from the device only the first
        time (and again after a state dict is loaded), so later steps do not synchronise."""
        if self._known is None:
            self._known = bool(self.initialised)
        return self._known

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._known = None  # the loaded buffer decides
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def initialise(self, x: Tensor, y: Tensor) -> None:
        """Anchors from M random rows of (n, C_S) ``x`` / (n, C_T) ``y``; σ = median distance.

        Rows are drawn without replacement when n ≥ M (with replacement otherwise), from the
        global torch RNG; the median is over all n·M distances between ``x`` and the keys.
        When several processes train the run, every rank takes rank 0's anchors and σ.
        """
        n, m = len(x), len(self.keys)
        if n >= m:
            rows = torch.randperm(n, device=x.device)[:m]
        else:
            rows = torch.randint(n, (m,), device=x.device)
        self.keys.copy_(x[rows])
        self.values.copy_(y[rows])
        median = kernel_distance(x, self.keys, self.kernel).median()
        self.log_sigma.copy_(median.clamp_min(math.sqrt(EPS)).log())
        from_rank0(self.keys, self.values, self.log_sigma)  # data parallel: one set of anchors
        self.initialised.fill_(True)
        self._known = True

    def weights(self, x: Tensor) -> Tensor:
        """The (n, M) regression weights of (n, C_S) rows: R(x) = weights(x) @ values."""
        return kernel_weights(x, self.keys, self.log_sigma.exp(), self.kernel)

    def factors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """R(x) as the product (weights (n, M), values (M, C_T)), for the factored CKA."""
        return self.weights(x), self.values

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - documented on the class
        return self.weights(x) @ self.values


def pixel_rows(feature: Tensor) -> Tensor:
    """(N, C, H, W) -> (N·H·W, C): pixels as samples, channels as columns."""
    return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])


@register_method("arfd", "LIX's ARFD as reconstructed here: kernel-regression recalibration + CKA")
class ARFD(Method):
    """ARFD on the selected encoder stages; one recalibration module per stage.

    kdbench's reconstruction of LIX's feature half (LIX's code and full text were not
    available); the module docstring says which parts come from the paper and which are this
    project's.

    ``recalibrations[j]`` is a :class:`KernelRegression` (or an ``nn.Linear`` without bias for
    ``kernel: linear``) for stage ``stages[j]``.
    """

    taps = ("stages",)
    search_space = {"weight": LogUniform(0.1, 10.0), "anchors": Choice(32, 64, 128)}
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        stages: Sequence[int] = (-2, -1),
        kernel: Kernel = "laplace",
        anchors: Annotated[int, Ge(1)] = 64,
        cka: Cka = "linear",
        subsample: Annotated[int, Ge(2)] = 1024,
        weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher)
        self.stages = resolve_stages("arfd", stages, student, teacher)
        self.kernel, self.cka, self.subsample, self.weight = kernel, cka, subsample, weight
        self.recalibrations = nn.ModuleList(
            nn.Linear(student.stage_channels[i], teacher.stage_channels[i], bias=False)
            if kernel == "linear"
            else KernelRegression(
                student.stage_channels[i], teacher.stage_channels[i], anchors, kernel
            )
            for i in self.stages
        )

    def stage_loss(self, recalibration: nn.Module, fs: Tensor, ft: Tensor) -> Tensor:
        """1 − CKA(R(X), Y) for one stage's aligned maps (:func:`~kdbench.method.feature_pairs`):
        the student's (N, C_S, H, W), resized to the teacher's size, and the teacher's
        (N, C_T, H, W) in the student's dtype."""
        x = pixel_rows(fs)
        if isinstance(recalibration, KernelRegression) and not recalibration.ready():
            recalibration.initialise(x, pixel_rows(ft))
        if self.cka == "rbf":
            y = pixel_rows(ft)
            if len(x) > self.subsample:
                rows = torch.randperm(len(x), device=x.device)[: self.subsample]
                x, y = x[rows], y[rows]
            return 1 - rbf_cka(recalibration(x), y)
        if isinstance(recalibration, KernelRegression):
            a, v = recalibration.factors(x)
        else:  # the linear adapter: R(x) = x·Wᵀ
            a, v = x, recalibration.weight.T
        return 1 - factored_linear_cka(a, v, ft.flatten(2))

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        pairs = feature_pairs(student, teacher, "stages", self.stages)
        losses = (
            self.stage_loss(recalibration, fs, ft)
            for (fs, ft), recalibration in zip(pairs, self.recalibrations, strict=True)
        )
        return {"arfd": self.weight * stage_sum(losses)}


__all__ = [
    "ARFD",
    "KernelRegression",
    "factored_linear_cka",
    "kernel_distance",
    "kernel_weights",
    "linear_cka",
    "nadaraya_watson",
    "pixel_rows",
    "rbf_cka",
    "squared_distance",
]
