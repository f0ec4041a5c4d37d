"""Metrics against a plain per-pixel Python count, and the ignore/absent-class conventions."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.data.base import IGNORE_INDEX
from kdbench.train.metrics import confusion_matrix, metrics_from_confusion


def reference_metrics(pred: list[int], label: list[int], k: int) -> dict[str, object]:
    """Per-class counts by a Python loop over pixels, then IoU/F as textbook ratios."""
    tp, fp, fn = [0] * k, [0] * k, [0] * k
    correct = total = 0
    for p, t in zip(pred, label, strict=True):
        if t == IGNORE_INDEX:
            continue
        total += 1
        if p == t:
            tp[t] += 1
            correct += 1
        else:
            fp[p] += 1
            fn[t] += 1
    iou = [
        tp[c] / (tp[c] + fp[c] + fn[c]) * 100 if tp[c] + fp[c] + fn[c] else None for c in range(k)
    ]
    fsc = [
        2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) * 100 if tp[c] + fp[c] + fn[c] else None
        for c in range(k)
    ]
    present = [v for v in iou if v is not None]
    return {
        "iou": iou,
        "fsc": fsc,
        "miou": sum(present) / len(present),
        "mfsc": sum(v for v in fsc if v is not None) / len(present),
        "acc": correct / total * 100,
    }


def test_metrics_match_a_per_pixel_count() -> None:
    g = torch.Generator().manual_seed(0)
    k = 5
    label = torch.randint(0, k, (2, 7, 9), generator=g)
    label[torch.rand(label.shape, generator=g) < 0.2] = IGNORE_INDEX
    label[label == 3] = 4  # class 3 absent from labels ...
    pred = torch.randint(0, k, (2, 7, 9), generator=g)
    pred[pred == 2] = 1  # ... class 2 never predicted but present
    names = [f"c{i}" for i in range(k)]
    m = metrics_from_confusion(confusion_matrix(pred, label, k), names)
    ref = reference_metrics(pred.flatten().tolist(), label.flatten().tolist(), k)
    assert m["miou"] == pytest.approx(ref["miou"])
    assert m["mfsc"] == pytest.approx(ref["mfsc"])
    assert m["pixel_acc"] == pytest.approx(ref["acc"])
    for i, name in enumerate(names):
        expected = ref["iou"][i]
        got = m["per_class_iou"][name]
        assert (got is None and expected is None) or got == pytest.approx(expected)


def test_confusion_is_int64_and_ignores_the_ignore_label() -> None:
    label = torch.tensor([[0, 1, IGNORE_INDEX]])
    pred = torch.tensor([[0, 0, 1]])
    c = confusion_matrix(pred, label, 2)
    assert c.dtype == torch.int64
    assert c.tolist() == [[1, 0], [1, 0]]


def test_a_class_absent_and_never_predicted_is_left_out_of_the_mean() -> None:
    label = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 0])
    m = metrics_from_confusion(confusion_matrix(pred, label, 3), ["a", "b", "c"])
    assert m["per_class_iou"]["c"] is None
    assert m["miou"] == pytest.approx((2 / 3 * 100 + 1 / 2 * 100) / 2)


def test_out_of_range_labels_are_an_error() -> None:
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)


def test_perfect_prediction() -> None:
    label = torch.randint(0, 4, (3, 5, 5))
    m = metrics_from_confusion(confusion_matrix(label, label, 4), list("abcd"))
    assert m["miou"] == m["mfsc"] == m["pixel_acc"] == pytest.approx(100.0)
    assert not any(math.isnan(v) for v in m["per_class_iou"].values() if v is not None)
