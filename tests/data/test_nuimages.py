"""nuImages on a tiny tree of its JSON tables and images: the devkit's mask (category indices,
surfaces then objects in token order, null masks skipped), key frames only, train ids, errors,
a run. The expected masks are painted here from the boxes, independently of the RLE reader."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.data.nuimages import NuImages
from kdbench.data.nuimages_tables import category_indices
from kdbench.errors import KdbenchError
from tests.data.rgbx import SIZES, assert_scored, rng_image, train_teacher_and_kd

coco_mask = pytest.importorskip("pycocotools.mask")

CATEGORIES = ["vehicle.car", "animal", "vehicle.ego", "flat.driveable_surface",
              "human.pedestrian.adult"]
TRAIN_ID = {"animal": 1, "human.pedestrian.adult": 2, "vehicle.car": 3,
            "flat.driveable_surface": 4, "vehicle.ego": 255}
"""Sorted names without ego and driveable surface are 1..3, driveable surface 4, ego ignored."""


def rle(box: tuple[int, int, int, int], size: tuple[int, int]) -> dict:
    """The nuImages mask record of the box rows r0:r1, columns c0:c1."""
    mask = np.zeros(size, np.uint8)
    r0, r1, c0, c1 = box
    mask[r0:r1, c0:c1] = 1
    encoded = coco_mask.encode(np.asfortranarray(mask))
    return {"size": list(size), "counts": base64.b64encode(encoded["counts"]).decode()}


def write_nuimages(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Two versions, two key frames each (sizes SIZES[0], SIZES[1]) and one non-key frame.
    Each key frame: a driveable surface over the lower half and an ego surface over the last
    row, then objects: a car box, an animal box over part of it whose token sorts first (so
    the car, later in token order, covers the overlap), a pedestrian whose mask is null.
    Returns {sample_data token: expected train ids}."""
    rng = np.random.default_rng(seed)
    expected = {}
    for version in ("v1.0-train", "v1.0-val"):
        tables = {"category": [{"token": f"c{i}", "name": n, "description": ""}
                               for i, n in enumerate(CATEGORIES)],
                  "sample_data": [], "object_ann": [], "surface_ann": []}
        token_of = {n: f"c{i}" for i, n in enumerate(CATEGORIES)}
        for i, size in enumerate(SIZES):
            sd = f"{version}-sd{i}"
            filename = f"samples/CAM_FRONT/{sd}.jpg"
            (root / "samples" / "CAM_FRONT").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng_image(rng, size)).save(root / filename)
            tables["sample_data"] += [
                {"token": sd, "filename": filename, "is_key_frame": True,
                 "width": size[1], "height": size[0], "fileformat": "jpg"},
                {"token": f"{sd}-sweep", "filename": "samples/none.jpg", "is_key_frame": False,
                 "width": size[1], "height": size[0], "fileformat": "jpg"},
            ]
            h, w = size
            want = np.zeros(size, np.int64)
            surfaces = [("flat.driveable_surface", (h // 2, h, 0, w)),
                        ("vehicle.ego", (h - 1, h, 0, w))]
            objects = [("z-car", "vehicle.car", (2, 8, 2, 10)),
                       ("a-animal", "animal", (4, 10, 6, 14)),
                       ("m-ped", "human.pedestrian.adult", None)]
            for k, (name, box) in enumerate(surfaces):
                tables["surface_ann"].append({"token": f"{sd}-s{k}", "sample_data_token": sd,
                                              "category_token": token_of[name],
                                              "mask": rle(box, size)})
                want[box[0]:box[1], box[2]:box[3]] = TRAIN_ID[name]
            for token, name, box in objects:
                tables["object_ann"].append({"token": f"{sd}-{token}", "sample_data_token": sd,
                                             "category_token": token_of[name], "bbox": [0, 0, 1, 1],
                                             "mask": None if box is None else rle(box, size)})
            for _, name, box in sorted(objects):
                if box is not None:
                    want[box[0]:box[1], box[2]:box[3]] = TRAIN_ID[name]
            expected[sd] = want
        (root / version).mkdir(parents=True, exist_ok=True)
        for name, records in tables.items():
            (root / version / f"{name}.json").write_text(json.dumps(records))
    return expected


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "nuimages"
    return root, write_nuimages(root)


def test_category_indices_are_the_devkits() -> None:
    index = category_indices([{"name": n} for n in CATEGORIES])
    assert index == {"animal": 1, "human.pedestrian.adult": 2, "vehicle.car": 3,
                     "flat.driveable_surface": 24, "vehicle.ego": 31}


def test_key_frames_with_the_devkits_masks_as_train_ids(tree: tuple[Path, dict]) -> None:
    root, expected = tree
    data = NuImages("eval", root=str(root))
    assert data.class_names == ("background", "animal", "human.pedestrian.adult", "vehicle.car",
                                "flat.driveable_surface")
    assert len(data) == 2
    for index, record in enumerate(data.tables.key_frames):
        item = data[index]
        assert torch.equal(item["label"], torch.from_numpy(expected[record["token"]]))
        assert item["rgb"].shape[1:] == expected[record["token"]].shape


def test_missing_table_and_image_name_the_layout(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "samples/CAM_FRONT/v1.0-val-sd1.jpg").unlink()
    with pytest.raises(KdbenchError, match=r"v1\.0-val-sd1\.jpg not found; expected the layout"):
        NuImages("eval", root=str(root))
    (root / "v1.0-train" / "object_ann.json").unlink()
    with pytest.raises(KdbenchError, match=r"v1\.0-train/object_ann\.json not found; expected"):
        NuImages("train", root=str(root))


@pytest.mark.slow
def test_teacher_and_kd_student_train_end_to_end(tree, tmp_path: Path) -> None:
    root, expected = tree
    records = train_teacher_and_kd(tmp_path, "nuimages", {"root": str(root)},
                                   teacher={"kind": "rgb"})
    pixels = sum(int((v != 255).sum()) for k, v in expected.items() if k.startswith("v1.0-val"))
    for record in records:
        assert_scored(record, pixels, NuImages("eval", root=str(root)).class_names)
