"""DKD: golden values from a float64 per-pixel loop, the KL decomposition, warm-up, extremes."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, Batch, build_method
from kdbench.models.outputs import Outputs, TapInfo
from methods.dkd import DKD, dkd_loss, tckd_nckd
from methods.kd import pixel_kl

K = 4


def tap_info(num_classes: int = K) -> TapInfo:
    """A tiny model description: two stages of 6 and 8 channels."""
    return TapInfo((6, 8), (8, 16), 8, num_classes, 4)


def logits_only(logits: torch.Tensor) -> Outputs:
    """Outputs carrying only logits (DKD-style methods read nothing else)."""
    return Outputs(logits, (), logits)


def batch_for(label: torch.Tensor, progress: float = 1.0) -> Batch:
    """A Batch with ``label`` at ``progress`` of training (100 steps in total)."""
    n, h, w = label.shape
    step = round(progress * 100)
    return Batch(torch.zeros(n, 3, h, w), torch.zeros(n, 1, h, w), label, step, 100)


def reference_terms(zs: list[float], zt: list[float], t: int, tau: float) -> tuple[float, float]:
    """(TCKD, NCKD) at one pixel, straight from the definitions with Python floats."""

    def softmax(z: list[float]) -> list[float]:
        top = max(z)
        e = [math.exp((v - top) / tau) for v in z]
        return [v / sum(e) for v in e]

    ps, pt = softmax(zs), softmax(zt)
    tckd = pt[t] * math.log(pt[t] / ps[t]) + (1 - pt[t]) * math.log((1 - pt[t]) / (1 - ps[t]))
    nckd = 0.0
    for k in range(len(zs)):
        if k != t:
            hat_t, hat_s = pt[k] / (1 - pt[t]), ps[k] / (1 - ps[t])
            nckd += hat_t * math.log(hat_t / hat_s)
    return tckd, nckd


def reference_dkd(
    zs: torch.Tensor, zt: torch.Tensor, label: torch.Tensor, tau: float, alpha: float, beta: float
) -> float:
    """τ² · mean over labelled pixels of α·TCKD + β·NCKD, one pixel at a time."""
    total, count = 0.0, 0
    n, _, h, w = zs.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                t = int(label[i, y, x])
                if t == IGNORE_INDEX:
                    continue
                tckd, nckd = reference_terms(
                    zs[i, :, y, x].tolist(), zt[i, :, y, x].tolist(), t, tau
                )
                total += alpha * tckd + beta * nckd
                count += 1
    return tau**2 * total / count


def random_case(seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z^S, z^T, labels) of shape (2, K, 3, 4) / (2, 3, 4) with a few ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(2, K, 3, 4, generator=g, dtype=torch.float64) * scale
    zt = torch.randn(2, K, 3, 4, generator=g, dtype=torch.float64) * scale
    label = torch.randint(0, K, (2, 3, 4), generator=g)
    label[0, 0, :2] = IGNORE_INDEX
    label[1, 2, 3] = IGNORE_INDEX
    return zs, zt, label


def test_terms_match_the_definitions_pixel_by_pixel() -> None:
    zs, zt, label = random_case(0)
    tckd, nckd, pt_target = tckd_nckd(zs, zt, label.clamp_max(K - 1), tau=2.0)
    for i, y, x in [(0, 0, 0), (0, 2, 3), (1, 1, 2), (1, 0, 1)]:
        t = int(label[i, y, x].clamp_max(K - 1))
        ref_tckd, ref_nckd = reference_terms(zs[i, :, y, x].tolist(), zt[i, :, y, x].tolist(), t, 2)
        assert tckd[i, y, x].item() == pytest.approx(ref_tckd, rel=1e-10, abs=1e-12)
        assert nckd[i, y, x].item() == pytest.approx(ref_nckd, rel=1e-10, abs=1e-12)
        pt = torch.softmax(zt[i, :, y, x] / 2.0, dim=0)[t].item()
        assert pt_target[i, y, x].item() == pytest.approx(pt, rel=1e-12)


@pytest.mark.parametrize(("tau", "alpha", "beta"), [(4.0, 1.0, 8.0), (2.0, 1.5, 5.0)])
def test_dkd_loss_golden(tau: float, alpha: float, beta: float) -> None:
    zs, zt, label = random_case(1)
    got = dkd_loss(zs, zt, label, tau, alpha, beta).item()
    assert got == pytest.approx(reference_dkd(zs, zt, label, tau, alpha, beta), rel=1e-10)


def test_kl_equals_tckd_plus_weighted_nckd() -> None:
    zs, zt, label = random_case(2, scale=5.0)
    tckd, nckd, pt_target = tckd_nckd(zs, zt, label.clamp_max(K - 1), tau=1.5)
    kl = pixel_kl(zs, zt, tau=1.5)
    torch.testing.assert_close(tckd + (1 - pt_target) * nckd, kl, rtol=1e-10, atol=1e-12)


def test_method_resizes_labels_and_warms_up() -> None:
    zs, zt, label = random_case(3)
    label_full = label.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # (2, 12, 16)
    method = build_method([("dkd", {})], tap_info(), tap_info())
    expected = reference_dkd(zs, zt, label, 4.0, 1.0, 8.0)
    for progress, factor in [(0.0, 0.0), (0.02, 0.25), (0.08, 1.0), (0.5, 1.0)]:
        out = method(logits_only(zs), logits_only(zt), batch_for(label_full, progress))
        assert out["dkd"].item() == pytest.approx(factor * expected, rel=1e-10, abs=1e-14)


def test_identical_logits_give_zero_even_when_extreme() -> None:
    z = torch.randn(2, K, 3, 4) * 1e4
    target = torch.randint(0, K, (2, 3, 4))
    tckd, nckd, _ = tckd_nckd(z, z.clone(), target, tau=4.0)
    assert torch.equal(tckd, torch.zeros_like(tckd)) and torch.equal(nckd, torch.zeros_like(nckd))


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_extreme_logits_give_finite_loss_and_gradients(tau: float) -> None:
    g = torch.Generator().manual_seed(4)
    zs = (torch.randn(2, K, 3, 4, generator=g) * 1e4).requires_grad_(True)
    zt = torch.randn(2, K, 3, 4, generator=g) * 1e4
    label = torch.randint(0, K, (2, 3, 4), generator=g)
    loss = dkd_loss(zs, zt, label, tau)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


def test_batch_without_some_classes_matches_the_loop() -> None:
    zs, zt, _ = random_case(5)
    label = torch.randint(0, 2, (2, 3, 4))  # classes 2 and 3 absent
    got = dkd_loss(zs, zt, label).item()
    assert got == pytest.approx(reference_dkd(zs, zt, label, 4.0, 1.0, 8.0), rel=1e-10)


def test_all_ignored_batch_gives_a_connected_zero() -> None:
    zs = (torch.randn(2, K, 3, 4) * 1e4).requires_grad_(True)
    label = torch.full((2, 3, 4), IGNORE_INDEX)
    method = DKD(tap_info(), tap_info())
    loss = method(logits_only(zs), logits_only(torch.randn(2, K, 3, 4)), batch_for(label))["dkd"]
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert zs.grad is not None and torch.equal(zs.grad, torch.zeros_like(zs))


@pytest.mark.parametrize(("options", "classes"), [({"tau": 0.0}, K), ({"warmup": 1.0}, K), ({}, 1)])
def test_bad_options_raise(options: dict, classes: int) -> None:
    with pytest.raises(KdbenchError, match="dkd"):
        DKD(tap_info(classes), tap_info(classes), **options)
