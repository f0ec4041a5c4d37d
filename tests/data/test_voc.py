"""PASCAL VOC on a tiny tree in the real layout: grey SegmentationClassAug for train_aug,
palette SegmentationClass for val (indices, not a grey conversion), 255 ignored, list files at
either place, errors, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.data.voc import VOC
from kdbench.errors import KdbenchError
from tests.data.rgbx import SIZES, assert_scored, rng_image, save_palette_png, train_teacher_and_kd
from tests.data.trees import save_png

IDS = {"train_aug": ["2007_000032", "2008_000002", "2011_003276"],
       "val": ["2007_000033", "2007_000042"]}


def write_voc(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The tree; image i has size SIZES[i % 2]; labels 0..20 with (0, 0) = 255; val labels
    are palette PNGs; train_aug.txt in ImageSets/Segmentation, val.txt at the root.
    Returns {id: label}."""
    rng = np.random.default_rng(seed)
    labels = {}
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for split, ids in IDS.items():
        for i, name in enumerate(ids):
            size = SIZES[i % 2]
            Image.fromarray(rng_image(rng, size)).save(root / "JPEGImages" / f"{name}.jpg")
            label = rng.integers(0, 21, size).astype(np.uint8)
            label[0, 0] = 255
            if split == "val":
                save_palette_png(root / "SegmentationClass" / f"{name}.png", label)
            else:
                save_png(root / "SegmentationClassAug" / f"{name}.png", label)
            labels[name] = label
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train_aug.txt").write_text("\n".join(IDS["train_aug"]) + "\n")
    (root / "val.txt").write_text("\n".join(IDS["val"]) + "\n")
    return labels


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "voc"
    return root, write_voc(root)


def test_labels_are_the_stored_indices(tree: tuple[Path, dict]) -> None:
    root, labels = tree
    for split, key in (("train", "train_aug"), ("eval", "val")):
        data = VOC(split, root=str(root))
        assert data.names == IDS[key]
        for index, name in enumerate(data.names):
            want = torch.from_numpy(labels[name].astype(np.int64))
            assert torch.equal(data[index]["label"], want)
    assert VOC.class_names[0] == "background" and len(VOC.class_names) == 21


def test_missing_list_and_out_of_range_label_name_the_file(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    save_png(root / "SegmentationClassAug" / "2008_000002.png", np.full(SIZES[1], 21, np.uint8))
    with pytest.raises(KdbenchError, match=r"2008_000002\.png: label value 21 is not a class"):
        VOC("train", root=str(root))[1]
    (root / "val.txt").unlink()
    with pytest.raises(KdbenchError, match=r"ImageSets/Segmentation/val\.txt not found; expected"):
        VOC.check_available({"root": str(root)})
    with pytest.raises(KdbenchError, match=r"val\.txt not found; expected the layout"):
        VOC("eval", root=str(root))


@pytest.mark.slow
def test_teacher_and_kd_student_train_end_to_end(tree, tmp_path: Path) -> None:
    root, labels = tree
    records = train_teacher_and_kd(tmp_path, "voc", {"root": str(root)}, teacher={"kind": "rgb"})
    pixels = sum(int((labels[n] != 255).sum()) for n in IDS["val"])
    for record in records:
        assert_scored(record, pixels, VOC.class_names)
