"""DWLD: the DKD and KD identities, the controller's inputs, weights and gradients, extremes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX
from methods.dkd import DKD, align_logits, decoupled_loss, tckd_nckd
from methods.dwld import DWLD, confidence_features
from methods.kd import KD
from tests.methods.test_dkd import K, batch_for, logits_only, random_case, tap_info


def randomise_controller(method: DWLD, seed: int = 0) -> None:
    """Give every controller parameter random values (the last layer starts at zero)."""
    assert method.controller is not None
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.controller.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def float32_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    zs, zt, label = random_case(seed)
    return zs.float(), zt.float(), label


def test_constant_weights_reproduce_dkd_exactly() -> None:
    zs, zt, label = float32_case(0)
    options = {"tau": 3.0, "alpha": 1.5, "beta": 6.0, "warmup": 0.1}
    dkd = DKD(tap_info(), tap_info(), **options)
    dwld = DWLD(tap_info(), tap_info(), weights="constant", **options)
    batch = batch_for(label, progress=0.05)
    got = dwld(logits_only(zs), logits_only(zt), batch)["dwld"]
    assert torch.equal(got, dkd(logits_only(zs), logits_only(zt), batch)["dkd"])


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_kd_weights_reproduce_kd_over_valid_pixels(tau: float) -> None:
    zs, zt, label = float32_case(1)
    kd = KD(tap_info(), tap_info(), tau=tau, reduction="valid")
    dwld = DWLD(tap_info(), tap_info(), tau=tau, weights="kd", warmup=0.0)
    batch = batch_for(label)
    got = dwld(logits_only(zs), logits_only(zt), batch)["dwld"]
    want = kd(logits_only(zs), logits_only(zt), batch)["kd"]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_untrained_controller_starts_at_dkd() -> None:
    zs, zt, label = float32_case(2)
    dwld = DWLD(tap_info(), tap_info(), warmup=0.0)
    dkd = DKD(tap_info(), tap_info(), warmup=0.0)
    batch = batch_for(label)
    torch.testing.assert_close(
        dwld(logits_only(zs), logits_only(zt), batch)["dwld"],
        dkd(logits_only(zs), logits_only(zt), batch)["dkd"],
    )


def test_weights_average_to_alpha_and_beta_and_vary_across_pixels() -> None:
    zs, zt, label = float32_case(3)
    dwld = DWLD(tap_info(), tap_info(), alpha=2.0, beta=5.0)
    randomise_controller(dwld)
    zs, zt, target, valid = align_logits(zs, zt, label)
    _, _, pt_target = tckd_nckd(zs, zt, target, dwld.tau)
    w_target, w_nontarget = dwld.pixel_weights(zs, zt, target, valid, pt_target)
    assert isinstance(w_target, torch.Tensor) and isinstance(w_nontarget, torch.Tensor)
    assert w_target[valid].mean().item() == pytest.approx(2.0, rel=1e-5)
    assert w_nontarget[valid].mean().item() == pytest.approx(5.0, rel=1e-5)
    assert w_target[valid].std().item() > 1e-3 and w_nontarget[valid].std().item() > 1e-3


def test_confidence_features_match_a_per_pixel_loop() -> None:
    zs, zt, label = random_case(4)
    target = label.clamp_max(K - 1)
    u = confidence_features(zs, zt, target, tau=2.0)
    assert u.shape == (2, 5, 3, 4)
    for i, y, x in [(0, 0, 3), (1, 2, 1)]:
        t = int(target[i, y, x])
        ps = [math.exp(v / 2.0) for v in zs[i, :, y, x].tolist()]
        pt = [math.exp(v / 2.0) for v in zt[i, :, y, x].tolist()]
        ps, pt = [v / sum(ps) for v in ps], [v / sum(pt) for v in pt]
        entropy = [-sum(p * math.log(p) for p in dist) / math.log(K) for dist in (ps, pt)]
        want = [ps[t], pt[t], max(ps), *entropy]
        assert u[i, :, y, x].tolist() == pytest.approx(want, rel=1e-5)


def test_controller_is_trained_but_its_input_carries_no_gradient() -> None:
    zs, zt, label = float32_case(5)
    dwld = DWLD(tap_info(), tap_info(), warmup=0.0)
    randomise_controller(dwld, seed=1)
    zs.requires_grad_(True)
    dwld(logits_only(zs), logits_only(zt), batch_for(label))["dwld"].backward()
    assert dwld.controller is not None
    for name, p in dwld.controller.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # Same student gradient as with the weights frozen: u_p is detached.
    zs_ref = zs.detach().clone().requires_grad_(True)
    s, t, target, valid = align_logits(zs_ref, zt, label)
    tckd, nckd, pt_target = tckd_nckd(s, t, target, dwld.tau)
    w_t, w_n = dwld.pixel_weights(s, t, target, valid, pt_target)
    assert isinstance(w_t, torch.Tensor) and isinstance(w_n, torch.Tensor)
    decoupled_loss(tckd, nckd, w_t.detach(), w_n.detach(), valid, dwld.tau).backward()
    torch.testing.assert_close(zs.grad, zs_ref.grad)


def test_untrained_controller_still_receives_gradient() -> None:
    zs, zt, label = float32_case(6)
    dwld = DWLD(tap_info(), tap_info(), warmup=0.0)
    dwld(logits_only(zs), logits_only(zt), batch_for(label))["dwld"].backward()
    assert dwld.controller is not None
    last = dwld.controller[-1]
    assert isinstance(last, nn.Conv2d) and last.weight.grad is not None
    assert last.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("layers", "hidden"), [(1, 32), (3, 7)])
def test_layers_and_hidden_shape_the_controller(layers: int, hidden: int) -> None:
    dwld = DWLD(tap_info(), tap_info(), layers=layers, hidden=hidden)
    assert dwld.controller is not None
    convs = [m for m in dwld.controller if isinstance(m, nn.Conv2d)]
    assert len(convs) == layers
    assert [c.out_channels for c in convs] == [hidden] * (layers - 1) + [2]
    assert convs[0].in_channels == 5


@pytest.mark.parametrize("weights", ["mlp", "constant", "kd"])
@pytest.mark.parametrize("case", ["extreme", "absent_class", "all_ignored"])
def test_finite_loss_and_gradients(weights: str, case: str) -> None:
    g = torch.Generator().manual_seed(7)
    scale = 1e4 if case != "absent_class" else 3.0
    zs = (torch.randn(2, K, 3, 4, generator=g) * scale).requires_grad_(True)
    zt = torch.randn(2, K, 3, 4, generator=g) * scale
    label = torch.randint(0, K if case == "extreme" else 2, (2, 3, 4), generator=g)
    if case == "all_ignored":
        label.fill_(IGNORE_INDEX)
    dwld = DWLD(tap_info(), tap_info(), weights=weights, warmup=0.0)
    if weights == "mlp":
        randomise_controller(dwld)
    loss = dwld(logits_only(zs), logits_only(zt), batch_for(label))["dwld"]
    loss.backward()
    assert torch.isfinite(loss) and zs.grad is not None and torch.isfinite(zs.grad).all()
    for p in dwld.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    if case == "all_ignored":
        assert loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize(
    "options", [{"weights": "softmax"}, {"layers": 0}, {"hidden": 2.5}, {"warmup": -0.1}]
)
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(KdbenchError, match="dwld"):
        DWLD(tap_info(), tap_info(), **options)
