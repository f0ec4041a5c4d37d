r"""SKD's holistic (adversarial) term as CIRKD trains it: a discriminator on raw logits.

Liu et al., "Structured Knowledge Distillation for Semantic
Segmentation", CVPR 2019 (the holistic term); as re-implemented by CIRKD (Yang et al., CVPR
2022): winycg/CIRKD ``losses/adv.py`` and ``utils/sagan.py``. Read from CIRKD's code;
definitions pinned in shared/METHODS.md.

:class:`Discriminator` D reads the raw logits z (N, K, h, w) alone (no image):

    BatchNorm(K) → [SN conv 4×4 s2 p1 → LeakyReLU 0.1] × 3 (K → 64 → 128 → 256)
    → self-attention → SN conv 4×4 s2 p1 (→ 512) → LeakyReLU 0.1 → self-attention
    → conv 4×4 (→ 1)

(SN = spectral normalisation; each self-attention block, SAGAN's, adds γ·attention to its input
with γ initialised to 0). A 64×128 input gives an (N, 1, 1, 5) output. Hinge losses:

- student (generator) term: :func:`hinge_generator_loss` (D(z^S)) = −mean D(z^S), weighted by
  λ_adv (default 0.001);
- discriminator term: :func:`hinge_discriminator_loss` (D(z^T), D(z^S.detach())) =
  mean ReLU(1 − D(z^T)) + mean ReLU(1 + D(z^S)), weighted by λ_d (default 0.1), minimised by
  D's own optimiser (Adam, lr 4e-4, betas (0.9, 0.99)), one step per student step.

A zero discriminator gives 0 and 2. Small maps (kdbench's rule): D's four stride-2 convolutions
and its last 4×4 convolution need at least 64 pixels a side, so :func:`discriminator_input`
resizes logits smaller than 64 in either dimension bilinearly up to at least 64 in it (larger
inputs are left alone). Under data parallelism each rank's D sees its own batch; the
BatchNorm is to be synchronised across ranks, as CIRKD does.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from kdbench.distributed import mean_over_ranks
from kdbench.method import Batch, Method, resize_like
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Gt, Interval
from kdbench.registry import register_method
from kdbench.search import LogUniform

MIN_SIDE = 64
"""Smallest input side the discriminator accepts (:func:`discriminator_input`)."""


class SelfAttention(nn.Module):
    """SAGAN's self-attention over positions: x + γ·V·softmax(QᵀK)ᵀ, Q and K 1×1 convs to
    C/8 channels, V a 1×1 conv to C channels, γ a learnable scalar initialised to 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, max(1, channels // 8), 1)
        self.key = nn.Conv2d(channels, max(1, channels // 8), 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)  # (N, C', P)
        k = self.key(x).flatten(2)
        attention = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (N, P, P): row i over j
        out = self.value(x).flatten(2) @ attention.transpose(1, 2)  # (N, C, P)
        return x + self.gamma * out.view(n, c, h, w)


def _down(c_in: int, c_out: int) -> list[nn.Module]:
    """Spectral-norm conv 4×4 stride 2 padding 1, then LeakyReLU(0.1)."""
    return [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.1)]


class Discriminator(nn.Sequential):
    """CIRKD's SAGAN-style discriminator on (N, K, h, w) logits (module docstring); output
    (N, 1, h/16 − 3, w/16 − 3) scores."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(
            nn.BatchNorm2d(num_classes),
            *_down(num_classes, 64),
            *_down(64, 128),
            *_down(128, 256),
            SelfAttention(256),
            *_down(256, 512),
            SelfAttention(512),
            nn.Conv2d(512, 1, 4),
        )


def discriminator_input(logits: Tensor) -> Tensor:
    """``logits`` bilinearly resized so that each side is at least :data:`MIN_SIDE` (64);
    unchanged when both sides already are."""
    h, w = logits.shape[-2:]
    if h >= MIN_SIDE and w >= MIN_SIDE:
        return logits
    size = (max(h, MIN_SIDE), max(w, MIN_SIDE))
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def hinge_generator_loss(d_student: Tensor) -> Tensor:
    """−mean D(z^S): the student's adversarial term (before λ_adv)."""
    return -d_student.mean()


def hinge_discriminator_loss(d_teacher: Tensor, d_student: Tensor) -> Tensor:
    """mean ReLU(1 − D(z^T)) + mean ReLU(1 + D(z^S)): D's hinge loss (before λ_d); the
    student's scores must come from detached logits."""
    return F.relu(1.0 - d_teacher).mean() + F.relu(1.0 + d_student).mean()


class AdamState(nn.Module):
    """Adam (Kingma & Ba; ``torch.optim.Adam``'s update, no weight decay) whose moments and step
    count are buffers, so the owning method's state dict, hence the run's checkpoint, holds the
    optimiser state and a resumed run continues it exactly."""

    def __init__(self, params: list[nn.Parameter], lr: float, betas: tuple[float, float],
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.lr, self.betas, self.eps = lr, betas, eps
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        for i, p in enumerate(params):
            self.register_buffer(f"m{i}", torch.zeros_like(p))
            self.register_buffer(f"v{i}", torch.zeros_like(p))

    @torch.no_grad()
    def step(self, params: list[nn.Parameter], grads: list[Tensor]) -> None:
        """p ← p − lr·m̂/(√v̂ + eps), m and v the bias-corrected moving moments of the grads."""
        self.steps += 1
        b1, b2 = self.betas
        t = self.steps.double()  # stays on the device: no host read per step
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            m, v = getattr(self, f"m{i}"), getattr(self, f"v{i}")
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**t).to(v.dtype)).sqrt_().add_(self.eps)
            p.sub_(self.lr * (m / (1 - b1**t).to(m.dtype)) / denom)


Beta = Annotated[float, Interval(0, 1, closed="left")]
"""An Adam moment's decay rate."""


@register_method("adv", "Liu et al. 2019 / CIRKD: hinge GAN term, discriminator on the logits")
class Adv(Method):
    """The adversarial term: the student's ``adv`` loss in the forward; D's own Adam step in
    :meth:`before_optimizer_step`, once per student step.

    D's parameters never require gradients outside its own step, so the run's optimizer (built
    from the parameters that require them) never holds them and the student's loss still sends
    gradients through D to the student's logits. D's step back-propagates only D's hinge loss on
    the detached logits of the last forward into D's parameters (their ``.grad`` is cleared
    again at once), averages the gradients over the ranks (as CIRKD's DistributedDataParallel D
    does) and applies :class:`AdamState`. The run's FLOP count includes the step (it calls
    the hook). ``form: official`` (SKD's WGAN-GP) is not implemented.
    """

    taps = ("logits",)
    search_space = {"weight": LogUniform(1e-4, 1e-2)}
    """What ``tune:`` searches (:mod:`kdbench.search`): the student term's weight."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        weight: float = 0.001,
        d_weight: Annotated[float, Gt(0)] = 0.1,
        lr: Annotated[float, Gt(0)] = 4e-4,
        beta1: Beta = 0.9,
        beta2: Beta = 0.99,
    ) -> None:
        super().__init__(student, teacher)
        self.weight, self.d_weight = weight, d_weight
        self.discriminator = Discriminator(student.num_classes).requires_grad_(False)
        self.optimizer = AdamState(list(self.discriminator.parameters()), lr, (beta1, beta2))
        self._last: tuple[Tensor, Tensor] | None = None

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        zs = student.logits
        zt = resize_like(teacher.logits, zs).to(zs.dtype)
        self._last = (zs.detach(), zt.detach())
        score = self.discriminator(discriminator_input(zs))
        return {"adv": self.weight * hinge_generator_loss(score)}

    def before_optimizer_step(self) -> None:
        """One Adam step of D on λ_d·hinge(D(z^T), D(z^S.detach())) of the last forward."""
        if self._last is None:
            return
        zs, zt = self._last
        self._last = None
        params = list(self.discriminator.parameters())
        self.discriminator.requires_grad_(True)
        try:
            with torch.enable_grad():
                real = self.discriminator(discriminator_input(zt))
                fake = self.discriminator(discriminator_input(zs))
                (self.d_weight * hinge_discriminator_loss(real, fake)).backward(inputs=params)
            grads = [mean_over_ranks(p.grad) for p in params]
        finally:
            for p in params:
                p.grad = None
            self.discriminator.requires_grad_(False)
        self.optimizer.step(params, grads)


__all__ = [
    "AdamState",
    "Adv",
    "Discriminator",
    "SelfAttention",
    "discriminator_input",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
]
