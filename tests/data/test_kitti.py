"""KITTI semantics loader on a tiny tree in the official layout (plus the shared resizing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdbench.data.geometry import MAX_DISPARITY, MODALITY_CHANNELS
from kdbench.data.kitti import KittiSemantics
from kdbench.data.loading import resize_frame
from kdbench.errors import KdbenchError
from kdbench.registry import DATASETS
from tests.data.trees import (
    CITYSCAPES_TRAIN_IDS,
    KITTI_CX,
    KITTI_CY,
    KITTI_FX,
    KITTI_FY,
    H,
    W,
    assert_item,
    save_png,
    write_kitti,
)

B = 0.54


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "kitti"
    return root, write_kitti(root, range(6))


def test_registered_under_kitti() -> None:
    assert DATASETS.get("kitti") is KittiSemantics


def test_split_puts_every_fifth_index_in_eval(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    train = KittiSemantics("train", root=str(root))
    evaluation = KittiSemantics("eval", root=str(root))
    assert evaluation.names == ["000000", "000005"]
    assert train.names == ["000001", "000002", "000003", "000004"]
    assert len(train) == 4 and len(evaluation) == 2


@pytest.mark.parametrize("modality", sorted(MODALITY_CHANNELS))
def test_items_have_contract_shapes(tree: tuple[Path, dict], modality: str) -> None:
    root, _ = tree
    ds = KittiSemantics("train", root=str(root), modality=modality)
    assert ds.num_classes == 19 and ds.x_channels == MODALITY_CHANNELS[modality]
    assert_item(ds[0], H, W, MODALITY_CHANNELS[modality], 19)


def test_label_ids_map_to_train_ids(tree: tuple[Path, dict]) -> None:
    root, written = tree
    ds = KittiSemantics("train", root=str(root))
    label = ds[1]["label"].numpy()  # 000002
    ids = written["000002"]["label_ids"]
    assert label[0, 0] == 0  # road
    assert label[0, 1] == 255  # unlabeled
    for v in range(H):
        for u in range(W):
            assert label[v, u] == CITYSCAPES_TRAIN_IDS.get(int(ids[v, u]), 255)


def test_depth_is_f_b_over_disparity(tree: tuple[Path, dict]) -> None:
    root, written = tree
    frame = KittiSemantics("eval", root=str(root)).frame(1)  # 000005
    raw = written["000005"]["disparity_raw"]
    k = frame.intrinsics
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((KITTI_FX, KITTI_FY, KITTI_CX, KITTI_CY))
    assert frame.depth[0, 0] == pytest.approx(KITTI_FX * B / 10.0, rel=1e-6)
    assert frame.depth[0, 1] == 0.0
    for v in range(H):
        for u in range(W):
            expected = KITTI_FX * B / (float(raw[v, u]) / 256.0) if raw[v, u] > 0 else 0.0
            assert frame.depth[v, u] == pytest.approx(expected, rel=1e-5)


def test_disparity_modality_gives_back_the_stored_disparity(tree: tuple[Path, dict]) -> None:
    root, written = tree
    x = KittiSemantics("eval", root=str(root), modality="disparity")[0]["x"][0].numpy()
    raw = written["000000"]["disparity_raw"].astype(np.float64)
    assert x[0, 0] == pytest.approx(10.0 / MAX_DISPARITY, rel=1e-5)
    np.testing.assert_allclose(x, np.clip(raw / 256.0 / MAX_DISPARITY, 0, 1), rtol=1e-5)


def test_dense_dir_of_depth_maps(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    dense = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 50
    for name in ("000001", "000002", "000003", "000004"):
        save_png(root / "my_dense" / f"{name}_10.png", dense)
    ds = KittiSemantics("train", root=str(root), dense_dir="my_dense", dense_kind="depth")
    frame = ds.frame(2)
    for v in range(H):
        for u in range(W):
            assert frame.depth[v, u] == pytest.approx(float(dense[v, u]) / 256.0)


def test_dense_dir_missing_file_names_it(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    save_png(root / "dense" / "000001_10.png", np.ones((H, W), dtype=np.uint16))
    with pytest.raises(KdbenchError, match="000002_10.png"):
        KittiSemantics("train", root=str(root), dense_dir=str(root / "dense"))


def test_missing_root_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(KdbenchError) as err:
        KittiSemantics("train", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message
    assert "data_semantics/training/image_2" in message and "cvlibs.net" in message
    assert "\n" not in message


def test_root_defaults_to_kdbench_data(tree: tuple[Path, dict], monkeypatch) -> None:
    root, _ = tree
    monkeypatch.setenv("KDBENCH_DATA", str(root.parent))
    assert len(KittiSemantics("train")) == 4
    monkeypatch.delenv("KDBENCH_DATA")
    with pytest.raises(KdbenchError, match="KDBENCH_DATA"):
        KittiSemantics("train")


def test_missing_disparity_fails_in_constructor(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    missing = root / "data_scene_flow/training/disp_occ_0/000003_10.png"
    missing.unlink()
    with pytest.raises(KdbenchError, match=str(missing)):
        KittiSemantics("train", root=str(root))
    assert len(KittiSemantics("eval", root=str(root))) == 2  # the other split is complete


def test_calibration_without_p_rect_02_is_an_error(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "data_scene_flow_calib/training/calib_cam_to_cam/000000.txt").write_text("x: 1\n")
    with pytest.raises(KdbenchError, match="P_rect_02"):
        KittiSemantics("eval", root=str(root))


@pytest.mark.parametrize(
    "options",
    [{"split": "val"}, {"modality": "rgb"}, {"size": (0, 4)}, {"dense_kind": "normals"}],
)
def test_bad_options_are_user_errors(tree: tuple[Path, dict], options: dict) -> None:
    root, _ = tree
    kwargs = {"split": "train", "root": str(root), **options}
    with pytest.raises(KdbenchError):
        KittiSemantics(kwargs.pop("split"), **kwargs)


def test_size_halving_samples_pixel_centres(tree: tuple[Path, dict]) -> None:
    root, written = tree
    ds = KittiSemantics("train", root=str(root), size=(H // 2, W // 2), modality="normals")
    item = ds[0]  # 000001
    assert_item(item, H // 2, W // 2, 3, 19)
    ids = written["000001"]["label_ids"][1::2, 1::2]  # nearest to the output pixel centres
    expected = np.vectorize(lambda i: CITYSCAPES_TRAIN_IDS.get(int(i), 255))(ids)
    np.testing.assert_array_equal(item["label"].numpy(), expected)

    frame = ds.frame(0)
    small = resize_frame(frame, (H // 2, W // 2))
    np.testing.assert_array_equal(small.depth, frame.depth[1::2, 1::2])
    k = small.intrinsics
    assert k.fx == pytest.approx(KITTI_FX / 2) and k.fy == pytest.approx(KITTI_FY / 2)
    assert k.cx == pytest.approx((KITTI_CX + 0.5) / 2 - 0.5)
    assert k.cy == pytest.approx((KITTI_CY + 0.5) / 2 - 0.5)
    assert small.rgb.shape == (H // 2, W // 2, 3)
    assert small.rgb.min() >= 0.0 and small.rgb.max() <= 1.0


def test_odd_size_keeps_labels_and_depths_from_the_input(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    ds = KittiSemantics("train", root=str(root))
    frame = ds.frame(1)
    resized = resize_frame(frame, (7, 29))
    assert resized.label.shape == (7, 29) and resized.depth.shape == (7, 29)
    assert set(np.unique(resized.label)) <= set(np.unique(frame.label))
    assert set(np.unique(resized.depth)) <= set(np.unique(frame.depth))
