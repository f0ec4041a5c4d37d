"""Check kdbench's nuImages reader against the official nuscenes-devkit's ``get_segmentation``.

The devkit pins numpy < 2, so this runs in an environment of its own, without torch::

    python -m venv /tmp/devkit && /tmp/devkit/bin/pip install "numpy<2" nuscenes-devkit
    /tmp/devkit/bin/python ci/nuimages_devkit_check.py            # a random tree it writes
    /tmp/devkit/bin/python ci/nuimages_devkit_check.py ROOT v1.0-val   # real data

kdbench/data/nuimages_tables.py is loaded from its file (it imports no torch). The random tree
has every nuImages category, key frames of two sizes with overlapping surface and object masks
(some null), and non-key frames; every key frame's mask must equal the devkit's, pixel for pixel.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from nuimages import NuImages
from PIL import Image
from pycocotools import mask as coco_mask

READER = Path(__file__).parents[1] / "kdbench" / "data" / "nuimages_tables.py"
CATEGORIES = (
    "animal", "flat.driveable_surface", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone",
    "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy", "vehicle.bus.rigid",
    "vehicle.car", "vehicle.construction", "vehicle.ego", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
)
TABLES = ("attribute", "calibrated_sensor", "ego_pose", "log", "sample", "sensor")


def load_reader():  # noqa: ANN201 - the module object
    spec = importlib.util.spec_from_file_location("nuimages_tables", READER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_mask(rng: np.random.Generator, size: tuple[int, int]) -> dict | None:
    if rng.random() < 0.15:
        return None
    mask = (rng.random(size) < rng.uniform(0.05, 0.6)).astype(np.uint8)
    encoded = coco_mask.encode(np.asfortranarray(mask))
    return {"size": list(size), "counts": base64.b64encode(encoded["counts"]).decode()}


def write_tree(root: Path, version: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    categories = [{"token": f"cat{i:02d}", "name": n, "description": ""}
                  for i, n in enumerate(rng.permutation(CATEGORIES).tolist())]
    tables: dict[str, list] = {"category": categories, "sample_data": [], "object_ann": [],
                               "surface_ann": [], **{t: [] for t in TABLES}}
    (root / "samples" / "CAM_FRONT").mkdir(parents=True, exist_ok=True)
    for i in range(6):
        size = ((30, 40), (24, 50))[i % 2]
        token = f"sd{rng.integers(1 << 30):08x}"
        filename = f"samples/CAM_FRONT/{token}.jpg"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / filename)
        tables["sample_data"].append({"token": token, "filename": filename, "width": size[1],
                                      "height": size[0], "is_key_frame": i < 5,
                                      "fileformat": "jpg", "sample_token": f"s{i}"})
        for kind, count in (("surface_ann", 3), ("object_ann", 8)):
            for _ in range(count):
                category = categories[int(rng.integers(len(categories)))]
                tables[kind].append({"token": f"{rng.integers(1 << 40):010x}",
                                     "sample_data_token": token,
                                     "category_token": category["token"],
                                     "mask": random_mask(rng, size), "bbox": [0, 0, 1, 1],
                                     "attribute_tokens": []})
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(records))


def compare(root: Path, version: str) -> int:
    reader = load_reader().NuImagesTables(root, version)
    devkit = NuImages(dataroot=str(root), version=version, lazy=True, verbose=False)
    for record in reader.key_frames:
        ours = reader.semantic(record)
        theirs, _ = devkit.get_segmentation(record["token"])
        if not np.array_equal(ours, theirs):
            print(f"MISMATCH at {record['token']}: {(ours != theirs).sum()} pixels")
            return 1
    print(f"{len(reader.key_frames)} key frames of {root}/{version}: identical to the devkit")
    return 0


def main() -> int:
    if len(sys.argv) == 3:
        return compare(Path(sys.argv[1]), sys.argv[2])
    with tempfile.TemporaryDirectory() as folder:
        write_tree(Path(folder), "v1.0-val")
        return compare(Path(folder), "v1.0-val")


if __name__ == "__main__":
    sys.exit(main())
