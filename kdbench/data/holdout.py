"""The tuning split: a training split cut into a part to fit on and a held-out part to score on.

``tune: {split: F}`` holds out ``round(F·n)`` (at least 1, at most n − 1) of the n samples of
the *training* split, chosen by a permutation seeded by ``seed``; trials train on the rest and
are scored on them. The evaluation split is never read while tuning, so the chosen
hyper-parameters know nothing of the samples the final table is scored on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from kdbench.errors import KdbenchError

PARTS = ("fit", "score")


def held_out(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit indices, held-out indices) of a split of ``n`` samples, each sorted."""
    if not 0.0 < fraction < 1.0 or n < 2:
        raise KdbenchError(f"tune.split {fraction}: expected 0 < split < 1 of at least 2 samples")
    k = min(n - 1, max(1, round(fraction * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[k:]), sorted(order[:k])


class HoldOut(Dataset):
    """The ``part`` ("fit" or "score") of the training split ``dataset`` (see the module)."""

    def __init__(self, dataset: Any, fraction: float, part: str, seed: int = 0) -> None:
        if part not in PARTS:
            raise KdbenchError(f"held-out part {part!r}: expected one of {', '.join(PARTS)}")
        self.dataset = dataset
        fit, score = held_out(len(dataset), fraction, seed)
        self.indices = fit if part == "fit" else score
        self.class_names = dataset.class_names
        self.num_classes = dataset.num_classes
        self.x_channels = dataset.x_channels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.dataset[self.indices[index]]
