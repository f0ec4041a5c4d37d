"""NYUDv2 (and the DFormer layout it shares with SUN RGB-D) on a tiny tree in the real layout:
three list-file line formats, 8-bit and metric depth, HHA, palette labels, errors, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.config import load_suite
from kdbench.data.base import normalize_rgb
from kdbench.data.nyudv2 import NYUDv2
from kdbench.errors import KdbenchError
from kdbench.registry import DATASETS
from tests.data.rgbx import (
    SIZES,
    assert_scored,
    rng_image,
    save_palette_png,
    train_teacher_and_kd,
    write_suite,
)
from tests.data.trees import save_png

TRAIN = {"1": 0, "2": 1, "3": 0}  # stem -> index into SIZES
TEST = {"4": 1, "5": 0}


def write_nyudv2(
    root: Path, seed: int = 0, sizes: tuple[tuple[int, int], ...] = SIZES
) -> dict[str, dict[str, np.ndarray]]:
    """The tree; stems 1 and 4 carry metric ``.npy`` depth, the others 8-bit PNG depth; labels
    are palette PNGs except stem 2's (grey); pixel (0, 0) of every label is 0 (unlabelled) and
    (0, 1) is 40 (the last class). Returns {stem: {"raw_label", "depth"}}."""
    rng = np.random.default_rng(seed)
    written = {}
    for stem, s in {**TRAIN, **TEST}.items():
        size = sizes[s]
        Image.fromarray(rng_image(rng, size)).save(_mk(root / "RGB" / f"{stem}.jpg"))
        Image.fromarray(rng_image(rng, size)).save(_mk(root / "HHA" / f"{stem}.jpg"))
        if stem in ("1", "4"):
            depth = rng.uniform(0.5, 12.0, size).astype(np.float32)
            depth[1, 0], depth[1, 1] = 0.0, np.nan
            np.save(_mk(root / "Depth" / f"{stem}.npy"), depth)
        else:
            depth = rng_image(rng, size, 1)
            save_png(root / "Depth" / f"{stem}.png", depth)
        label = rng.integers(0, 41, size).astype(np.uint8)
        label[0, 0], label[0, 1] = 0, 40
        if stem == "2":
            save_png(root / "Label" / f"{stem}.png", label)
        else:
            save_palette_png(root / "Label" / f"{stem}.png", label)
        written[stem] = {"raw_label": label, "depth": depth}
    (root / "train.txt").write_text("RGB/1.jpg\tLabel/1.png\nRGB/2.jpg\n3\n")
    (root / "test.txt").write_text("4\n\nRGB/5.jpg Label/5.png\n")
    return written


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "nyudv2"
    return root, write_nyudv2(root)


def valid_pixels(written: dict, stems: dict) -> int:
    return int(sum((written[s]["raw_label"] != 0).sum() for s in stems))


def test_registered_with_the_official_class_count() -> None:
    assert DATASETS.get("nyudv2") is NYUDv2
    assert len(NYUDv2.class_names) == 40 and NYUDv2.class_names[-1] == "otherprop"


def test_every_list_line_format_names_its_sample(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    assert NYUDv2("train", root=str(root)).names == ["1", "2", "3"]
    assert NYUDv2("eval", root=str(root)).names == ["4", "5"]


def test_labels_shift_down_and_zero_is_ignored(tree: tuple[Path, dict]) -> None:
    root, written = tree
    data = NYUDv2("train", root=str(root))
    for index, stem in enumerate(data.names):
        raw = written[stem]["raw_label"].astype(np.int64)
        want = np.where(raw == 0, 255, raw - 1)
        assert torch.equal(data[index]["label"], torch.from_numpy(want))


def test_depth_png_over_255_and_metric_depth_over_max_depth(tree: tuple[Path, dict]) -> None:
    root, written = tree
    data = NYUDv2("train", root=str(root), max_depth=8.0)
    png = written["2"]["depth"]
    assert torch.allclose(data[1]["x"][0], torch.from_numpy(png / np.float32(255.0)))
    metres = written["1"]["depth"].astype(np.float64)
    want = np.clip(np.where(np.isfinite(metres), metres, 0.0) / 8.0, 0.0, 1.0)
    assert np.allclose(data[0]["x"][0].numpy(), want, atol=1e-6)
    assert data[0]["x"][0, 1, 1] == 0.0  # NaN: no measurement


def test_hha_is_three_channels_as_decoded(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    data = NYUDv2("eval", root=str(root), modality="hha")
    hha = np.asarray(Image.open(root / "HHA" / "5.jpg"), dtype=np.float32) / 255.0
    assert data.x_channels == 3
    assert torch.allclose(data[1]["x"], torch.from_numpy(hha.transpose(2, 0, 1)))


def test_bgr_reverses_the_channels_before_normalising(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    rgb = np.asarray(Image.open(root / "RGB" / "4.jpg"), dtype=np.float32) / 255.0
    item = NYUDv2("eval", root=str(root), channel_order="bgr")[0]
    assert torch.allclose(item["rgb"], normalize_rgb(rgb[..., ::-1]))


def test_size_resizes_training_inputs_and_keeps_eval_labels_native(
    tree: tuple[Path, dict],
) -> None:
    root, written = tree
    train = NYUDv2("train", root=str(root), size=[8, 12])[1]
    assert train["rgb"].shape == (3, 8, 12) and train["label"].shape == (8, 12)
    item = NYUDv2("eval", root=str(root), size=[8, 12])[0]
    assert item["x"].shape == (1, 8, 12)
    assert item["label"].shape == written["4"]["raw_label"].shape


def test_missing_root_and_files_name_the_layout(tree: tuple[Path, dict], monkeypatch) -> None:
    root, _ = tree
    with pytest.raises(KdbenchError, match=r"data root .*nope not found; expected the layout"):
        NYUDv2("train", root=str(root.parent / "nope"))
    monkeypatch.setenv("KDBENCH_DATA", str(root.parent))
    assert NYUDv2("eval").root == root
    (root / "HHA" / "5.jpg").unlink()
    with pytest.raises(KdbenchError, match=r"HHA/5\.jpg\|\.png not found; expected the layout"):
        NYUDv2("eval", modality="hha")
    (root / "test.txt").unlink()
    with pytest.raises(KdbenchError, match=r"test\.txt not found; expected the layout .*RGB/"):
        NYUDv2.check_available({"root": str(root)})


def test_out_of_range_label_names_the_file(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    save_png(root / "Label" / "4.png", np.full(SIZES[1], 41, np.uint8))
    with pytest.raises(KdbenchError, match=r"4\.png: label value 41 is not 0"):
        NYUDv2("eval", root=str(root))[0]


def test_dry_run_validates_and_a_missing_root_stops_with_one_line(tree, tmp_path) -> None:
    root, _ = tree
    load_suite(write_suite(tmp_path, "nyudv2", {"root": str(root), "modality": "hha"}))
    with pytest.raises(KdbenchError, match=r"datasets\.nyudv2: nyudv2: data root"):
        load_suite(write_suite(tmp_path, "nyudv2", {"root": str(tmp_path / "none")}))


@pytest.mark.slow
def test_teacher_and_kd_student_train_end_to_end(tree, tmp_path: Path) -> None:
    root, written = tree
    records = train_teacher_and_kd(tmp_path, "nyudv2", {"root": str(root)})
    for record in records:
        assert_scored(record, valid_pixels(written, TEST), NYUDv2.class_names)
