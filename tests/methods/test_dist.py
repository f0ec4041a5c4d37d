"""Tests of methods/dist.py: a float64 per-pixel/per-class loop, Pearson identities, invariances."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.method import IGNORE_INDEX, Batch, method_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS
from methods.dist import DIST, dist_loss, pearson

INFO = TapInfo(
    stage_channels=(4,), stage_reductions=(4,), decoder_channels=4, num_classes=3, logit_reduction=4
)


def outputs(logits: torch.Tensor) -> Outputs:
    return Outputs(logits=logits, stages=(), decoder=logits)


def batch(n: int = 2, size: int = 12) -> Batch:
    label = torch.full((n, size, size), IGNORE_INDEX)
    return Batch(rgb=torch.zeros(n, 3, size, size), x=torch.zeros(n, 1, size, size), label=label)


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def pearson_list(u: list[float], v: list[float], eps: float = 1e-8) -> float:
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    cu, cv = [x - mu for x in u], [x - mv for x in v]
    nu = max(math.sqrt(sum(x * x for x in cu)), eps)
    nv = max(math.sqrt(sum(x * x for x in cv)), eps)
    return sum(a * b for a, b in zip(cu, cv, strict=True)) / (nu * nv)


def dist_loop(zs: torch.Tensor, zt: torch.Tensor, tau: float, beta: float, gamma: float) -> float:
    """τ²(β·inter + γ·intra) with one softmax per pixel and one Pearson per row/column, float64."""

    def rows(z: torch.Tensor) -> list[list[float]]:
        out = []
        zl = z.double().tolist()
        n_img, k_cls, h, w = z.shape
        for n in range(n_img):
            for i in range(h):
                for j in range(w):
                    e = [math.exp(zl[n][k][i][j] / tau) for k in range(k_cls)]
                    out.append([x / sum(e) for x in e])
        return out

    ps, pt = rows(zs), rows(zt)
    inter = 1 - sum(pearson_list(a, b) for a, b in zip(ps, pt, strict=True)) / len(ps)
    k_cls = len(ps[0])
    columns = [([r[k] for r in ps], [r[k] for r in pt]) for k in range(k_cls)]
    intra = 1 - sum(pearson_list(a, b) for a, b in columns) / k_cls
    return tau**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize(("tau", "beta", "gamma"), [(1.0, 1.0, 1.0), (2.0, 0.5, 2.0)])
def test_dist_loss_matches_float64_loop(tau: float, beta: float, gamma: float) -> None:
    zs, zt = randn(2, 3, 3, 4, seed=0), 2 * randn(2, 3, 3, 4, seed=1)
    expected = dist_loop(zs, zt, tau, beta, gamma)
    assert dist_loss(zs, zt, tau, beta, gamma).item() == pytest.approx(expected, rel=1e-10)


def test_method_defaults_and_weight() -> None:
    assert method_options(DIST) == {"tau": 1.0, "beta": 1.0, "gamma": 1.0, "weight": 1.0}
    zs, zt = randn(2, 3, 3, 4, seed=2), randn(2, 3, 3, 4, seed=3)
    method = DIST(INFO, INFO, weight=2.0)
    assert method.taps == ("logits",) and method.extra_parameters() == 0
    out = method(outputs(zs), outputs(zt), batch())
    assert set(out) == {"dist"}
    assert out["dist"].item() == pytest.approx(2 * dist_loop(zs, zt, 1.0, 1.0, 1.0), rel=1e-10)


def test_pearson_identities() -> None:
    u, v = randn(5, 7, seed=4), randn(5, 7, seed=5)
    r = pearson(u, v, dim=1)
    assert torch.allclose(pearson(u, u, dim=1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(pearson(3.0 * u + 2.0, v - 7.0, dim=1), r)
    assert torch.allclose(pearson(-0.5 * u, v, dim=1), -r)
    assert torch.allclose(pearson(u.T, v.T, dim=0), r)
    assert (r.abs() <= 1).all()


def test_pearson_of_a_constant_is_zero_with_finite_gradients() -> None:
    u = torch.full((2, 4), 0.25, requires_grad=True)
    v = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    r = pearson(u, v, dim=1)
    r.sum().backward()
    assert torch.equal(r, torch.zeros(2))
    assert u.grad is not None and torch.isfinite(u.grad).all()


def test_zero_when_student_equals_teacher() -> None:
    z = randn(2, 3, 3, 4, seed=6)
    assert abs(dist_loss(z, z.clone()).item()) < 1e-12
    assert dist_loss(z, randn(2, 3, 3, 4, seed=7)).item() > 0


def test_invariant_to_joint_pixel_and_class_permutations_and_per_pixel_logit_shifts() -> None:
    zs, zt = randn(2, 3, 3, 4, seed=8), randn(2, 3, 3, 4, seed=9)
    base = dist_loss(zs, zt).item()

    gen = torch.Generator().manual_seed(10)
    pixels = torch.randperm(2 * 3 * 4, generator=gen)

    def shuffle_pixels(z: torch.Tensor) -> torch.Tensor:
        flat = z.movedim(1, -1).reshape(-1, 3)[pixels]
        return flat.reshape(2, 3, 4, 3).movedim(-1, 1)

    assert dist_loss(shuffle_pixels(zs), shuffle_pixels(zt)).item() == pytest.approx(
        base, rel=1e-10
    )
    classes = [2, 0, 1]
    assert dist_loss(zs[:, classes], zt[:, classes]).item() == pytest.approx(base, rel=1e-10)
    shift = 5 * randn(2, 1, 3, 4, seed=11)
    assert dist_loss(zs + shift, zt - shift).item() == pytest.approx(base, rel=1e-10)
    assert dist_loss(shuffle_pixels(zs), zt).item() != pytest.approx(base, rel=1e-3)


def test_constant_student_gives_beta_plus_gamma_with_finite_gradients() -> None:
    """Uniform student probabilities: every row and column is constant, so every ρ is 0."""
    zs = torch.zeros(2, 3, 3, 4, requires_grad=True)
    zt = randn(2, 3, 3, 4, seed=12).float()
    loss = dist_loss(zs, zt, beta=0.5, gamma=2.0)
    loss.backward()
    assert loss.item() == pytest.approx(2.5, abs=1e-6)
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


def test_teacher_logits_are_resized_to_the_student_size() -> None:
    zs = randn(2, 3, 3, 4, seed=13)
    zt = zs.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert abs(DIST(INFO, INFO)(outputs(zs), outputs(zt), batch())["dist"].item()) < 1e-12


def test_finite_values_and_gradients_for_huge_logits_and_all_pixels_ignored() -> None:
    gen = torch.Generator().manual_seed(14)
    zs = (1e4 * torch.randn(2, 3, 3, 4, generator=gen)).requires_grad_(True)
    zt = 1e4 * torch.randn(2, 3, 3, 4, generator=gen)
    loss = DIST(INFO, INFO, tau=2.0)(outputs(zs), outputs(zt), batch())["dist"]
    loss.backward()
    assert torch.isfinite(loss) and 0 <= loss.item() <= 4 * 2 * 2
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


def test_registered() -> None:
    assert METHODS.get("dist") is DIST
