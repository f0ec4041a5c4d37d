"""ADE20K on a tiny tree in the official ADEChallengeData2016 layout: "other" ignored, k → k−1,
images of several sizes, errors, the RGB-only refusal of an RGB-X teacher, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.config import load_suite
from kdbench.data.ade20k import ADE20K
from kdbench.errors import KdbenchError
from tests.data.rgbx import SIZES, assert_scored, rng_image, train_teacher_and_kd, write_suite
from tests.data.trees import save_png

SPLITS = {"training": 3, "validation": 2}


def write_ade20k(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The tree; image i has size SIZES[i % 2]; labels 0..150 with (0, 0) = 0 ("other") and
    (0, 1) = 150. Returns {name: label}."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    labels = {}
    for split, count in SPLITS.items():
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
            size = SIZES[i % 2]
            Image.fromarray(rng_image(rng, size)).save(base / "images" / split / f"{name}.jpg")
            label = rng.integers(0, 151, size).astype(np.uint8)
            label[0, 0], label[0, 1] = 0, 150
            save_png(base / "annotations" / split / f"{name}.png", label)
            labels[name] = label
    return labels


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "ade20k"
    return root, write_ade20k(root)


def test_validation_labels_shift_down_with_other_ignored(tree: tuple[Path, dict]) -> None:
    root, labels = tree
    data = ADE20K("eval", root=str(root))
    assert len(ADE20K.class_names) == 150 and len(ADE20K("train", root=str(root))) == 3
    assert data.names == ["ADE_val_00000001", "ADE_val_00000002"]
    for index, name in enumerate(data.names):
        raw = labels[name].astype(np.int64)
        item = data[index]
        assert torch.equal(item["label"], torch.from_numpy(np.where(raw == 0, 255, raw - 1)))
        assert item["x"].shape == (1, *raw.shape) and not item["x"].any()


def test_missing_annotation_names_it(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "ADEChallengeData2016/annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(KdbenchError, match=r"ADE_val_00000002\.png not found; expected the lay"):
        ADE20K("eval", root=str(root))


def test_an_rgbx_teacher_is_refused_with_one_line(tree, tmp_path: Path) -> None:
    root, _ = tree
    with pytest.raises(KdbenchError, match=r"teacher\.kind: 'intermediate' needs a second mod"):
        load_suite(write_suite(tmp_path, "ade20k", {"root": str(root)}))
    load_suite(write_suite(tmp_path, "ade20k", {"root": str(root)}, teacher={"kind": "rgb"}))


@pytest.mark.slow
def test_teacher_and_kd_student_train_end_to_end(tree, tmp_path: Path) -> None:
    root, labels = tree
    records = train_teacher_and_kd(tmp_path, "ade20k", {"root": str(root)},
                                   teacher={"kind": "rgb"})
    pixels = sum(int((v != 0).sum()) for k, v in labels.items() if "_val_" in k)
    for record in records:
        assert_scored(record, pixels, ADE20K.class_names)
