"""Shared by the RGB-X benchmark loader tests: tiny images, and a teacher and a kd student
trained end to end on a tree through the in-process API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from kdbench.config import load_suite
from kdbench.train.run import train_run

SIZES = ((16, 24), (20, 18))
"""(H, W) of the trees' images: several sizes, as SUN RGB-D's sensors and ADE20K have."""
PALETTE = np.random.default_rng(9).integers(0, 256, 768, dtype=np.uint8)
"""A palette of non-grey colours, so that reading indices as grey levels would fail."""


def rng_image(rng: np.random.Generator, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """A random 8-bit image (H, W, channels), or (H, W) when ``channels`` is 1."""
    shape = size if channels == 1 else (*size, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def save_palette_png(path: Path, indices: np.ndarray) -> None:
    """A palette ("P") PNG whose pixel values are ``indices`` and colours are not grey."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(PALETTE.tolist())
    image.save(path)


def write_suite(tmp_path: Path, dataset: str, options: dict[str, Any], **changes: Any) -> Path:
    """A tiny suite on ``dataset``: one test_resnet student, methods none and kd, 2 steps of
    batch 2 on 16x16 crops."""
    settings = {
        "name": f"tiny-{dataset}",
        "datasets": {dataset: options},
        "students": ["test_resnet"],
        "methods": ["none", "kd"],
        "train": {"steps": 2, "batch_size": 2, "workers": 0, "crop": [16, 16]},
        **changes,
    }
    path = tmp_path / f"{dataset}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def train_teacher_and_kd(
    tmp_path: Path, dataset: str, options: dict[str, Any], **changes: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the suite's teacher and its kd student; both records, each checked complete."""
    suite = load_suite(write_suite(tmp_path, dataset, options, **changes))
    (teacher,) = suite.teachers
    kd = next(s for s in suite.students if s.method == "kd")
    records = (train_run(teacher, tmp_path / "results"), train_run(kd, tmp_path / "results"))
    for record in records:
        assert record["status"] == "complete", record.get("traceback")
    return records


def assert_scored(record: dict[str, Any], pixels: int, class_names: tuple[str, ...]) -> None:
    """The record evaluated exactly ``pixels`` labelled pixels over the data set's classes."""
    assert record["metrics"]["pixels"] == pixels
    assert set(record["metrics"]["per_class_iou"]) <= set(class_names)
