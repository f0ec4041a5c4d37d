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

A zero discriminator gives 0 and 2.

``form: official`` is SKD's own WGAN-GP (irfanICMLL/structure_knowledge_distillation,
``utils/criterion.py``: ``CriterionAdv``, ``CriterionAdvForG``, ``CriterionAdditionalGP``;
``networks/kd_model.py``; ``run_train_val.sh``), on the same discriminator:

- student term: λ_adv · :func:`wgan_generator_loss` (D(z^S)) = −λ_adv·mean D(z^S), λ_adv = 0.1
  (SKD's ``lambda_d``, which weights both the student's and D's terms);
- D term: λ_d · [:func:`wgan_discriminator_loss` (D(z^T), D(z^S)) + λ_gp·:func:`gradient_penalty`],
  with mean D(z^S) − mean D(z^T) the critic's loss and, for x̂_n = α_n·z^T_n + (1 − α_n)·z^S_n
  (α_n ~ U(0, 1) per image, both detached),

      GP = mean_n (‖∂(Σ_m D(x̂)_m)/∂x̂_n‖₂ − 1)²,

  the gradient of the sum of all of D's scores (SKD's ``grad_outputs`` of ones: through D's
  BatchNorm the images of a batch are coupled) taken with ``create_graph`` so that the penalty is
  differentiated into D's parameters (a double backward); λ_d = 0.1, λ_gp = 10;
- D's optimiser: SGD, lr 4e-4 (``--lr-d``), momentum 0.9 (``--momentum``), weight decay 5e-4
  (``run_train_val.sh``; the argparse default is 1e-4), the lr decayed by poly
  lr·(1 − t/T)^0.9 over the run's T steps (``adjust_learning_rate`` on ``D_solver``; SKD counts
  t from 1, kdbench from 0, as for the student's schedule); one D step per student step.

The option ``weight`` (λ_adv) left null takes the form's value (0.001 or 0.1); ``lr`` is D's
learning rate in both forms (4e-4 in both codes). Both forms compute in float32 (or wider) with
autocast disabled, the D step included.

