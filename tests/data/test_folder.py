"""The ``folder`` data set on tiny trees: classes with and without colours, 16-bit PNG and .npy
x files (depth, disparity, normals), errors that name the file, and a run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kdbench.config import load_suite
from kdbench.data.folder import Folder
from kdbench.errors import KdbenchError
from kdbench.train.run import train_run
from tests.data.trees import H, W, assert_item, save_png

COLOURS = {"road": (128, 64, 128), "car": (0, 0, 142), "sky": (70, 130, 180)}


def write_tree(root: Path, *, colours: bool, x_kind: str = "depth", seed: int = 0) -> dict:
    """train/: 3 samples with single-channel labels, val/: 2 with colour labels (if
    ``colours``); x as uint16 PNG (millimetres / disparity·256) or .npy normals."""
    rng = np.random.default_rng(seed)
    lines = [f"{n} {r} {g} {b}" if colours else n for n, (r, g, b) in COLOURS.items()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("# name r g b\n" + "\n".join(lines) + "\n")
    written = {}
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            name = f"{split}_{i:03d}"
            ids = rng.integers(0, 3, size=(H, W))
            ids[0, 0] = 255
            save_png(root / split / "rgb" / f"{name}.png",
                     rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            if colours and split == "val":
                palette = np.array(list(COLOURS.values()) + [(1, 2, 3)], dtype=np.uint8)
                save_png(root / split / "labels" / f"{name}.png",
                         palette[np.where(ids == 255, 3, ids)])
            else:
                save_png(root / split / "labels" / f"{name}.png", ids.astype(np.uint8))
            if x_kind == "normals":
                n = rng.normal(size=(H, W, 3))
                n /= np.linalg.norm(n, axis=-1, keepdims=True)
                (root / split / "x").mkdir(parents=True, exist_ok=True)
                np.save(root / split / "x" / f"{name}.npy", n)
                raw = n
            else:
                raw = rng.integers(1, 60000, size=(H, W)).astype(np.uint16)
                raw[0, 1] = 0
                save_png(root / split / "x" / f"{name}.png", raw)
            written[name] = {"ids": ids, "raw": raw}
    return written


def test_depth_png_in_millimetres_and_train_id_labels(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "d", colours=False)
    ds = Folder("train", root=str(tmp_path / "d"), x_scale=0.001, max_depth=80.0)
    assert ds.class_names == ("road", "car", "sky") and len(ds) == 3
    item = ds[1]
    assert_item(item, H, W, 1, 3)
    raw = written["train_001"]["raw"]
    expected = np.clip(raw * 0.001 / 80.0, 0, 1)
    np.testing.assert_allclose(item["x"][0].numpy(), expected, rtol=1e-6, atol=1e-7)
    assert item["x"][0, 0, 1] == 0  # invalid stays 0
    assert torch.equal(item["label"], torch.from_numpy(written["train_001"]["ids"]))


def test_colour_labels_map_to_train_ids_and_unknown_colours_are_ignored(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "c", colours=True)
    ds = Folder("eval", root=str(tmp_path / "c"), x_scale=0.001, size=[8, 12])
    item = ds[0]
    assert item["rgb"].shape == (3, 8, 12) and item["label"].shape == (H, W)  # native labels
    assert torch.equal(item["label"], torch.from_numpy(written["val_000"]["ids"]))


def test_disparity_files_give_depth_with_the_focal_length_and_baseline(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "p", colours=False)
    ds = Folder("train", root=str(tmp_path / "p"), x_kind="disparity", x_scale=1 / 256,
                modality="inverse_depth", intrinsics=[700.0, 700.0, 11.5, 7.5], baseline=0.5)
    raw = written["train_000"]["raw"].astype(np.float64)
    depth = np.where(raw > 0, 700.0 * 0.5 / np.where(raw > 0, raw / 256, 1), 0)
    expected = np.where(raw > 0, np.clip(1.0 / np.where(raw > 0, depth, 1), 0, 1), 0)
    np.testing.assert_allclose(ds[0]["x"][0].numpy(), expected, rtol=1e-5)


def test_normals_files_are_read_as_they_are(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "n", colours=False, x_kind="normals")
    ds = Folder("train", root=str(tmp_path / "n"), x_kind="normals", modality="normals")
    np.testing.assert_allclose(ds[2]["x"].numpy(), written["train_002"]["raw"].transpose(2, 0, 1),
                               rtol=1e-6)
    with pytest.raises(KdbenchError, match="x_kind normals needs modality: normals"):
        Folder("train", root=str(tmp_path / "n"), x_kind="normals")


def test_mistakes_name_the_file_or_option(tmp_path: Path) -> None:
    write_tree(tmp_path / "e", colours=False)
    root = tmp_path / "e"
    with pytest.raises(KdbenchError, match="needs intrinsics"):
        Folder("train", root=str(root), modality="normals")
    with pytest.raises(KdbenchError, match="needs baseline"):
        Folder("train", root=str(root), x_kind="disparity", intrinsics=[1, 1, 1, 1])
    with pytest.raises(KdbenchError, match="root option is required"):
        Folder("train")
    (root / "train" / "labels" / "train_001.png").unlink()
    with pytest.raises(KdbenchError, match="train_001.png not found; expected the layout"):
        Folder("train", root=str(root))
    save_png(root / "train" / "labels" / "train_001.png", np.full((H, W), 7, np.uint8))
    with pytest.raises(KdbenchError, match="train_001.png: label value 7 is not a train id"):
        Folder("train", root=str(root))[1]
    (root / "classes.txt").write_text("road 1 2\n")
    with pytest.raises(KdbenchError, match=r"classes.txt:1: expected 'name' or 'name r g b'"):
        Folder("train", root=str(root))


@pytest.mark.slow
def test_a_suite_trains_and_evaluates_on_a_folder_data_set(tmp_path: Path) -> None:
    write_tree(tmp_path / "mine", colours=True)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mine",
        "datasets": {"folder": {"root": str(tmp_path / "mine"), "x_scale": 0.001}},
        "students": ["test_resnet"], "methods": ["none"],
        "train": {"steps": 2, "batch_size": 2, "workers": 0},
    }))
    (teacher,) = load_suite(path).teachers
    record = train_run(teacher, tmp_path / "results")
    assert record["status"] == "complete", record.get("traceback")
    assert set(record["metrics"]["per_class_iou"]) == set(COLOURS)
    assert record["metrics"]["pixels"] == 2 * (H * W - 1)
