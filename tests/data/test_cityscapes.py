"""Cityscapes loader on a tiny tree in the official layout, and the shared label table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdbench.data.cityscapes import Cityscapes
from kdbench.data.cityscapes_labels import (
    LABEL_ID_TO_TRAIN_ID,
    TRAIN_CLASS_NAMES,
    label_ids_to_train_ids,
)
from kdbench.data.geometry import MAX_DISPARITY, MODALITY_CHANNELS
from kdbench.errors import KdbenchError
from kdbench.registry import DATASETS
from tests.data.trees import (
    CITYSCAPES_CAMERA,
    CITYSCAPES_TRAIN_IDS,
    H,
    W,
    assert_item,
    write_cityscapes,
)

FRAMES = {
    "train": ["aachen_000000_000019", "bochum_000000_000313"],
    "val": ["frankfurt_000000_000294"],
}


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "cityscapes"
    return root, write_cityscapes(root, FRAMES)


def test_label_table_is_the_official_one() -> None:
    assert LABEL_ID_TO_TRAIN_ID == CITYSCAPES_TRAIN_IDS
    assert TRAIN_CLASS_NAMES[0] == "road" and TRAIN_CLASS_NAMES[13] == "car"
    assert len(TRAIN_CLASS_NAMES) == 19 and len(set(TRAIN_CLASS_NAMES)) == 19
    every_id = np.arange(256, dtype=np.uint8)[None]
    train = label_ids_to_train_ids(every_id)[0]
    assert train.dtype == np.int64
    for label_id in range(256):
        assert train[label_id] == CITYSCAPES_TRAIN_IDS.get(label_id, 255)


def test_registered_under_cityscapes() -> None:
    assert DATASETS.get("cityscapes") is Cityscapes


def test_splits_are_official_train_and_val(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    assert Cityscapes("train", root=str(root)).names == [
        "aachen/aachen_000000_000019",
        "bochum/bochum_000000_000313",
    ]
    assert Cityscapes("eval", root=str(root)).names == ["frankfurt/frankfurt_000000_000294"]


@pytest.mark.parametrize("modality", sorted(MODALITY_CHANNELS))
def test_items_have_contract_shapes(tree: tuple[Path, dict], modality: str) -> None:
    root, _ = tree
    ds = Cityscapes("train", root=str(root), modality=modality)
    assert ds.num_classes == 19 and ds.x_channels == MODALITY_CHANNELS[modality]
    assert_item(ds[1], H, W, MODALITY_CHANNELS[modality], 19)


def test_label_ids_map_to_train_ids(tree: tuple[Path, dict]) -> None:
    root, written = tree
    label = Cityscapes("eval", root=str(root))[0]["label"].numpy()
    ids = written["frankfurt_000000_000294"]["label_ids"]
    assert label[0, 0] == 0 and label[0, 1] == 255
    for v in range(H):
        for u in range(W):
            assert label[v, u] == CITYSCAPES_TRAIN_IDS.get(int(ids[v, u]), 255)


def test_depth_from_disparity_and_camera_json(tree: tuple[Path, dict]) -> None:
    root, written = tree
    frame = Cityscapes("train", root=str(root)).frame(0)
    raw = written["aachen_000000_000019"]["disparity_raw"]
    c = CITYSCAPES_CAMERA
    k = frame.intrinsics
    assert (k.fx, k.fy, k.cx, k.cy) == (c["fx"], c["fy"], c["u0"], c["v0"])
    assert frame.baseline == c["baseline"]
    assert frame.depth[0, 0] == pytest.approx(c["fx"] * c["baseline"] / 10.0, rel=1e-6)
    assert frame.depth[0, 1] == 0.0 and frame.depth[0, 2] == 0.0  # p = 0, p = 1: invalid
    for v in range(H):
        for u in range(W):
            p = float(raw[v, u])
            expected = c["fx"] * c["baseline"] / ((p - 1.0) / 256.0) if p > 1 else 0.0
            assert frame.depth[v, u] == pytest.approx(expected, rel=1e-5)


def test_disparity_modality_gives_back_the_stored_disparity(tree: tuple[Path, dict]) -> None:
    root, written = tree
    x = Cityscapes("eval", root=str(root), modality="disparity")[0]["x"][0].numpy()
    raw = written["frankfurt_000000_000294"]["disparity_raw"].astype(np.float64)
    expected = np.clip(np.maximum(raw - 1.0, 0.0) / 256.0 / MAX_DISPARITY, 0.0, 1.0)
    assert x[0, 0] == pytest.approx(10.0 / MAX_DISPARITY, rel=1e-5)
    np.testing.assert_allclose(x, expected, rtol=1e-5)


def test_size_keeps_labels_in_the_class_set(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    assert_item(Cityscapes("train", root=str(root), size=[6, 10])[0], 6, 10, 1, 19)


def test_missing_root_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(KdbenchError) as err:
        Cityscapes("eval", root=str(tmp_path / "absent"))
    message = str(err.value)
    assert str(tmp_path / "absent") in message
    assert "leftImg8bit" in message and "cityscapes-dataset.com" in message


def test_missing_split_folder_names_it(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    for folder in (root / "leftImg8bit" / "val").rglob("*"):
        if folder.is_file():
            folder.unlink()
    with pytest.raises(KdbenchError, match="leftImg8bit/val"):
        Cityscapes("eval", root=str(root))


def test_missing_camera_json_names_it(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    missing = root / "camera/train/bochum/bochum_000000_000313_camera.json"
    missing.unlink()
    with pytest.raises(KdbenchError, match=str(missing)):
        Cityscapes("train", root=str(root))


def test_malformed_camera_json_is_a_user_error(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "camera/val/frankfurt/frankfurt_000000_000294_camera.json").write_text('{"x": 1}')
    ds = Cityscapes("eval", root=str(root))
    with pytest.raises(KdbenchError, match="baseline"):
        ds[0]
