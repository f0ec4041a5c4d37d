"""What the method base class guarantees: aligned feature pairs, a tapped teacher, options
checked at construction by the one resolver, and methods below the training layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.method import Batch, aligned_pairs, build_method, feature_pairs, stage_sum
from kdbench.models.outputs import Outputs, TapInfo
from methods.fitnet import FitNet
from methods.kd import KD

ROOT = Path(__file__).resolve().parents[1]
INFO = TapInfo(
    stage_channels=(3, 5), stage_reductions=(2, 4), decoder_channels=4, num_classes=3,
    logit_reduction=4,
)


def rand(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_aligned_pairs_adapt_resize_cast_and_detach_as_written_by_hand() -> None:
    fs = rand(0, 2, 3, 4, 4).requires_grad_(True)
    ft = rand(1, 2, 5, 8, 8, dtype=torch.float32).requires_grad_(True)
    adapter = nn.Conv2d(3, 5, 1, bias=False).double()
    [(s, t)] = aligned_pairs([fs], [ft], [adapter], detach=True)
    expected = F.interpolate(adapter(fs), size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(s, expected, rtol=0, atol=0)
    assert t.dtype == torch.float64 and torch.equal(t, ft.detach().double())
    (s * t).sum().backward()
    assert fs.grad is not None and adapter.weight.grad is not None
    assert ft.grad is None  # the detached teacher is a fixed target


def test_unaligned_pairs_are_the_maps_themselves() -> None:
    fs, ft = rand(0, 1, 3, 4, 4), rand(1, 1, 5, 8, 8, dtype=torch.float32)
    [(s, t)] = aligned_pairs([fs], [ft], resize=False, cast=False)
    assert s is fs and t is ft


def test_feature_pairs_select_the_same_stages_of_both_models_and_sum_them() -> None:
    student = Outputs(rand(0, 1, 3, 2, 2), (rand(1, 1, 3, 8, 8), rand(2, 1, 5, 4, 4)), None)
    teacher = Outputs(rand(3, 1, 3, 2, 2), (rand(4, 1, 3, 8, 8), rand(5, 1, 5, 4, 4)), None)
    pairs = feature_pairs(student, teacher, "stages", (-1, 0))
    assert [(s.shape[1], t.shape[1]) for s, t in pairs] == [(5, 5), (3, 3)]
    assert pairs[0][0] is student.stages[1] and pairs[1][1] is teacher.stages[0]
    losses = [(s - t).pow(2).mean() for s, t in pairs]
    torch.testing.assert_close(stage_sum(losses), losses[0] + losses[1])


def test_a_tapped_method_without_a_teacher_is_one_clear_error() -> None:
    with pytest.raises(KdbenchError, match=r"^method 'kd' reads the teacher's logits but was "
                       "given no teacher taps$"):
        KD(INFO, None)  # type: ignore[arg-type]
    method = KD(INFO, INFO)
    batch = Batch(rgb=torch.zeros(1, 3, 8, 8), x=torch.zeros(1, 1, 8, 8),
                  label=torch.zeros(1, 8, 8, dtype=torch.long))
    student = Outputs(torch.zeros(1, 3, 2, 2), (), torch.zeros(1, 4, 2, 2))
    with pytest.raises(KdbenchError, match="given no teacher outputs"):
        method(student, None, batch)  # type: ignore[arg-type]


def test_the_student_baseline_needs_no_teacher() -> None:
    assert build_method([("none", {})], INFO, None).taps == ()


def test_construction_checks_options_with_the_resolver_and_copies_still_work() -> None:
    import copy

    with pytest.raises(KdbenchError, match=r"^method 'fitnet'.weight: expected a number, got 'x'$"):
        FitNet(INFO, INFO, weight="x")  # type: ignore[arg-type]
    method = FitNet(INFO, INFO, stages=(0, 1))
    clone = copy.deepcopy(method)
    assert clone.stages == method.stages
    for a, b in zip(clone.parameters(), method.parameters(), strict=True):
        assert torch.equal(a, b)


def test_methods_never_import_the_training_package() -> None:
    for path in sorted((ROOT / "methods").glob("*.py")) + [ROOT / "kdbench" / "method.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            bad = [n for n in names if n == "kdbench.train" or n.startswith("kdbench.train.")]
            assert not bad, f"{path.name} imports {bad}"
