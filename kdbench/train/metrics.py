"""Segmentation metrics from an int64 confusion matrix accumulated over a whole split.

With C[i, j] = number of pixels of true class i predicted as j (ignored pixels excluded), per
class k: TP = C[k, k], FP = Σ_i C[i, k] − TP, FN = Σ_j C[k, j] − TP, and

- IoU_k = TP / (TP + FP + FN),
- F_k = 2·TP / (2·TP + FP + FN) (the F-score, i.e. Dice),
- pixel accuracy = Σ_k TP / Σ C.

A class with TP + FP + FN = 0 (absent from the labels and never predicted) has no IoU: it is
reported as None and left out of the means (mIoU, mFsc), as in the Cityscapes evaluation.
All metrics are in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from kdbench.data.base import IGNORE_INDEX


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts of (true, predicted) pairs over pixels whose label is not ignored.

    ``pred`` and ``label`` are integer tensors of the same shape; labels outside [0, K) other
    than the ignore index are an error, not silently dropped.
    """
    valid = label != IGNORE_INDEX
    truth, guess = label[valid].long(), pred[valid].long()
    if truth.numel() and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(f"label values must lie in [0, {num_classes}) or be {IGNORE_INDEX}")
    counts = torch.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).to(torch.int64)


def metrics_from_confusion(confusion: Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """mIoU, mFsc, pixel accuracy and per-class IoU / F-score (percent) from a confusion matrix."""
    c = confusion.to(torch.float64)
    tp = c.diag()
    fp = c.sum(0) - tp
    fn = c.sum(1) - tp
    present = (tp + fp + fn) > 0
    iou = torch.where(present, tp / (tp + fp + fn).clamp_min(1), torch.nan) * 100
    fsc = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.nan) * 100
    total = c.sum()

    def mean(values: Tensor) -> float | None:
        return float(values[present].mean()) if bool(present.any()) else None

    def per_class(values: Tensor) -> dict[str, float | None]:
        return {
            name: (float(v) if ok else None)
            for name, v, ok in zip(class_names, values.tolist(), present.tolist(), strict=True)
        }

    return {
        "miou": mean(iou),
        "mfsc": mean(fsc),
        "pixel_acc": float(tp.sum() / total * 100) if total > 0 else None,
        "per_class_iou": per_class(iou),
        "per_class_fsc": per_class(fsc),
        "pixels": int(confusion.sum()),
    }
