"""Tests of methods/at.py: a float64 per-image loop, invariances, resizing and extreme inputs."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import method_options
from kdbench.models.outputs import TapInfo
from kdbench.registry import METHODS
from methods.at import AT, at_loss, attention_map
from tests.methods.fakes import ignored_batch, stage_outputs

STUDENT = TapInfo(
    stage_channels=(3, 4, 6),
    stage_reductions=(2, 4, 8),
    decoder_channels=5,
    num_classes=3,
    logit_reduction=4,
)
TEACHER = TapInfo(
    stage_channels=(5, 8, 10),
    stage_reductions=(2, 4, 8),
    decoder_channels=7,
    num_classes=3,
    logit_reduction=4,
)


def at_loop(fs: torch.Tensor, ft: torch.Tensor) -> float:
    """Mean over images and positions of the squared difference of normalised attention maps."""

    def attention(f: list) -> list[float]:
        channels, h, w = len(f), len(f[0]), len(f[0][0])
        q = [
            sum(f[c][i][j] ** 2 for c in range(channels)) / channels
            for i in range(h)
            for j in range(w)
        ]
        norm = math.sqrt(sum(v * v for v in q))
        return [v / norm for v in q]

    total, count = 0.0, 0
    for s_img, t_img in zip(fs.double().tolist(), ft.double().tolist(), strict=True):
        a_s, a_t = attention(s_img), attention(t_img)
        total += sum((a - b) ** 2 for a, b in zip(a_s, a_t, strict=True))
        count += len(a_s)
    return total / count


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_at_loss_matches_float64_loop_with_different_channel_counts() -> None:
    fs, ft = randn(2, 4, 3, 4, seed=0), randn(2, 6, 3, 4, seed=1)
    assert at_loss(fs, ft).item() == pytest.approx(at_loop(fs, ft), rel=1e-10)


def test_method_sums_the_last_two_stages_with_the_cirkd_weight() -> None:
    assert method_options(AT) == {"weight": 1e4, "stages": (-2, -1), "feature": "stages"}
    gen = torch.Generator().manual_seed(2)
    s, t = stage_outputs(STUDENT, gen), stage_outputs(TEACHER, gen)
    method = AT(STUDENT, TEACHER)
    assert method.taps == ("stages",) and method.extra_parameters() == 0
    expected = 1e4 * sum(at_loop(s.stages[i], t.stages[i]) for i in (1, 2))
    assert method(s, t, ignored_batch())["at"].item() == pytest.approx(expected, rel=1e-10)
    only_first = AT(STUDENT, TEACHER, stages=(0,), weight=1.0)(s, t, ignored_batch())["at"]
    assert only_first.item() == pytest.approx(at_loop(s.stages[0], t.stages[0]), rel=1e-10)


def test_zero_when_student_equals_teacher() -> None:
    f = randn(2, 4, 3, 4, seed=3)
    assert abs(at_loss(f, f.clone()).item()) < 1e-15
    assert at_loss(f, randn(2, 4, 3, 4, seed=4)).item() > 0


def test_invariant_to_positive_scaling_sign_and_channel_order() -> None:
    fs, ft = randn(2, 4, 3, 4, seed=5), randn(2, 6, 3, 4, seed=6)
    base = at_loss(fs, ft).item()
    assert at_loss(3.0 * fs, 0.01 * ft).item() == pytest.approx(base, rel=1e-10)
    assert at_loss(-fs[:, [2, 0, 3, 1]], ft).item() == pytest.approx(base, rel=1e-10)
    one_channel_scaled = fs.clone()
    one_channel_scaled[:, 0] *= 5.0
    assert at_loss(one_channel_scaled, ft).item() != pytest.approx(base, rel=1e-3)


def test_student_map_is_resized_to_the_teacher_size() -> None:
    """A student at twice the size whose 2x2 blocks repeat the teacher's feature matches it."""
    ft = randn(2, 5, 3, 4, seed=7)
    fs = ft.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert abs(at_loss(fs, ft).item()) < 1e-15
    assert at_loss(randn(2, 5, 6, 8, seed=8), ft).item() > 0


def test_attention_is_computed_in_float32_for_half_inputs() -> None:
    """f² overflows float16 beyond 256; the map of a constant feature is 1/sqrt(H·W)."""
    f = torch.full((1, 2, 3, 4), 300.0, dtype=torch.float16)
    a = attention_map(f)
    assert a.dtype == torch.float32
    assert torch.allclose(a, torch.full((1, 12), 1 / math.sqrt(12)))


def test_gradients_reach_the_student_and_stay_finite_for_zero_features() -> None:
    gen = torch.Generator().manual_seed(9)
    s, t = stage_outputs(STUDENT, gen), stage_outputs(TEACHER, gen)
    s.stages = (s.stages[0], torch.zeros_like(s.stages[1]), s.stages[2])
    for f in s.stages:
        f.requires_grad_(True)
    loss = AT(STUDENT, TEACHER, stages=(0, 1, 2))(s, t, ignored_batch())["at"]
    loss.backward()
    assert torch.isfinite(loss)
    for f in s.stages:
        assert f.grad is not None and torch.isfinite(f.grad).all()
    assert s.stages[0].grad.abs().sum() > 0 and s.stages[2].grad.abs().sum() > 0


def test_finite_values_and_gradients_for_huge_features() -> None:
    gen = torch.Generator().manual_seed(10)
    s = stage_outputs(STUDENT, gen, scale=1e4)
    t = stage_outputs(TEACHER, gen, scale=1e4)
    for f in s.stages:
        f.requires_grad_(True)
    loss = AT(STUDENT, TEACHER)(s, t, ignored_batch())["at"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(f.grad).all() for f in s.stages[1:])


@pytest.mark.parametrize("stages", [(), (3,), (-4,), (0, -3), (1.0,)])
def test_bad_stage_selection_raises_a_kdbench_error(stages: tuple) -> None:
    with pytest.raises(KdbenchError, match="'at'.*stages"):
        AT(STUDENT, TEACHER, stages=stages)


def test_registered() -> None:
    assert METHODS.get("at") is AT
