"""Writers of tiny data set trees in exactly the on-disk layouts the loaders read.

Each writer returns the raw arrays it wrote, so tests compute expected values from them
independently of the loaders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

H, W = 16, 24

KITTI_FX, KITTI_FY, KITTI_CX, KITTI_CY = 721.5377, 720.0, 609.5593, 172.854
CITYSCAPES_CAMERA = {
    "fx": 2262.52, "fy": 2265.30, "u0": 1096.98, "v0": 513.137, "baseline": 0.209313
}
VKITTI2_COLORS = (
    ("Terrain", (210, 0, 200)),
    ("Sky", (90, 200, 255)),
    ("Tree", (0, 199, 0)),
    ("Vegetation", (90, 240, 0)),
    ("Building", (140, 140, 140)),
    ("Road", (100, 60, 100)),
    ("GuardRail", (250, 100, 255)),
    ("TrafficSign", (255, 255, 0)),
    ("TrafficLight", (200, 200, 0)),
    ("Pole", (255, 130, 0)),
    ("Misc", (80, 80, 80)),
    ("Truck", (160, 60, 60)),
    ("Car", (255, 127, 80)),
    ("Van", (0, 139, 139)),
    ("Undefined", (0, 0, 0)),
)
"""The official vKITTI2 colors.txt categories and colours."""


def save_png(path: Path, array: np.ndarray) -> None:
    """Save uint8 (H, W) / (H, W, 3) or uint16 (H, W) as PNG, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def write_kitti(root: Path, ids: range, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """KITTI semantics + stereo 2015 tree; returns {id: {"label_ids", "disparity_raw"}}.

    Pixel (0, 0) is label id 7 (road) with disparity 10 px (raw 2560); pixel (0, 1) is label
    id 0 (unlabeled) with raw 0 (invalid); other pixels random.
    """
    rng = np.random.default_rng(seed)
    written = {}
    for i in ids:
        name = f"{i:06d}"
        label_ids = rng.integers(0, 34, size=(H, W), dtype=np.uint8)
        label_ids[0, 0], label_ids[0, 1] = 7, 0
        raw = rng.integers(1, 100 * 256, size=(H, W)).astype(np.uint16)
        raw[rng.random((H, W)) < 0.3] = 0
        raw[0, 0], raw[0, 1] = 2560, 0
        save_png(root / "data_semantics/training/image_2" / f"{name}_10.png", _rgb(rng))
        save_png(root / "data_semantics/training/semantic" / f"{name}_10.png", label_ids)
        save_png(root / "data_scene_flow/training/disp_occ_0" / f"{name}_10.png", raw)
        calib = root / "data_scene_flow_calib/training/calib_cam_to_cam" / f"{name}.txt"
        calib.parent.mkdir(parents=True, exist_ok=True)
        calib.write_text(
            "calib_time: 09-Jan-2012 13:57:47\n"
            "S_rect_02: 1.242000e+03 3.750000e+02\n"
            f"P_rect_02: {KITTI_FX:e} 0 {KITTI_CX:e} 4.485728e+01 0 {KITTI_FY:e} {KITTI_CY:e} "
            "2.163791e-01 0 0 1 2.745884e-03\n"
            "P_rect_03: 7.215377e+02 0 6.095593e+02 -3.395242e+02 0 7.215377e+02 1.728540e+02 "
            "2.199936e+00 0 0 1 2.729905e-03\n"
        )
        written[name] = {"label_ids": label_ids, "disparity_raw": raw}
    return written


def write_vkitti2(
    root: Path, sequences: dict[str, str], frames: int = 2, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """vKITTI2 tree; ``sequences`` maps "SceneXX/<variation>" to the class-folder spelling.

    Returns {"SceneXX/<variation>/NNNNN": {"colours", "depth_raw", "fx"}}. Frame k has
    f_x = 725.0087 - 10 k in intrinsic.txt (camera 1 rows hold a different value). Pixel (0, 0)
    is Road with 1234 cm, pixel (0, 1) Undefined with 65535 (far), pixel (0, 2) a colour
    missing from colors.txt.
    """
    rng = np.random.default_rng(seed)
    palette = np.array([c for _, c in VKITTI2_COLORS], dtype=np.uint8)
    written = {}
    for sequence, class_folder in sequences.items():
        folder = root / sequence
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "colors.txt").write_text(
            "Category r g b\n" + "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in VKITTI2_COLORS)
        )
        rows = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
        for k in range(frames):
            fx = 725.0087 - 10 * k
            rows += [f"{k} 0 {fx} {fx + 1} 620.5 187", f"{k} 1 999 999 1 1"]
        (folder / "intrinsic.txt").write_text("\n".join(rows) + "\n")
        for k in range(frames):
            n = f"{k:05d}"
            colours = palette[rng.integers(0, len(palette), size=(H, W))]
            colours[0, 0], colours[0, 1], colours[0, 2] = (100, 60, 100), (0, 0, 0), (1, 2, 3)
            depth = rng.integers(1, 65535, size=(H, W)).astype(np.uint16)
            depth[0, 0], depth[0, 1] = 1234, 65535
            frames_dir = folder / "frames"
            rgb_path = frames_dir / "rgb/Camera_0" / f"rgb_{n}.jpg"
            rgb_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_rgb(rng)).save(rgb_path, quality=95)
            save_png(frames_dir / "depth/Camera_0" / f"depth_{n}.png", depth)
            save_png(frames_dir / class_folder / "Camera_0" / f"classgt_{n}.png", colours)
            written[f"{sequence}/{n}"] = {
                "colours": colours, "depth_raw": depth, "fx": 725.0087 - 10 * k
            }
    return written


