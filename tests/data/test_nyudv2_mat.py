"""NYUDv2 from its official files (``source: official``): a tiny MATLAB v7.3 (HDF5) file in the
official transposed layout, splits.mat and classMapping40.mat written by the test; the
40-class mapping, 1-based split numbers, errors, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from kdbench.data.base import normalize_rgb
from kdbench.data.nyudv2 import NYUDv2
from kdbench.errors import KdbenchError
from tests.data.rgbx import assert_scored, train_teacher_and_kd

h5py = pytest.importorskip("h5py")

H, W, N = 16, 24, 4
TRAIN, TEST = [1, 3], [4, 2]


def write_official(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """N images, stored as MATLAB writes them to HDF5 (column-major: (N, C, W, H)); raw labels
    0..894 with (0, 0) = 0; mapClass sends classes 1..10 to 0 (unmapped). Returns the arrays in
    (N, H, W[, C]) order and mapClass."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 12.0, (N, H, W)).astype(np.float32)
    depth[:, 0, 1] = 0.0
    raw = rng.integers(0, 895, (N, H, W)).astype(np.uint16)
    raw[:, 0, 0] = 0
    map_class = rng.integers(1, 41, 894)
    map_class[:10] = 0
    root.mkdir(parents=True)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as f:
        f["images"] = rgb.transpose(0, 3, 2, 1)
        f["depths"] = depth.transpose(0, 2, 1)
        f["labels"] = raw.transpose(0, 2, 1)
    savemat(root / "splits.mat", {"trainNdxs": np.array(TRAIN)[:, None],
                                  "testNdxs": np.array(TEST)[:, None]})
    savemat(root / "classMapping40.mat", {"mapClass": map_class[None, :]})
    return {"rgb": rgb, "depth": depth, "raw": raw, "map": map_class}


def train_ids(raw: np.ndarray, map_class: np.ndarray) -> np.ndarray:
    """Raw 0..894 -> train ids by mapClass, pixel by pixel (0 or an unmapped class: 255)."""
    out = np.full(raw.shape, 255, np.int64)
    for (r, c), k in np.ndenumerate(raw):
        if k > 0 and map_class[k - 1] > 0:
            out[r, c] = map_class[k - 1] - 1
    return out


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "nyudv2"
    return root, write_official(root)


def test_split_numbers_images_depth_and_the_40_class_mapping(tree: tuple[Path, dict]) -> None:
    root, w = tree
    data = NYUDv2("eval", root=str(root), source="official", max_depth=8.0)
    assert data.names == ["4", "2"]
    for index, number in enumerate(TEST):
        item = data[index]
        assert torch.allclose(item["rgb"], normalize_rgb(w["rgb"][number - 1]))
        want_x = np.clip(w["depth"][number - 1].astype(np.float64) / 8.0, 0, 1)
        assert np.allclose(item["x"][0].numpy(), want_x, atol=1e-6)
        want = train_ids(w["raw"][number - 1], w["map"])
        assert torch.equal(item["label"], torch.from_numpy(want))


def test_missing_files_and_hha_are_one_line_errors(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    with pytest.raises(KdbenchError, match="source official has depth only"):
        NYUDv2("train", root=str(root), source="official", modality="hha")
    with pytest.raises(KdbenchError, match=r"train\.txt not found; expected the layout"):
        NYUDv2("train", root=str(root))
    (root / "classMapping40.mat").unlink()
    with pytest.raises(KdbenchError, match=r"classMapping40\.mat not found; expected the layout"):
        NYUDv2.check_available({"root": str(root), "source": "official"})
    with pytest.raises(KdbenchError, match=r"classMapping40\.mat not found; expected the layout"):
        NYUDv2("train", root=str(root), source="official")


@pytest.mark.slow
def test_teacher_and_kd_student_train_end_to_end(tree, tmp_path: Path) -> None:
    root, w = tree
    records = train_teacher_and_kd(tmp_path, "nyudv2", {"root": str(root), "source": "official"})
    pixels = sum(int((train_ids(w["raw"][n - 1], w["map"]) != 255).sum()) for n in TEST)
    for record in records:
        assert_scored(record, pixels, NYUDv2.class_names)
