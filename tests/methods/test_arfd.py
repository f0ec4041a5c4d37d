"""ARFD: Nadaraya–Watson against a loop, σ's median initialisation, resume, gradients, memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist

from kdbench.errors import KdbenchError
from kdbench.method import Batch
from kdbench.models.outputs import Outputs, TapInfo
from methods.arfd import (
    ARFD,
    KernelRegression,
    kernel_distance,
    linear_cka,
    nadaraya_watson,
    pixel_rows,
)
from tests.methods.test_cka import largest_saved_tensor

KERNELS = ["laplace", "laplace_l1", "gaussian"]
STUDENT = TapInfo((6, 8), (8, 16), 8, 4, 4)
TEACHER = TapInfo((5, 10), (4, 8), 8, 4, 4)
"""The teacher's stages are twice the student's resolution: the student map is resized."""


def stage_outputs(
    info: TapInfo, size: int, seed: int, scale: float = 1.0, grad: bool = False
) -> Outputs:
    """Outputs of 2 images with stages (2, C_i, size/2^i, size/2^i) and 4-class logits."""
    g = torch.Generator().manual_seed(seed)
    stages = tuple(
        (torch.randn(2, c, size >> i, size >> i, generator=g) * scale).requires_grad_(grad)
        for i, c in enumerate(info.stage_channels)
    )
    logits = torch.randn(2, info.num_classes, size, size, generator=g)
    return Outputs(logits, stages, logits)


def empty_batch() -> Batch:
    return Batch(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8).long())


@pytest.mark.parametrize("kernel", KERNELS)
def test_nadaraya_watson_matches_a_hand_written_regression(kernel: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    keys = torch.randn(4, 3, generator=g, dtype=torch.float64)
    values = torch.randn(4, 2, generator=g, dtype=torch.float64)
    sigma = 0.8
    got = nadaraya_watson(x, keys, values, torch.tensor(sigma, dtype=torch.float64), kernel)
    for i in range(7):
        weights = []
        for m in range(4):
            diff = [a - b for a, b in zip(x[i].tolist(), keys[m].tolist(), strict=True)]
            if kernel == "laplace_l1":
                weights.append(math.exp(-sum(abs(v) for v in diff) / sigma))
            elif kernel == "laplace":
                weights.append(math.exp(-math.sqrt(sum(v * v for v in diff)) / sigma))
            else:
                weights.append(math.exp(-sum(v * v for v in diff) / (2 * sigma**2)))
        want = [
            sum(w * values[m, j].item() for m, w in enumerate(weights)) / sum(weights)
            for j in range(2)
        ]
        assert got[i].tolist() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("kernel", ["laplace", "laplace_l1"])
def test_distance_gradients_match_finite_differences(kernel: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kernel_distance(a, b, kernel), (x, keys))


@pytest.mark.parametrize(
    ("kernel", "metric"), [("laplace", "euclidean"), ("laplace_l1", "cityblock")]
)
def test_first_batch_sets_anchors_and_median_sigma(kernel: str, metric: str) -> None:
    torch.manual_seed(2)
    x, y = torch.randn(30, 3), torch.randn(30, 2)
    recal = KernelRegression(3, 2, anchors=5, kernel=kernel)
    recal.initialise(x, y)
    rows = [int((x == key).all(dim=1).nonzero()) for key in recal.keys.detach()]
    assert len(set(rows)) == 5
    torch.testing.assert_close(recal.values.detach(), y[rows])
    distances = np.sort(cdist(x.numpy(), x[rows].numpy(), metric).ravel())
    median = distances[(len(distances) - 1) // 2]
    assert recal.log_sigma.exp().item() == pytest.approx(median, rel=1e-5)
    assert bool(recal.initialised)


def test_initialisation_happens_once_and_survives_a_resume() -> None:
    torch.manual_seed(3)
    method = ARFD(STUDENT, TEACHER, anchors=4)
    student, teacher = stage_outputs(STUDENT, 4, seed=0), stage_outputs(TEACHER, 8, seed=1)
    method(student, teacher, empty_batch())
    with torch.no_grad():
        method.recalibrations[0].log_sigma.fill_(math.log(3.0))
    first = method(student, teacher, empty_batch())["arfd"]
    assert method.recalibrations[0].log_sigma.exp().item() == pytest.approx(3.0)
    torch.manual_seed(4)
    resumed = ARFD(STUDENT, TEACHER, anchors=4)
    resumed.load_state_dict(method.state_dict())
    again = resumed(student, teacher, empty_batch())["arfd"]
    torch.testing.assert_close(again, first)
    torch.testing.assert_close(resumed.recalibrations[1].keys, method.recalibrations[1].keys)


def test_loss_is_the_sum_over_stages_of_one_minus_cka() -> None:
    method = ARFD(STUDENT, TEACHER, weight=0.5)
    student, teacher = stage_outputs(STUDENT, 4, seed=5), stage_outputs(TEACHER, 8, seed=6)
    got = method(student, teacher, empty_batch())["arfd"]
    want = 0.0
    for recal, fs, ft in zip(method.recalibrations, student.stages, teacher.stages, strict=True):
        aligned = F.interpolate(fs, size=ft.shape[-2:], mode="bilinear", align_corners=False)
        want += 1 - linear_cka(recal(pixel_rows(aligned)), pixel_rows(ft)).item()
    assert got.item() == pytest.approx(0.5 * want, rel=1e-5)
    assert 0.0 <= got.item() <= 0.5 * 2


@pytest.mark.parametrize("kernel", [*KERNELS, "linear"])
@pytest.mark.parametrize("cka", ["linear", "rbf"])
def test_gradients_reach_anchors_sigma_and_student(kernel: str, cka: str) -> None:
    torch.manual_seed(7)
    method = ARFD(STUDENT, TEACHER, kernel=kernel, cka=cka, anchors=6, subsample=20)
    student = stage_outputs(STUDENT, 4, seed=8, grad=True)
    loss = method(student, stage_outputs(TEACHER, 8, seed=9), empty_batch())["arfd"]
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in method.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    for fs in student.stages:
        assert fs.grad is not None and torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel", [*KERNELS, "linear"])
@pytest.mark.parametrize("scale", [1e4, 0.0])
def test_extreme_and_constant_features_stay_finite(kernel: str, scale: float) -> None:
    method = ARFD(STUDENT, TEACHER, kernel=kernel)
    student = stage_outputs(STUDENT, 4, seed=10, scale=scale, grad=True)
    loss = method(student, stage_outputs(TEACHER, 8, seed=11, scale=1e4), empty_batch())["arfd"]
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in method.parameters()] + [fs.grad for fs in student.stages]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kernel", ["laplace", "laplace_l1"])
def test_memory_stays_linear_in_the_number_of_pixels(kernel: str) -> None:
    student_info = TapInfo((16,), (8,), 8, 4, 4)
    teacher_info = TapInfo((24,), (8,), 8, 4, 4)
    method = ARFD(student_info, teacher_info, stages=(-1,), kernel=kernel, anchors=8)
    student = stage_outputs(student_info, 32, seed=12, grad=True)
    teacher = stage_outputs(teacher_info, 32, seed=13)
    n = 2 * 32 * 32
    with largest_saved_tensor() as largest:
        loss = method(student, teacher, empty_batch())["arfd"]
    loss.backward()
    assert 0 < largest[0] <= n * 24


@pytest.mark.parametrize(
    "options",
    [
        {"stages": (2,)},
        {"stages": (-1, 1)},
        {"kernel": "cosine"},
        {"cka": "cosine"},
        {"anchors": 0},
        {"subsample": 1},
    ],
)
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(KdbenchError, match="arfd"):
        ARFD(STUDENT, TEACHER, **options)
