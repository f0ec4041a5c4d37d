"""MFNet on a tiny tree in the real layout: 4-channel PNGs split into RGB and thermal, both
class-0 conventions, errors, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdbench.data.base import normalize_rgb
from kdbench.data.mfnet import MFNet
from kdbench.errors import KdbenchError
from tests.data.rgbx import SIZES, assert_scored, rng_image, train_teacher_and_kd
from tests.data.trees import save_png

SPLITS = {"train": ["00001D", "00002N", "00003D"], "val": ["00004N"], "test": ["00005D", "00006N"]}


def write_mfnet(root: Path, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """The tree; sample i has size SIZES[i % 2]; labels 0..8 with (0, 0) = 0 and (0, 1) = 8.
    Returns {name: {"image": (H, W, 4), "label"}}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, names in SPLITS.items():
        for i, name in enumerate(names):
            size = SIZES[i % 2]
            image = rng_image(rng, size, 4)
            label = rng.integers(0, 9, size).astype(np.uint8)
            label[0, 0], label[0, 1] = 0, 8
            save_png(root / "images" / f"{name}.png", image)
            save_png(root / "labels" / f"{name}.png", label)
            written[name] = {"image": image, "label": label}
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    return written


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "mfnet"
    return root, write_mfnet(root)


def test_the_fourth_channel_is_thermal_and_eval_is_test(tree: tuple[Path, dict]) -> None:
    root, written = tree
    data = MFNet("eval", root=str(root))
    assert data.names == SPLITS["test"] and data.x_channels == 1
    for index, name in enumerate(data.names):
        image = written[name]["image"]
        item = data[index]
        assert torch.allclose(item["rgb"], normalize_rgb(image[..., :3]))
        assert torch.allclose(item["x"][0], torch.from_numpy(image[..., 3] / np.float32(255)))


def test_class_zero_counted_or_ignored(tree: tuple[Path, dict]) -> None:
    root, written = tree
    raw = written["00005D"]["label"].astype(np.int64)
    counted = MFNet("eval", root=str(root))
    assert counted.num_classes == 9 and counted.class_names[0] == "unlabeled"
    assert torch.equal(counted[0]["label"], torch.from_numpy(raw))
    ignored = MFNet("eval", root=str(root), unlabeled="ignore")
    assert ignored.num_classes == 8 and ignored.class_names[0] == "car"
    assert torch.equal(ignored[0]["label"], torch.from_numpy(np.where(raw == 0, 255, raw - 1)))


def test_mistakes_name_the_file(tree: tuple[Path, dict]) -> None:
    root, written = tree
    save_png(root / "images" / "00005D.png", written["00005D"]["image"][..., :3])
    with pytest.raises(KdbenchError, match=r"00005D\.png: expected an 8-bit 4-channel PNG"):
        MFNet("eval", root=str(root))[0]
    save_png(root / "images" / "00005D.png", written["00005D"]["image"])
    save_png(root / "labels" / "00005D.png", np.full(SIZES[0], 9, np.uint8))
    with pytest.raises(KdbenchError, match=r"00005D\.png: label value 9 is not a class 0\.\.8"):
        MFNet("eval", root=str(root))[0]
    (root / "labels" / "00006N.png").unlink()
    with pytest.raises(KdbenchError, match=r"labels/00006N\.png not found; expected the layout"):
        MFNet("eval", root=str(root))
    (root / "test.txt").unlink()
    with pytest.raises(KdbenchError, match=r"test\.txt not found; expected the layout"):
        MFNet.check_available({"root": str(root)})


@pytest.mark.slow
@pytest.mark.parametrize("unlabeled", ["class", "ignore"])
def test_teacher_and_kd_student_train_end_to_end(tree, tmp_path: Path, unlabeled: str) -> None:
    root, written = tree
    records = train_teacher_and_kd(tmp_path, "mfnet", {"root": str(root), "unlabeled": unlabeled})
    labels = [written[n]["label"] for n in SPLITS["test"]]
    pixels = sum(lab.size if unlabeled == "class" else int((lab != 0).sum()) for lab in labels)
    names = MFNet("eval", root=str(root), unlabeled=unlabeled).class_names
    for record in records:
        assert_scored(record, pixels, names)