def write_cityscapes(
    root: Path, frames: dict[str, list[str]], seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Cityscapes tree; ``frames`` maps "train"/"val" to stems "<city>_<seq>_<frame>".

    Returns {stem: {"label_ids", "disparity_raw"}}. Pixel (0, 0) has label id 7 (road) and
    p = 2561 (d = 10 px); pixel (0, 1) id 0 with p = 0; pixel (0, 2) p = 1 (d = 0).
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, stems in frames.items():
        for stem in stems:
            city = stem.split("_")[0]
            label_ids = rng.integers(0, 34, size=(H, W), dtype=np.uint8)
            label_ids[0, 0], label_ids[0, 1] = 7, 0
            raw = rng.integers(0, 65536, size=(H, W)).astype(np.uint16)
            raw[0, 0], raw[0, 1], raw[0, 2] = 2561, 0, 1
            where = Path(split) / city
            save_png(root / "leftImg8bit" / where / f"{stem}_leftImg8bit.png", _rgb(rng))
            save_png(root / "gtFine" / where / f"{stem}_gtFine_labelIds.png", label_ids)
            save_png(root / "disparity" / where / f"{stem}_disparity.png", raw)
            c = CITYSCAPES_CAMERA
            camera = {
                "extrinsic": {"baseline": c["baseline"], "pitch": 0.038, "roll": 0.0, "x": 1.7,
                              "y": 0.1, "yaw": -0.0195, "z": 1.22},
                "intrinsic": {"fx": c["fx"], "fy": c["fy"], "u0": c["u0"], "v0": c["v0"]},
            }
            camera_path = root / "camera" / where / f"{stem}_camera.json"
            camera_path.parent.mkdir(parents=True, exist_ok=True)
            camera_path.write_text(json.dumps(camera))
            written[stem] = {"label_ids": label_ids, "disparity_raw": raw}
    return written


CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
"""Label id -> train id, typed from cityscapesScripts' labels.py for the tests (independent of
the loader's table); every other id is ignored (255)."""


def assert_item(item: dict, height: int, width: int, channels: int, num_classes: int) -> None:
    """An item has the contract's keys, shapes and dtypes, finite values and valid labels."""
    assert set(item) == {"rgb", "x", "label"}
    assert item["rgb"].shape == (3, height, width) and item["rgb"].dtype == torch.float32
    assert item["x"].shape == (channels, height, width) and item["x"].dtype == torch.float32
    assert item["label"].shape == (height, width) and item["label"].dtype == torch.int64
    assert torch.isfinite(item["rgb"]).all() and torch.isfinite(item["x"]).all()
    valid = set(range(num_classes)) | {255}
    assert set(item["label"].unique().tolist()) <= valid
