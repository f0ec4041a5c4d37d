"""Tests of methods/kd.py against a float64 per-pixel loop and the properties of τ²·KL."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.method import IGNORE_INDEX, method_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS
from methods.kd import KD, kd_loss
from tests.methods.fakes import batch

INFO = TapInfo(
    stage_channels=(4,), stage_reductions=(4,), decoder_channels=4, num_classes=3, logit_reduction=4
)


def outputs(logits: torch.Tensor) -> Outputs:
    """Outputs carrying only logits (KD reads nothing else)."""
    return Outputs(logits=logits, stages=(), decoder=logits)


def log_softmax_list(xs: list[float]) -> list[float]:
    """Plain-Python log-softmax of a list of floats (max-shifted)."""
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def kd_loop(zs: torch.Tensor, zt: torch.Tensor, tau: float, label: torch.Tensor | None) -> float:
    """τ² · mean over (labelled) pixels of KL(p^T ‖ p^S), one pixel at a time in float64."""
    s, t = zs.double().tolist(), zt.double().tolist()
    n_img, k_cls, h, w = zs.shape
    total, count = 0.0, 0
    for n in range(n_img):
        for i in range(h):
            for j in range(w):
                if label is not None and int(label[n, i, j]) == IGNORE_INDEX:
                    continue
                ls = log_softmax_list([s[n][k][i][j] / tau for k in range(k_cls)])
                lt = log_softmax_list([t[n][k][i][j] / tau for k in range(k_cls)])
                total += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt, strict=True))
                count += 1
    return tau**2 * total / count


def random_logits(seed: int, shape: tuple[int, ...] = (2, 3, 3, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_kd_loss_matches_float64_loop(tau: float) -> None:
    zs, zt = random_logits(0), 3 * random_logits(1)
    assert kd_loss(zs, zt, tau).item() == pytest.approx(kd_loop(zs, zt, tau, None), rel=1e-10)


def test_method_applies_weight_and_default_reduction_over_all_pixels() -> None:
    zs, zt = random_logits(2), random_logits(3)
    label = torch.full((2, 3, 4), IGNORE_INDEX)
    label[0, 0, 0] = 1
    out = KD(INFO, INFO, tau=2.0, weight=0.5)(outputs(zs), outputs(zt), batch(label))
    assert set(out) == {"kd"}
    assert out["kd"].item() == pytest.approx(0.5 * kd_loop(zs, zt, 2.0, None), rel=1e-10)


def test_valid_reduction_averages_over_labelled_pixels_only() -> None:
    zs, zt = random_logits(4), random_logits(5)
    label = torch.randint(0, 3, (2, 3, 4), generator=torch.Generator().manual_seed(6))
    label[0, 1, :] = IGNORE_INDEX
    label[1, :, 2] = IGNORE_INDEX
    out = KD(INFO, INFO, reduction="valid")(outputs(zs), outputs(zt), batch(label))["kd"]
    assert out.item() == pytest.approx(kd_loop(zs, zt, 1.0, label), rel=1e-10)
    assert out.item() != pytest.approx(kd_loop(zs, zt, 1.0, None), rel=1e-6)


def test_valid_reduction_ignores_logits_at_ignored_pixels() -> None:
    zs, zt = random_logits(7), random_logits(8)
    label = torch.zeros(2, 3, 4, dtype=torch.long)
    label[1, 2, 3] = IGNORE_INDEX
    changed = zs.clone()
    changed[1, :, 2, 3] += torch.tensor([5.0, -5.0, 0.0], dtype=torch.float64)
    for reduction, same in (("valid", True), ("all", False)):
        method = KD(INFO, INFO, reduction=reduction)
        before = method(outputs(zs), outputs(zt), batch(label))["kd"].item()
        after = method(outputs(changed), outputs(zt), batch(label))["kd"].item()
        assert (before == pytest.approx(after, rel=1e-12)) is same


def test_labels_at_input_resolution_are_nearest_resized_to_the_logits() -> None:
    zs, zt = random_logits(9), random_logits(10)
    small = torch.randint(0, 3, (2, 3, 4), generator=torch.Generator().manual_seed(11))
    small[0, 0, :2] = IGNORE_INDEX
    full = small.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # (2, 12, 16)
    out = KD(INFO, INFO, reduction="valid")(outputs(zs), outputs(zt), batch(full))["kd"]
    assert out.item() == pytest.approx(kd_loop(zs, zt, 1.0, small), rel=1e-10)


def test_tau_squared_keeps_the_high_temperature_limit_finite() -> None:
    """For τ → ∞, τ²·KL(p^T‖p^S) → 1/(2K) · Σ_k (Δz̃_k)², Δz̃ the difference of centred logits.

    Without the τ² factor the loss would vanish like 1/τ² (Hinton et al. 2015, section 2.1).
    """
    zs, zt = random_logits(12), random_logits(13)
    k = zs.shape[1]
    dz = (zt - zt.mean(1, keepdim=True)) - (zs - zs.mean(1, keepdim=True))
    limit = (dz.pow(2).sum(1) / (2 * k)).mean().item()
    assert kd_loss(zs, zt, tau=1000.0).item() == pytest.approx(limit, rel=1e-2)


def test_zero_when_student_equals_teacher_and_positive_otherwise() -> None:
    z = random_logits(14)
    assert abs(kd_loss(z, z.clone(), tau=4.0).item()) < 1e-12
    assert kd_loss(z, random_logits(15), tau=4.0).item() > 0


def test_extreme_logits_give_the_exact_finite_value() -> None:
    """Teacher sure of class 1, student sure of class 0: KL = 1e4 (from log-softmaxes, not logs)."""
    zs = torch.zeros(1, 3, 2, 2)
    zt = torch.zeros(1, 3, 2, 2)
    zs[:, 0] = 1e4
    zt[:, 1] = 1e4
    zs.requires_grad_(True)
    loss = kd_loss(zs, zt, tau=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(1e4, rel=1e-6)
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


@pytest.mark.parametrize("reduction", ["all", "valid"])
def test_finite_values_and_gradients_for_huge_logits_and_all_pixels_ignored(
    reduction: str,
) -> None:
    gen = torch.Generator().manual_seed(16)
    zs = (1e4 * torch.randn(2, 3, 3, 4, generator=gen)).requires_grad_(True)
    zt = 1e4 * torch.randn(2, 3, 3, 4, generator=gen)
    label = torch.full((2, 3, 4), IGNORE_INDEX)
    loss = KD(INFO, INFO, reduction=reduction)(outputs(zs), outputs(zt), batch(label))["kd"]
    loss.backward()
    assert torch.isfinite(loss) and zs.grad is not None and torch.isfinite(zs.grad).all()
    if reduction == "valid":
        assert loss.item() == 0.0 and not zs.grad.any()


def test_teacher_logits_are_resized_to_the_student_size() -> None:
    """A teacher at twice the size whose 2x2 blocks repeat the student matches it exactly."""
    zs = random_logits(17)
    zt = zs.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    label = torch.zeros(2, 3, 4, dtype=torch.long)
    out = KD(INFO, INFO, tau=2.0)(outputs(zs), outputs(zt), batch(label))["kd"]
    assert abs(out.item()) < 1e-12


def test_gradient_reaches_the_student_logits() -> None:
    zs = random_logits(18).requires_grad_(True)
    zt = random_logits(19)
    label = torch.zeros(2, 3, 4, dtype=torch.long)
    KD(INFO, INFO)(outputs(zs), outputs(zt), batch(label))["kd"].backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0


def test_registered_with_its_options() -> None:
    assert METHODS.get("kd") is KD
    assert method_options(KD) == {"tau": 1.0, "weight": 1.0, "reduction": "all"}
    assert KD(INFO, INFO).extra_parameters() == 0
