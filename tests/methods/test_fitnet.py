"""Tests of methods/fitnet.py (FitNets hints) and of its use of ``resolve_stages``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.method import method_options, resolve_stages
from kdbench.models.outputs import TapInfo
from kdbench.registry import METHODS
from methods.fitnet import FitNet
from tests.methods.fakes import ignored_batch, stage_outputs


def info(*channels: int) -> TapInfo:
    """Taps of an encoder whose stages have ``channels`` at reductions 2, 4, 8, ..."""
    return TapInfo(
        stage_channels=channels,
        stage_reductions=tuple(2 ** (i + 1) for i in range(len(channels))),
        decoder_channels=4,
        num_classes=3,
        logit_reduction=4,
    )


STUDENT, TEACHER = info(3, 4, 6), info(5, 8, 10)


def fitnet_loop(weight: torch.Tensor, fs: torch.Tensor, ft: torch.Tensor) -> float:
    """mean over (n, t, i, j) of (Σ_c W[t, c] · f_S[n, c, i, j] − f_T[n, t, i, j])², in float64."""
    w, s, t = weight.double().tolist(), fs.double().tolist(), ft.double().tolist()
    total, count = 0.0, 0
    for n in range(len(s)):
        for o in range(len(w)):
            for i in range(len(s[n][0])):
                for j in range(len(s[n][0][0])):
                    pred = sum(w[o][c] * s[n][c][i][j] for c in range(len(s[n])))
                    total += (pred - t[n][o][i][j]) ** 2
                    count += 1
    return total / count


def test_method_matches_float64_loop_through_the_adapter() -> None:
    assert method_options(FitNet) == {"weight": 10.0, "stages": (-1,), "feature": "stages"}
    gen = torch.Generator().manual_seed(0)
    s, t = stage_outputs(STUDENT, gen), stage_outputs(TEACHER, gen)
    method = FitNet(STUDENT, TEACHER).double()
    (adapter,) = method.adapters
    assert isinstance(adapter, nn.Conv2d) and adapter.bias is None
    assert method.taps == ("stages",) and method.extra_parameters() == 6 * 10
    expected = 10 * fitnet_loop(adapter.weight[:, :, 0, 0].detach(), s.stages[-1], t.stages[-1])
    assert method(s, t, ignored_batch())["fitnet"].item() == pytest.approx(expected, rel=1e-10)


def test_stages_are_summed_each_with_its_own_adapter() -> None:
    gen = torch.Generator().manual_seed(1)
    s, t = stage_outputs(STUDENT, gen), stage_outputs(TEACHER, gen)
    method = FitNet(STUDENT, TEACHER, stages=[0, -1], weight=1.0).double()
    assert method.extra_parameters() == 3 * 5 + 6 * 10
    expected = sum(
        fitnet_loop(a.weight[:, :, 0, 0].detach(), s.stages[i], t.stages[i])
        for a, i in zip(method.adapters, (0, 2), strict=True)
    )
    assert method(s, t, ignored_batch())["fitnet"].item() == pytest.approx(expected, rel=1e-10)


def test_equal_channels_use_no_adapter_and_identical_features_give_zero() -> None:
    gen = torch.Generator().manual_seed(2)
    s = stage_outputs(TEACHER, gen)
    method = FitNet(TEACHER, TEACHER)
    assert method.extra_parameters() == 0
    assert method(s, s, ignored_batch())["fitnet"].item() == 0.0
    other = stage_outputs(TEACHER, gen)
    assert method(s, other, ignored_batch())["fitnet"].item() > 0


def test_student_feature_is_resized_to_the_teacher_size() -> None:
    """A student at twice the size whose 2x2 blocks repeat the teacher's feature matches it."""
    gen = torch.Generator().manual_seed(3)
    t = stage_outputs(TEACHER, gen)
    s = stage_outputs(TEACHER, gen, size=32)
    s.stages = (*s.stages[:-1], t.stages[-1].repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert abs(FitNet(TEACHER, TEACHER)(s, t, ignored_batch())["fitnet"].item()) < 1e-15


def test_gradients_reach_the_student_and_the_adapter_and_stay_finite_for_huge_inputs() -> None:
    gen = torch.Generator().manual_seed(4)
    s = stage_outputs(STUDENT, gen, scale=1e4)
    t = stage_outputs(TEACHER, gen, scale=1e4)
    s.stages[-1].requires_grad_(True)
    method = FitNet(STUDENT, TEACHER).double()
    loss = method(s, t, ignored_batch())["fitnet"]
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (s.stages[-1].grad, method.adapters[0].weight.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_negative_indices_pair_the_deepest_stages_of_unequal_encoders() -> None:
    student, teacher = info(3, 6), info(4, 5, 10)
    assert resolve_stages("fitnet", [-1], student, teacher) == (-1,)
    method = FitNet(student, teacher)
    assert method.extra_parameters() == 6 * 10
    gen = torch.Generator().manual_seed(5)
    loss = method.double()(
        stage_outputs(student, gen), stage_outputs(teacher, gen), ignored_batch()
    )
    assert torch.isfinite(loss["fitnet"])


@pytest.mark.parametrize("stages", [(), (2,), (-3,), (0, -2), (True,), ("last",)])
def test_bad_stage_selection_raises_a_kdbench_error(stages: tuple) -> None:
    student, teacher = info(3, 6), info(4, 5, 10)
    with pytest.raises(KdbenchError, match="'fitnet'.*'stages'"):
        resolve_stages("fitnet", stages, student, teacher)


def test_registered() -> None:
    assert METHODS.get("fitnet") is FitNet
