"""DWLD: the DKD and KD identities, the controller's inputs, weights and gradients, extremes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, Batch, build_method
from methods.dkd import DKD, align_logits, decoupled_loss, tckd_nckd
from methods.dwld import (
    DWLD,
    bounded_weights,
    confidence_features,
    reversal_strength,
    spearman,
    weight_statistics,
)
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


def weights_of(
    dwld: DWLD, zs: torch.Tensor, zt: torch.Tensor, label: torch.Tensor, progress: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w^T, w^N, valid) that ``dwld`` gives the pixels of one batch."""
    s, t, target, valid = align_logits(zs, zt, label)
    log_ps = F.log_softmax(s / dwld.tau, dim=1)
    log_pt = F.log_softmax(t / dwld.tau, dim=1)
    w_t, w_n = dwld.pixel_weights(log_ps, log_pt, target, valid, progress)
    return w_t, w_n, valid


def assert_mean_preserving(
    w: torch.Tensor, valid: torch.Tensor, base: float, spread: float
) -> None:
    """mean_Ω w = base within 1e-5 and max_Ω w / min_Ω w ≤ (1 + ρ)/(1 − ρ), all finite."""
    assert torch.isfinite(w).all()
    assert abs(w[valid].mean().item() - base) < 1e-5 * max(1.0, base)
    assert w[valid].max() / w[valid].min() <= (1 + spread) / (1 - spread) * (1 + 1e-6)


@pytest.mark.parametrize("spread", [0.0, 0.5, 0.9])
def test_weights_keep_their_mean_and_bounded_ratio_and_vary_across_pixels(spread: float) -> None:
    zs, zt, label = float32_case(3)
    dwld = DWLD(tap_info(), tap_info(), alpha=2.0, beta=5.0, spread=spread)
    randomise_controller(dwld)
    w_t, w_n, valid = weights_of(dwld, zs, zt, label)
    assert (w_t[valid].std().item() > 1e-3) == (w_n[valid].std().item() > 1e-3) == (spread > 0)
    with torch.no_grad():  # push the raw outputs far into tanh's saturation
        dwld.controller[-1].weight.mul_(1e3)
    w_t, w_n, valid = weights_of(dwld, zs, zt, label)
    assert_mean_preserving(w_t, valid, 2.0, spread)
    assert_mean_preserving(w_n, valid, 5.0, spread)
    raw = torch.zeros(*valid.shape, 2)  # half the pixels saturated up, half down
    raw[0], raw[1] = 100.0, -100.0
    w_t, w_n = bounded_weights(raw, valid, 2.0, 5.0, spread)
    assert_mean_preserving(w_t, valid, 2.0, spread)
    if spread > 0:  # the ratio reaches its bound
        ratio = (w_n[valid].max() / w_n[valid].min()).item()
        assert ratio == pytest.approx((1 + spread) / (1 - spread), rel=1e-6)


def test_normaliser_is_in_the_graph_controller_gradient_is_the_centred_loss() -> None:
    """∂L/∂s^T_p ∝ (TCKD_p − mean_Ω(w^T·TCKD)/α) / mean_Ω(s^T): it sums to 0 over Ω when
    the weights are uniform, so a uniform shift of the raw outputs changes nothing."""
    zs, zt, label = float32_case(13)
    dwld = DWLD(tap_info(), tap_info(), warmup=0.0, controller="cooperative")
    batch = batch_for(label)
    base = dwld(logits_only(zs), logits_only(zt), batch)["dwld"]
    with torch.no_grad():
        dwld.controller[-1].bias.fill_(0.3)  # the same raw output at every pixel
    shifted = dwld(logits_only(zs), logits_only(zt), batch)["dwld"]
    torch.testing.assert_close(shifted, base)
    shifted.backward()
    torch.testing.assert_close(dwld.controller[-1].bias.grad, torch.zeros(2), atol=1e-6, rtol=0)
    assert dwld.controller[-1].weight.grad.abs().sum() > 0


