"""The tiny synthdrive suite that end-to-end tests train, written once.

``tiny()`` is a fresh deep copy of :data:`TINY` (a test may change it in place) with whole
top-level sections replaced by keyword, for example
``tiny(name="damaged", train={**TRAIN, "steps": 4})``; ``samples=(8, 4)`` sets synthdrive's
train and eval sample counts. One run of it trains a 32 x 64 ``test_resnet`` for a few steps.
"""

from __future__ import annotations

import copy
from typing import Any

SYNTHDRIVE: dict[str, Any] = {"size": [32, 64], "train_samples": 16, "eval_samples": 8}
TRAIN: dict[str, Any] = {"steps": 6, "batch_size": 4, "log_every": 2, "checkpoint_every": 2}
TINY: dict[str, Any] = {
    "name": "tiny",
    "seeds": [0],
    "datasets": {"synthdrive": SYNTHDRIVE},
    "students": ["test_resnet"],
    "methods": ["none", "kd"],
    "train": TRAIN,
}


def tiny(samples: tuple[int, int] | None = None, **sections: Any) -> dict[str, Any]:
    """The tiny suite with ``sections`` replacing its top-level keys (new keys come last).

    ``samples`` is ``(train_samples, eval_samples)`` of synthdrive.
    """
    data = copy.deepcopy({**TINY, **sections})
    if samples is not None:
        data["datasets"]["synthdrive"].update(train_samples=samples[0], eval_samples=samples[1])
    return data
