"""DeLiVER on a tiny tree in the real layout: conditions, splits, the four modalities (8- and
16-bit, grey and colour), red-channel labels with 0 and 255 ignored, errors, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdbench.data.deliver import Deliver
from kdbench.errors import KdbenchError
from tests.data.rgbx import SIZES, assert_scored, rng_image, train_teacher_and_kd
from tests.data.trees import save_png

TREE = {("cloud", "train"): 2, ("night", "train"): 1, ("cloud", "val"): 1, ("night", "val"): 1,
        ("cloud", "test"): 1}
"""(condition, split) -> number of frames (scene MAP_1, frames 000000, 000001, ...)."""


def write_deliver(root: Path, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """The tree; frame i has size SIZES[i % 2]; depth is a 16-bit grey PNG, the others 8-bit
    (hha and lidar 3-channel, event grey); labels in the red channel of an RGB PNG, 0..25 with
    (0, 0) = 0 and (0, 1) = 255. Returns {cond/split/MAP_1/frame: {modality: array, "label"}}."""
    rng = np.random.default_rng(seed)
    written = {}
    for (cond, split), count in TREE.items():
        for i in range(count):
            stem = f"{cond}/{split}/MAP_1/{i:06d}"
            size = SIZES[i % 2]
            arrays = {
                "rgb": rng_image(rng, size), "hha": rng_image(rng, size),
                "lidar": rng_image(rng, size), "event": rng_image(rng, size, 1),
                "depth": rng.integers(0, 65536, size).astype(np.uint16),
            }
            for folder, part, key in (("img", "rgb", "rgb"), ("hha", "depth", "hha"),
                                      ("depth", "depth", "depth"), ("event", "event", "event"),
                                      ("lidar", "lidar", "lidar")):
                save_png(root / folder / f"{stem}_{part}_front.png", arrays[key])
            label = rng.integers(0, 26, size).astype(np.uint8)
            label[0, 0], label[0, 1] = 0, 255
            colour = np.stack([label, rng_image(rng, size, 1), rng_image(rng, size, 1)], -1)
            save_png(root / "semantic" / f"{stem}_semantic_front.png", colour)
            written[stem] = {**arrays, "label": label}
    return written


CONDITIONS = ["cloud", "night"]
"""The conditions the tree holds (the default, all five, would fail as missing)."""


def make(split: str, root: Path, **options) -> Deliver:
    """The data set on the tree's conditions unless ``conditions`` is given."""
    return Deliver(split, root=str(root), **{"conditions": CONDITIONS, **options})


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "deliver"
    return root, write_deliver(root)


def test_splits_and_conditions(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    assert make("train", root).names == [
        "cloud/train/MAP_1/000000", "cloud/train/MAP_1/000001", "night/train/MAP_1/000000"]
    assert make("eval", root).names == [
        "cloud/val/MAP_1/000000", "night/val/MAP_1/000000"]
    assert make("eval", root, eval_split="test", conditions=["cloud"]).names == [
        "cloud/test/MAP_1/000000"]
    with pytest.raises(KdbenchError, match=r"folder .*img/fog/val not found; expected the layout"):
        make("eval", root, conditions=["fog"])


@pytest.mark.parametrize("modality, channels", [("hha", 3), ("depth", 1), ("event", 3),
                                                ("lidar", 3)])
def test_each_modality_scaled_to_unit_range(tree, modality: str, channels: int) -> None:
    root, written = tree
    data = make("train", root, modality=modality)
    raw = written[data.names[1]][modality]
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    want = raw.astype(np.float32) / np.float32(scale)
    want = np.repeat(want[..., None], channels, -1) if want.ndim == 2 else want
    item = data[1]
    assert data.x_channels == channels
    assert torch.allclose(item["x"], torch.from_numpy(want.transpose(2, 0, 1)))


def test_red_channel_labels_shift_down_with_0_and_255_ignored(tree: tuple[Path, dict]) -> None:
    root, written = tree
    data = make("eval", root)
    for index, stem in enumerate(data.names):
        raw = written[stem]["label"].astype(np.int64)
        want = np.where((raw == 0) | (raw == 255), 255, raw - 1)
        assert torch.equal(data[index]["label"], torch.from_numpy(want))


def test_missing_modality_file_names_it(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "event" / "night/val/MAP_1/000000_event_front.png").unlink()
    make("eval", root)  # hha is there
    with pytest.raises(KdbenchError, match=r"000000_event_front\.png not found; expected the lay"):
        make("eval", root, modality="event")


@pytest.mark.slow
def test_teacher_and_kd_student_train_end_to_end(tree, tmp_path: Path) -> None:
    root, written = tree
    options = {"root": str(root), "modality": "lidar", "conditions": CONDITIONS}
    records = train_teacher_and_kd(tmp_path, "deliver", options)
    labels = [v["label"] for k, v in written.items() if "/val/" in k]
    pixels = sum(int(((lab != 0) & (lab != 255)).sum()) for lab in labels)
    for record in records:
        assert_scored(record, pixels, Deliver.class_names)