def test_confidence_features_match_a_per_pixel_loop() -> None:
    zs, zt, label = random_case(4)
    target = label.clamp_max(K - 1)
    u = confidence_features(F.log_softmax(zs / 2.0, 1), F.log_softmax(zt / 2.0, 1), target)
    assert u.shape == (2, 3, 4, 5)
    for i, y, x in [(0, 0, 3), (1, 2, 1)]:
        t = int(target[i, y, x])
        ps = [math.exp(v / 2.0) for v in zs[i, :, y, x].tolist()]
        pt = [math.exp(v / 2.0) for v in zt[i, :, y, x].tolist()]
        ps, pt = [v / sum(ps) for v in ps], [v / sum(pt) for v in pt]
        entropy = [-sum(p * math.log(p) for p in dist) / math.log(K) for dist in (ps, pt)]
        want = [ps[t], pt[t], max(ps), *entropy]
        assert u[i, y, x].tolist() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("controller", ["adversarial", "cooperative"])
def test_controller_is_trained_but_its_input_carries_no_gradient(controller: str) -> None:
    zs, zt, label = float32_case(5)
    dwld = DWLD(tap_info(), tap_info(), warmup=0.0, controller=controller)
    randomise_controller(dwld, seed=1)
    zs.requires_grad_(True)
    dwld(logits_only(zs), logits_only(zt), batch_for(label, progress=0.5))["dwld"].backward()
    assert dwld.controller is not None
    for name, p in dwld.controller.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # Same student gradient as with the weights held constant: u_p is detached.
    zs_ref = zs.detach().clone().requires_grad_(True)
    w_t, w_n, valid = weights_of(dwld, zs_ref, zt, label, progress=0.5)
    s, t, target, _ = align_logits(zs_ref, zt, label)
    tckd, nckd, _ = tckd_nckd(s, t, target, dwld.tau)
    decoupled_loss(tckd, nckd, w_t.detach(), w_n.detach(), valid, dwld.tau).backward()
    torch.testing.assert_close(zs.grad, zs_ref.grad)


@pytest.mark.parametrize("progress", [0.0, 0.25, 0.5, 1.0])
def test_adversarial_gradient_is_the_reversed_cooperative_one(progress: float) -> None:
    """Controller gradients: adversarial = −λ(progress) · cooperative, λ = (1 − cos πp)/2."""
    zs, zt, label = float32_case(8)
    grads = {}
    for controller in ("adversarial", "cooperative"):
        dwld = DWLD(tap_info(), tap_info(), warmup=0.0, controller=controller)
        randomise_controller(dwld, seed=2)
        dwld(logits_only(zs), logits_only(zt), batch_for(label, progress))["dwld"].backward()
        grads[controller] = [p.grad.clone() for p in dwld.parameters()]
    strength = (1 - math.cos(math.pi * progress)) / 2
    assert reversal_strength(progress) == pytest.approx(strength)
    for adv, coop in zip(grads["adversarial"], grads["cooperative"], strict=True):
        torch.testing.assert_close(adv, -strength * coop)
        assert coop.abs().sum() > 0


@pytest.mark.slow
def test_adversarial_controller_raises_the_loss_cooperative_lowers_it() -> None:
    """A few plain gradient steps on the controller alone move the loss the advertised way."""
    zs, zt, label = float32_case(9)
    batch = batch_for(label, progress=1.0)
    for controller, sign in (("adversarial", 1), ("cooperative", -1)):
        dwld = DWLD(tap_info(), tap_info(), warmup=0.0, controller=controller)
        randomise_controller(dwld, seed=3)
        dwld.controller[-1].weight.data.mul_(0.1)
        start = dwld(logits_only(zs), logits_only(zt), batch)["dwld"].item()
        optimizer = torch.optim.SGD(dwld.parameters(), lr=0.05)
        for _ in range(20):
            optimizer.zero_grad()
            dwld(logits_only(zs), logits_only(zt), batch)["dwld"].backward()
            optimizer.step()
        end = dwld(logits_only(zs), logits_only(zt), batch)["dwld"].item()
        assert sign * (end - start) > 0, (controller, start, end)


