"""Virtual KITTI 2 loader on a tiny tree in the official layout."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdbench.data.geometry import MAX_DISPARITY, MODALITY_CHANNELS
from kdbench.data.vkitti2 import VirtualKitti2
from kdbench.errors import KdbenchError
from kdbench.registry import DATASETS
from tests.data.trees import VKITTI2_COLORS, H, W, assert_item, write_vkitti2

SEQUENCES = {
    "Scene01/clone": "classSegmentation",  # the archives' spelling
    "Scene01/fog": "classSegmentation",
    "Scene02/clone": "classsegmentation",  # the format page's spelling
}
SCENES = ("Scene01", "Scene02")
"""The scenes the tree holds (the default, all five, would fail as missing)."""
CLASS_OF_COLOUR = {
    colour: (255 if name == "Undefined" else index)
    for index, (name, colour) in enumerate(VKITTI2_COLORS)
}


def make(split: str, root: Path, **options) -> VirtualKitti2:
    """The data set on the tree's scenes unless ``scenes`` is given."""
    return VirtualKitti2(split, root=str(root), **{"scenes": SCENES, **options})


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "vkitti2"
    return root, write_vkitti2(root, SEQUENCES)


def test_registered_under_vkitti2() -> None:
    assert DATASETS.get("vkitti2") is VirtualKitti2


def test_split_is_by_scene(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    train = make("train", root)
    evaluation = make("eval", root)
    assert train.names == ["Scene01/clone/00000", "Scene01/clone/00001"]
    assert evaluation.names == ["Scene02/clone/00000", "Scene02/clone/00001"]
    both = make("train", root, scenes=("Scene01",), variations=("clone", "fog"))
    assert len(both) == 4
    assert len(make("train", root, scenes="Scene01")) == 2  # one name, as a suite may give it


@pytest.mark.parametrize("modality", sorted(MODALITY_CHANNELS))
def test_items_have_contract_shapes(tree: tuple[Path, dict], modality: str) -> None:
    root, _ = tree
    ds = make("eval", root, scenes=("Scene02",), modality=modality)
    assert ds.num_classes == 14 and ds.x_channels == MODALITY_CHANNELS[modality]
    assert_item(ds[1], H, W, MODALITY_CHANNELS[modality], 14)


@pytest.mark.parametrize("split", ["train", "eval"])  # classSegmentation / classsegmentation
def test_colours_map_to_classes_in_both_folder_spellings(tree: tuple[Path, dict], split) -> None:
    root, written = tree
    ds = make(split, root)
    label = ds[0]["label"].numpy()
    colours = written[ds.names[0]]["colours"]
    assert label[0, 0] == 5  # Road
    assert label[0, 1] == 255  # Undefined
    assert label[0, 2] == 255  # a colour colors.txt does not list
    for v in range(H):
        for u in range(W):
            assert label[v, u] == CLASS_OF_COLOUR.get(tuple(int(c) for c in colours[v, u]), 255)


def test_depth_is_centimetres_and_65535_is_far(tree: tuple[Path, dict]) -> None:
    root, written = tree
    frame = make("train", root).frame(1)
    raw = written["Scene01/clone/00001"]["depth_raw"]
    assert frame.depth[0, 0] == pytest.approx(12.34)
    assert math.isinf(frame.depth[0, 1])
    for v in range(H):
        for u in range(W):
            expected = math.inf if raw[v, u] == 65535 else float(raw[v, u]) / 100.0
            assert frame.depth[v, u] == pytest.approx(expected, rel=1e-6)


def test_intrinsics_are_the_row_of_the_frame_and_camera_0(tree: tuple[Path, dict]) -> None:
    root, written = tree
    ds = make("train", root)
    for index, name in enumerate(ds.names):
        k = ds.frame(index).intrinsics
        fx = written[name]["fx"]
        assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((fx, fx + 1, 620.5, 187.0))


def test_disparity_modality_uses_the_vkitti2_baseline(tree: tuple[Path, dict]) -> None:
    root, written = tree
    x = make("train", root, modality="disparity")[0]["x"][0].numpy()
    fx = written["Scene01/clone/00000"]["fx"]
    assert x[0, 0] == pytest.approx(fx * 0.532725 / 12.34 / MAX_DISPARITY, rel=1e-5)
    assert x[0, 1] == 0.0  # sky: zero disparity


def test_size_keeps_labels_in_the_class_set(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    ds = make("train", root, size=(5, 9), modality="normals")
    assert_item(ds[0], 5, 9, 3, 14)


def test_missing_root_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(KdbenchError) as err:
        VirtualKitti2("train", root=str(tmp_path / "none"))
    message = str(err.value)
    assert str(tmp_path / "none") in message and "frames/{rgb,depth,classSegmentation}" in message
    assert "naverlabs" in message


def test_missing_scene_names_its_folder(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    with pytest.raises(KdbenchError, match=str(root / "Scene18/clone/frames/rgb/Camera_0")):
        make("train", root, scenes=("Scene01", "Scene18"))


def test_missing_colour_table_names_it(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "Scene02/clone/colors.txt").unlink()
    with pytest.raises(KdbenchError, match=str(root / "Scene02/clone/colors.txt")):
        make("eval", root)


def test_missing_class_folder_names_the_expected_path(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    shutil.rmtree(root / "Scene01/clone/frames/classSegmentation")
    with pytest.raises(KdbenchError, match="Scene01/clone/frames/classSegmentation/Camera_0"):
        make("train", root)


def test_missing_depth_frame_names_it(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    missing = root / "Scene01/clone/frames/depth/Camera_0/depth_00001.png"
    missing.unlink()
    with pytest.raises(KdbenchError, match=str(missing)):
        make("train", root)


def test_unknown_category_in_colour_table_is_an_error(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    path = root / "Scene01/clone/colors.txt"
    path.write_text(path.read_text() + "Bus 1 2 3\n")
    with pytest.raises(KdbenchError, match="Bus"):
        make("train", root)


def test_empty_split_is_an_error(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    with pytest.raises(KdbenchError, match="empty"):
        make("eval", root, scenes=("Scene01",))


def test_rgb_is_the_jpeg(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    frame = make("train", root).frame(0)
    assert frame.rgb.shape == (H, W, 3) and frame.rgb.dtype == np.float32
    assert 0.0 <= frame.rgb.min() and frame.rgb.max() <= 1.0