Small maps (kdbench's rule): D's four stride-2 convolutions and its last 4×4 convolution need at
least 64 pixels a side, so :func:`discriminator_input` resizes logits smaller than 64 in either
dimension bilinearly up to at least 64 in it (larger inputs are left alone); the penalty's
interpolates are taken between D's (resized) inputs, so its gradient is with respect to what D
reads.

Data parallelism: every term is a mean over the rank's images, and D's gradients are averaged
over the ranks, so only D's BatchNorm couples images: it is synchronised across ranks
(:class:`kdbench.distributed.SyncBatchNorm`, as CIRKD's ``Discriminator(distributed=True)``
does; the run converts it) and the penalty's double backward goes through that synchronisation.
The interpolation weights α are drawn for the global batch and each rank takes its images'
share (:func:`interpolation_weights`). Hence W ranks with B/W images each take the single
process's D step on B images, and the student's term has its gradient (tested with 2 gloo
ranks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from kdbench.distributed import current, mean_over_ranks, rank_share
from kdbench.method import Batch, Method, resize_like
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Ge, Gt, Interval
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


def wgan_generator_loss(d_student: Tensor) -> Tensor:
    """−mean D(z^S): the student's term of the official (WGAN-GP) form, before λ_adv; SKD's code
    uses the same expression as for the hinge form (:func:`hinge_generator_loss`)."""
    return hinge_generator_loss(d_student)


def wgan_discriminator_loss(d_teacher: Tensor, d_student: Tensor) -> Tensor:
    """mean D(z^S) − mean D(z^T): the WGAN critic's loss (before λ_d and the penalty); the
    student's scores must come from detached logits."""
    return d_student.mean() - d_teacher.mean()


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, alpha: Tensor
) -> Tensor:
    """mean_n (‖∂(Σ D(x̂))/∂x̂_n‖₂ − 1)² at x̂ = α·real + (1 − α)·fake (module docstring).

    ``real`` and ``fake``: (N, K, h, w) inputs of D (detached); ``alpha``: (N,) weights in
    [0, 1]. The gradient is taken with ``create_graph``, so the penalty is differentiable in the
    discriminator's parameters.
    """
    a = alpha.to(real.dtype).view(-1, *([1] * (real.dim() - 1)))
    mixed = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    # D reads a view: torch's FlopCounterMode (the run's FLOP count) hooks a module's inputs and
    # cannot hook a leaf inside autograd.grad
    scores = discriminator(mixed.view_as(mixed))
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def interpolation_weights(n: int, device: torch.device) -> Tensor:
    """(n,) α ~ U(0, 1) for this rank's n images: drawn for the global batch (n × world size)
    from the global generator, of which the rank takes its images' share
    (:func:`~kdbench.distributed.rank_share`), so W ranks use the weights one process would."""
    return rank_share(torch.rand(n * current().world, device=device))


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


class SGDState(nn.Module):
    """SGD with momentum and weight decay (``torch.optim.SGD``'s update, dampening 0, not
    Nesterov) whose momentum buffers and step count are buffers, as in :class:`AdamState`."""

    def __init__(self, params: list[nn.Parameter], momentum: float, weight_decay: float) -> None:
        super().__init__()
        self.momentum, self.weight_decay = momentum, weight_decay
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        for i, p in enumerate(params):
            self.register_buffer(f"b{i}", torch.zeros_like(p))

    @torch.no_grad()
    def step(self, params: list[nn.Parameter], grads: list[Tensor], lr: float) -> None:
        """b ← μ·b + (g + λ·p); p ← p − lr·b (b starts at 0, so the first b is g + λ·p, as
        torch's first step)."""
        self.steps += 1
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            b = getattr(self, f"b{i}")
            b.mul_(self.momentum).add_(g.add(p, alpha=self.weight_decay))
            p.sub_(lr * b)


Beta = Annotated[float, Interval(0, 1, closed="left")]
"""A decay rate in [0, 1): an Adam moment's, SGD's momentum."""


Form = Literal["cirkd", "official"]
"""``cirkd``: CIRKD's hinge losses and Adam; ``official``: SKD's WGAN-GP and SGD (module doc)."""

FORM_WEIGHT = {"cirkd": 0.001, "official": 0.1}
"""The student term's weight λ_adv when the ``weight`` option is null: CIRKD's ``lambda_adv``,
SKD's ``lambda_d``."""


@register_method("adv", "Liu et al. 2019 / CIRKD: GAN term on logits (hinge; official: WGAN-GP)")
class Adv(Method):
    """The adversarial term: the student's ``adv`` loss in the forward; D's own optimiser step
    in :meth:`before_optimizer_step`, once per student step.

    D's parameters never require gradients outside its own step, so the run's optimizer (built
    from the parameters that require them) never holds them and the student's loss still sends
    gradients through D to the student's logits. D's step back-propagates only D's loss (the
    hinge loss, or the critic's loss plus the gradient penalty for ``form: official``) on the
    detached logits of the last forward into D's parameters (their ``.grad`` is cleared again at
    once), averages the gradients over the ranks (as CIRKD's DistributedDataParallel D does) and
    applies :class:`AdamState` (``cirkd``: ``lr``, ``beta1``, ``beta2``) or :class:`SGDState`
    (``official``: ``lr`` decayed by poly ``power``, ``momentum``, ``weight_decay``); options of
    the other form are unused. The run's FLOP count includes the step (it calls the hook).
    """

    taps = ("logits",)
    search_space = {"weight": LogUniform(1e-4, 1e-2)}
    """What ``tune:`` searches (:mod:`kdbench.search`): the student term's weight."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        form: Form = "cirkd",
        weight: float | None = None,
        d_weight: Annotated[float, Gt(0)] = 0.1,
        lr: Annotated[float, Gt(0)] = 4e-4,
        beta1: Beta = 0.9,
        beta2: Beta = 0.99,
        gp_weight: Annotated[float, Ge(0)] = 10.0,
        momentum: Beta = 0.9,
        weight_decay: Annotated[float, Ge(0)] = 5e-4,
        power: Annotated[float, Ge(0)] = 0.9,
    ) -> None:
        super().__init__(student, teacher)
        self.form, self.d_weight, self.gp_weight = form, d_weight, gp_weight
        self.weight = FORM_WEIGHT[form] if weight is None else weight
        self.lr, self.power = lr, power
        self.discriminator = Discriminator(student.num_classes).requires_grad_(False)
        params = list(self.discriminator.parameters())
        self.optimizer: AdamState | SGDState = (
            AdamState(params, lr, (beta1, beta2))
            if form == "cirkd"
            else SGDState(params, momentum, weight_decay)
        )
        self._last: tuple[Tensor, Tensor, float] | None = None

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        zs = student.logits
        zt = resize_like(teacher.logits, zs).to(zs.dtype)
        self._last = (zs.detach(), zt.detach(), batch.progress)
        score = self.discriminator(discriminator_input(zs))
        generator_loss = hinge_generator_loss if self.form == "cirkd" else wgan_generator_loss
        return {"adv": self.weight * generator_loss(score)}

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """D's loss before λ_d on its (resized, detached) teacher and student inputs: the hinge
        loss, or the critic's loss + λ_gp·penalty (α from :func:`interpolation_weights`)."""
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        if self.form == "cirkd":
            return hinge_discriminator_loss(d_real, d_fake)
        alpha = interpolation_weights(real.shape[0], real.device)
        penalty = gradient_penalty(self.discriminator, real, fake, alpha)
        return wgan_discriminator_loss(d_real, d_fake) + self.gp_weight * penalty

    def before_optimizer_step(self) -> None:
        """One step of D's optimiser on λ_d·(D's loss) of the last forward's detached logits,
        in float32 (or wider) with autocast disabled."""
        if self._last is None:
            return
        zs, zt, progress = self._last
        self._last = None
        params = list(self.discriminator.parameters())
        self.discriminator.requires_grad_(True)
        try:
            with torch.enable_grad(), torch.autocast(zs.device.type, enabled=False):
                real, fake = discriminator_input(zt), discriminator_input(zs)
                loss = self.d_weight * self.discriminator_loss(real, fake)
                loss.backward(inputs=params)
            grads = [mean_over_ranks(p.grad) for p in params]
        finally:
            for p in params:
                p.grad = None
            self.discriminator.requires_grad_(False)
        if isinstance(self.optimizer, SGDState):
            self.optimizer.step(params, grads, self.lr * (1 - progress) ** self.power)
        else:
            self.optimizer.step(params, grads)


__all__ = [
    "AdamState",
    "Adv",
    "Discriminator",
    "SGDState",
    "SelfAttention",
    "discriminator_input",
    "gradient_penalty",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "interpolation_weights",
    "wgan_discriminator_loss",
    "wgan_generator_loss",
]
