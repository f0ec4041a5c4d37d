"""Tests of methods/cwd.py: a float64 per-channel loop, invariances, adapters and resizing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, Batch, method_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS
from methods.cwd import CWD, cwd_loss

STUDENT = TapInfo(
    stage_channels=(4, 6),
    stage_reductions=(4, 8),
    decoder_channels=5,
    num_classes=3,
    logit_reduction=4,
)
TEACHER = TapInfo(
    stage_channels=(8, 10),
    stage_reductions=(4, 8),
    decoder_channels=7,
    num_classes=3,
    logit_reduction=4,
)


def random_outputs(
    info: TapInfo, gen: torch.Generator, size: int = 16, scale: float = 1.0
) -> Outputs:
    """Random float64 outputs of a model with taps ``info`` for two ``size`` x ``size`` images."""

    def rand(c: int, r: int) -> torch.Tensor:
        return scale * torch.randn(2, c, size // r, size // r, generator=gen, dtype=torch.float64)

    return Outputs(
        logits=rand(info.num_classes, info.logit_reduction),
        stages=tuple(
            rand(c, r) for c, r in zip(info.stage_channels, info.stage_reductions, strict=True)
        ),
        decoder=rand(info.decoder_channels, info.logit_reduction),
    )


def batch(n: int = 2, size: int = 16) -> Batch:
    """A batch whose labels are all ignored (CWD does not read labels)."""
    label = torch.full((n, size, size), IGNORE_INDEX)
    return Batch(rgb=torch.zeros(n, 3, size, size), x=torch.zeros(n, 1, size, size), label=label)


def cwd_loop(xs: torch.Tensor, xt: torch.Tensor, tau: float) -> float:
    """τ²/(N·C) Σ_{n,c} KL over the H·W positions, one channel at a time in plain float64."""
    s, t = xs.double().flatten(2).tolist(), xt.double().flatten(2).tolist()
    total = 0.0
    for n in range(len(s)):
        for c in range(len(s[n])):
            ls = log_softmax_list([v / tau for v in s[n][c]])
            lt = log_softmax_list([v / tau for v in t[n][c]])
            total += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt, strict=True))
    return tau**2 * total / (len(s) * len(s[0]))


def log_softmax_list(xs: list[float]) -> list[float]:
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_loss_matches_float64_loop(tau: float) -> None:
    xs, xt = randn(2, 3, 3, 4, seed=0), 2 * randn(2, 3, 3, 4, seed=1)
    assert cwd_loss(xs, xt, tau).item() == pytest.approx(cwd_loop(xs, xt, tau), rel=1e-10)


def test_method_defaults_are_logits_tau_4_weight_3() -> None:
    assert method_options(CWD) == {
        "tau": 4.0,
        "weight": 3.0,
        "feature": "logits",
        "stages": (-1,),
        "channels": "compared",
    }
    gen = torch.Generator().manual_seed(2)
    s, t = random_outputs(STUDENT, gen), random_outputs(TEACHER, gen)
    method = CWD(STUDENT, TEACHER)
    out = method(s, t, batch())
    assert set(out) == {"cwd"} and method.taps == ("logits",)
    assert method.extra_parameters() == 0
    assert out["cwd"].item() == pytest.approx(3 * cwd_loop(s.logits, t.logits, 4.0), rel=1e-10)


def test_zero_when_student_equals_teacher() -> None:
    x = randn(2, 3, 3, 4, seed=3)
    assert abs(cwd_loss(x, x.clone(), 4.0).item()) < 1e-12
    assert cwd_loss(x, randn(2, 3, 3, 4, seed=4), 4.0).item() > 0


def test_invariant_to_a_per_channel_constant_but_not_to_a_per_pixel_one() -> None:
    """The softmax runs over positions, so shifting a whole channel (n, c) changes nothing."""
    xs, xt = randn(2, 3, 3, 4, seed=5), randn(2, 3, 3, 4, seed=6)
    base = cwd_loss(xs, xt, 4.0).item()
    per_channel = 10 * randn(2, 3, 1, 1, seed=7)
    assert cwd_loss(xs + per_channel, xt - per_channel, 4.0).item() == pytest.approx(
        base, rel=1e-10
    )
    per_pixel = 10 * randn(2, 1, 3, 4, seed=8)
    assert cwd_loss(xs + per_pixel, xt, 4.0).item() != pytest.approx(base, rel=1e-3)


def test_teacher_logits_are_resized_to_the_student_size() -> None:
    """A teacher at twice the size whose 2x2 blocks repeat the student's logits matches exactly."""
    gen = torch.Generator().manual_seed(9)
    s = random_outputs(STUDENT, gen)
    t = random_outputs(TEACHER, gen, size=32)
    t.logits = s.logits.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert abs(CWD(STUDENT, TEACHER)(s, t, batch())["cwd"].item()) < 1e-12