def test_frozen_controller_is_exactly_dkd_and_not_trainable() -> None:
    zs, zt, label = float32_case(10)
    dwld = DWLD(tap_info(), tap_info(), controller="frozen", warmup=0.0)
    dkd = DKD(tap_info(), tap_info(), warmup=0.0)
    batch = batch_for(label)
    assert dwld.extra_parameters() == 0
    assert all(not p.requires_grad for p in dwld.parameters())
    got = dwld(logits_only(zs), logits_only(zt), batch)["dwld"]
    assert torch.equal(got, dkd(logits_only(zs), logits_only(zt), batch)["dkd"])


def varied_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed (2, K, 8, 8) logits whose per-pixel TCKD and NCKD spread evenly (not a few
    outliers): the student's target logit is shifted by ±8·√u and its other logits get noise of
    scale 4·√u' (u, u' uniform per pixel; KL grows about quadratically with the shift)."""
    g = torch.Generator().manual_seed(11)
    zt = torch.randn(2, K, 8, 8, generator=g) * 2
    label = torch.randint(0, K, (2, 8, 8), generator=g)
    onehot = F.one_hot(label, K).permute(0, 3, 1, 2).float()
    sign = torch.randint(0, 2, (2, 1, 8, 8), generator=g) * 2 - 1
    shift = sign * torch.rand(2, 1, 8, 8, generator=g).sqrt() * 8
    noise = torch.randn(2, K, 8, 8, generator=g) * torch.rand(2, 1, 8, 8, generator=g).sqrt() * 4
    label[0, 0, :3] = IGNORE_INDEX
    return zt + shift * onehot + noise * (1 - onehot), zt, label


@pytest.mark.slow
@pytest.mark.parametrize(("controller", "sign"), [("adversarial", 1), ("cooperative", -1),
                                                  ("frozen", 0)])
def test_thousand_sgd_steps_of_the_controller_alone(controller: str, sign: int) -> None:
    """1,000 steps of the suites' SGD (lr 0.02, momentum 0.9, weight decay 5e-4) on the
    controller alone, fixed logits with varied per-pixel TCKD/NCKD, training progress 0 -> 1:
    the weights keep their mean α (resp. β) within 1e-5 and their max/min ratio within
    (1 + ρ)/(1 − ρ), the loss stays finite (no collapse), and w^T_p follows TCKD_p: Spearman
    above 0.3 for ``adversarial``, below −0.3 for ``cooperative``; ``frozen`` stays at DKD."""
    zs, zt, label = varied_case()
    dwld = DWLD(tap_info(), tap_info(), controller=controller)
    params = [p for p in dwld.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params or [torch.zeros(1, requires_grad=True)], lr=0.02, momentum=0.9, weight_decay=5e-4
    )
    steps = 1000
    for step in range(steps):
        batch = Batch(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8), label, step, steps)
        loss = dwld(logits_only(zs), logits_only(zt), batch)["dwld"]
        assert torch.isfinite(loss), step
        if loss.requires_grad:  # a frozen controller has nothing to train
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if step % 100 == 99:
            w_t, w_n, valid = weights_of(dwld, zs, zt, label, step / steps)
            assert_mean_preserving(w_t, valid, 1.0, 0.5)
            assert_mean_preserving(w_n, valid, 8.0, 0.5)
    with torch.no_grad():  # the statistics of the trained controller's forward
        dwld(logits_only(zs), logits_only(zt), batch)
        w_t, w_n, valid = weights_of(dwld, zs, zt, label, 1.0)
    stats = dwld.statistics()
    s, t, target, _ = align_logits(zs, zt, label)
    tckd, _, _ = tckd_nckd(s, t, target, dwld.tau)
    want = spearmanr(w_t[valid].numpy(), tckd[valid].numpy())[0] if sign else 0.0
    assert stats["w_t_spearman"].item() == pytest.approx(want, abs=1e-5)
    if sign:
        assert sign * stats["w_t_spearman"].item() > 0.3, stats
    else:
        assert torch.equal(w_t, torch.ones_like(w_t)) and torch.equal(w_n, 8 * torch.ones_like(w_n))


def test_statistics_match_scipy_with_ties_and_ignored_pixels() -> None:
    g = torch.Generator().manual_seed(14)
    w_t = torch.randint(0, 4, (2, 5, 6), generator=g).float()  # many ties
    w_n = torch.randn(2, 5, 6, generator=g)
    tckd = torch.rand(2, 5, 6, generator=g)
    nckd = torch.randint(0, 3, (2, 5, 6), generator=g).float()
    valid = torch.rand(2, 5, 6, generator=g) > 0.2
    stats = weight_statistics(w_t, w_n, tckd, nckd, valid)
    for key, w, loss in (("w_t", w_t, tckd), ("w_n", w_n, nckd)):
        x, y = w[valid].double().numpy(), loss[valid].double().numpy()
        assert stats[f"{key}_mean"].item() == pytest.approx(x.mean(), rel=1e-6)
        assert stats[f"{key}_min"].item() == pytest.approx(x.min())
        assert stats[f"{key}_max"].item() == pytest.approx(x.max())
        assert stats[f"{key}_pearson"].item() == pytest.approx(pearsonr(x, y)[0], abs=1e-5)
        assert stats[f"{key}_spearman"].item() == pytest.approx(spearmanr(x, y)[0], abs=1e-5)
    strided = spearman(w_n, nckd, valid, limit=16)  # 60 pixels: every 4th is ranked
    x, y = w_n.flatten()[::4], nckd.flatten()[::4]
    keep = valid.flatten()[::4]
    assert strided.item() == pytest.approx(spearmanr(x[keep], y[keep])[0], abs=1e-5)
    constant = weight_statistics(torch.ones(2, 5, 6), w_n, tckd, nckd, valid)
    assert constant["w_t_pearson"].item() == constant["w_t_spearman"].item() == 0.0
    empty = weight_statistics(w_t, w_n, tckd, nckd, torch.zeros_like(valid))
    assert all(torch.isfinite(v) for v in empty.values())


def test_statistics_are_detached_and_reach_method_sets_and_lix() -> None:
    zs, zt, label = float32_case(15)
    method = build_method([("dwld", {}), ("kd", {})], tap_info(), tap_info())
    assert method.statistics() == {}
    zs.requires_grad_(True)
    method(logits_only(zs), logits_only(zt), batch_for(label))
    stats = method.statistics()
    assert set(stats) == {f"dwld/{k}_{s}" for k in ("w_t", "w_n")
                          for s in ("mean", "min", "max", "pearson", "spearman")}
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())
    constant = DWLD(tap_info(), tap_info(), weights="constant")
    constant(logits_only(zs), logits_only(zt), batch_for(label))
    assert constant.statistics() == {}


def test_float64_model_and_method() -> None:
    """A float64 student, teacher and method: the controller runs in float64, no dtype clash."""
    zs, zt, label = random_case(12)  # float64
    dwld = DWLD(tap_info(), tap_info(), warmup=0.0).double()
    randomise_controller(dwld)
    zs.requires_grad_(True)
    loss = dwld(logits_only(zs), logits_only(zt), batch_for(label, 0.5))["dwld"]
    assert loss.dtype == torch.float64
    loss.backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


def test_untrained_controller_still_receives_gradient() -> None:
    zs, zt, label = float32_case(6)
    dwld = DWLD(tap_info(), tap_info(), warmup=0.0, controller="cooperative")
    dwld(logits_only(zs), logits_only(zt), batch_for(label))["dwld"].backward()
    assert dwld.controller is not None
    last = dwld.controller[-1]
    assert isinstance(last, nn.Linear) and last.weight.grad is not None
    assert last.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("layers", "hidden"), [(1, 32), (3, 7)])
def test_layers_and_hidden_shape_the_controller(layers: int, hidden: int) -> None:
    dwld = DWLD(tap_info(), tap_info(), layers=layers, hidden=hidden)
    assert dwld.controller is not None
    linears = [m for m in dwld.controller if isinstance(m, nn.Linear)]
    assert len(linears) == layers
    assert [c.out_features for c in linears] == [hidden] * (layers - 1) + [2]
    assert linears[0].in_features == 5


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
    dwld = DWLD(tap_info(), tap_info(), weights=weights, warmup=0.0, controller="cooperative")
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
