"""SUN RGB-D on a tiny tree in the DFormer layout: mixed image sizes, lower-case ``labels``,
0 = void, errors, a run whose evaluation scores every image at its own size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.data.sunrgbd import SUNRGBD
from kdbench.errors import KdbenchError
from tests.data.rgbx import SIZES, assert_scored, rng_image, train_teacher_and_kd
from tests.data.trees import save_png

SAMPLES = {
    "train": ["img-000001", "img-000002", "img-000003"],
    "test": ["img-005051", "img-005052"],
}


def write_sunrgbd(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The tree; sample i has size SIZES[i % 2]; labels 0..37 with (0, 0) = 0 (void).
    Returns {stem: raw label}."""
    rng = np.random.default_rng(seed)
    labels = {}
    for split, stems in SAMPLES.items():
        for i, stem in enumerate(stems):
            size = SIZES[i % 2]
            (root / "RGB").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng_image(rng, size)).save(root / "RGB" / f"{stem}.jpg")
            save_png(root / "Depth" / f"{stem}.png", rng_image(rng, size, 1))
            label = rng.integers(0, 38, size).astype(np.uint8)
            label[0, 0] = 0
            save_png(root / "labels" / f"{stem}.png", label)
            labels[stem] = label
        (root / f"{split}.txt").write_text("".join(f"RGB/{s}.jpg\tlabels/{s}.png\n" for s in stems))
    return labels


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "sunrgbd"
    return root, write_sunrgbd(root)


def test_items_at_their_own_sizes_with_void_ignored(tree: tuple[Path, dict]) -> None:
    root, labels = tree
    data = SUNRGBD("eval", root=str(root))
    assert len(SUNRGBD.class_names) == 37 and data.names == SAMPLES["test"]
    for index, stem in enumerate(data.names):
        raw = labels[stem].astype(np.int64)
        item = data[index]
        assert item["x"].shape == (1, *raw.shape)
        assert torch.equal(item["label"], torch.from_numpy(np.where(raw == 0, 255, raw - 1)))


def test_missing_label_names_the_lower_case_folder(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "labels" / "img-000002.png").unlink()
    with pytest.raises(KdbenchError, match=r"labels/img-000002\.png not found; expected the lay"):
        SUNRGBD("train", root=str(root))
    with pytest.raises(KdbenchError, match="unknown modality 'hha'; known: depth"):
        SUNRGBD("train", root=str(root), modality="hha")


@pytest.mark.slow
def test_teacher_and_kd_student_train_end_to_end(tree, tmp_path: Path) -> None:
    root, labels = tree
    records = train_teacher_and_kd(tmp_path, "sunrgbd", {"root": str(root)})
    pixels = int(sum((labels[s] != 0).sum() for s in SAMPLES["test"]))
    for record in records:
        assert_scored(record, pixels, SUNRGBD.class_names)