def test_decoder_features_go_through_a_1x1_adapter_to_the_teacher_channels() -> None:
    gen = torch.Generator().manual_seed(10)
    s, t = random_outputs(STUDENT, gen), random_outputs(TEACHER, gen)
    method = CWD(STUDENT, TEACHER, feature="decoder", tau=2.0, weight=1.5).double()
    (adapter,) = method.adapters
    assert isinstance(adapter, nn.Conv2d) and adapter.bias is None
    assert method.taps == ("decoder",) and method.extra_parameters() == 5 * 7
    adapted = torch.einsum("tc,nchw->nthw", adapter.weight[:, :, 0, 0], s.decoder)
    expected = 1.5 * cwd_loop(adapted, t.decoder, 2.0)
    assert method(s, t, batch())["cwd"].item() == pytest.approx(expected, rel=1e-10)


def test_student_features_are_resized_to_the_teacher_size() -> None:
    """Identity adapter; a student at twice the teacher's size, block-repeated, matches it."""
    gen = torch.Generator().manual_seed(11)
    s, t = random_outputs(TEACHER, gen, size=32), random_outputs(TEACHER, gen)
    s.decoder = t.decoder.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    method = CWD(TEACHER, TEACHER, feature="decoder")
    assert method.extra_parameters() == 0
    assert abs(method(s, t, batch(size=32))["cwd"].item()) < 1e-12


def test_stages_are_summed_and_gradients_reach_student_and_adapters() -> None:
    gen = torch.Generator().manual_seed(12)
    s, t = random_outputs(STUDENT, gen), random_outputs(TEACHER, gen)
    s.stages = tuple(f.requires_grad_(True) for f in s.stages)
    method = CWD(STUDENT, TEACHER, feature="stages", stages=(-2, -1), weight=1.0).double()
    loss = method(s, t, batch())["cwd"]
    with torch.no_grad():
        per_stage = [
            cwd_loop(a(fs), ft, 4.0)
            for a, fs, ft in zip(method.adapters, s.stages, t.stages, strict=True)
        ]
    assert loss.item() == pytest.approx(sum(per_stage), rel=1e-10)
    loss.backward()
    for tensor in (*s.stages, *(a.weight for a in method.adapters)):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "options",
    [
        {"feature": "pixels"},
        {"feature": "stages", "stages": (2,)},
        {"feature": "stages", "stages": (-1, 1)},
    ],
)
def test_bad_options_raise_a_kdbench_error(options: dict) -> None:
    with pytest.raises(KdbenchError, match="cwd"):
        CWD(STUDENT, TEACHER, **options)


@pytest.mark.parametrize("feature", ["logits", "decoder", "stages"])
def test_finite_values_and_gradients_for_huge_inputs(feature: str) -> None:
    gen = torch.Generator().manual_seed(13)
    s = random_outputs(STUDENT, gen, scale=1e4)
    t = random_outputs(TEACHER, gen, scale=1e4)
    for f in (s.logits, s.decoder, *s.stages):
        f.requires_grad_(True)
    method = CWD(STUDENT, TEACHER, feature=feature).double()
    loss = method(s, t, batch())["cwd"]
    loss.backward()
    assert torch.isfinite(loss)
    grads = [f.grad for f in (s.logits, s.decoder, *s.stages) if f.grad is not None]
    grads += [p.grad for p in method.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_registered() -> None:
    assert METHODS.get("cwd") is CWD


@pytest.mark.parametrize("key", ["on", True])
def test_the_old_option_name_is_refused_with_the_new_one(key: object) -> None:
    """``on: stages`` in YAML arrives as the key True; both spellings name ``feature``."""
    from kdbench.errors import KdbenchError
    from kdbench.method import build_method

    with pytest.raises(KdbenchError, match="'on' is now called 'feature'"):
        build_method([("cwd", {key: "stages"})], STUDENT, TEACHER)


def test_cirkd_channel_normaliser_is_one_option_away() -> None:
    """``channels: student`` divides the adapted (C_T = 7) sum by N·C_S (C_S = 5), as CIRKD."""
    gen = torch.Generator().manual_seed(14)
    s, t = random_outputs(STUDENT, gen), random_outputs(TEACHER, gen)
    torch.manual_seed(0)
    compared = CWD(STUDENT, TEACHER, feature="decoder").double()
    cirkd = CWD(STUDENT, TEACHER, feature="decoder", channels="student").double()
    cirkd.load_state_dict(compared.state_dict())
    (adapter,) = compared.adapters
    adapted = torch.einsum("tc,nchw->nthw", adapter.weight[:, :, 0, 0], s.decoder)
    n, c_t = adapted.shape[:2]
    want = 3.0 * cwd_loop(adapted, t.decoder, 4.0) * (n * c_t) / (n * STUDENT.decoder_channels)
    assert cirkd(s, t, batch())["cwd"].item() == pytest.approx(want, rel=1e-10)
    logits = CWD(STUDENT, TEACHER, channels="student")(s, t, batch())["cwd"]
    assert logits.item() == pytest.approx(CWD(STUDENT, TEACHER)(s, t, batch())["cwd"].item())
