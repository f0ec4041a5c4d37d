"""Virtual KITTI 2: synthetic clones of five KITTI sequences with exact depth and class labels.

Layout under the root (default ``$KDBENCH_DATA/vkitti2``; the rgb, depth, classSegmentation and
textgt archives unpack into the same ``SceneXX/<variation>/`` tree), left camera only::

    SceneXX/<variation>/frames/rgb/Camera_0/rgb_NNNNN.jpg
    SceneXX/<variation>/frames/depth/Camera_0/depth_NNNNN.png                uint16 centimetres
    SceneXX/<variation>/frames/classSegmentation/Camera_0/classgt_NNNNN.png  RGB colour codes
    SceneXX/<variation>/colors.txt                                           colour -> category
    SceneXX/<variation>/intrinsic.txt                                        per-frame K

Scenes Scene01, Scene02, Scene06, Scene18, Scene20; variations clone, fog, morning, overcast,
rain, sunset, 15-deg-left/right, 30-deg-left/right. Formats, checked against the official page
(europe.naverlabs.com, "Virtual KITTI 2") as reproduced by public loaders, and its textgt files:

- depth: uint16 PNG in centimetres, z = v/100 m; the far plane (sky) is stored as 65535, which
  becomes z = +inf, the convention of :mod:`kdbench.data.geometry` and synthdrive for sky (0 in
  every modality: the true limit of disparity and inverse depth); v = 0 would be invalid;
- class labels: 8-bit RGB, each colour one category; ``colors.txt`` is a header line
  ``Category r g b`` and one line ``<Name> r g b`` per category. The archive spells the folder
  ``classSegmentation``, the format page ``classsegmentation``: both are accepted;
- ``intrinsic.txt``: header ``frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]`` and one row per
  frame and camera (f_x ≈ 725.0087, c_x = 620.5, c_y = 187.0 at 1242x375); the row of
  (frame, camera 0) is used;
- stereo baseline (Camera_0 -> Camera_1) B = 0.532725 m, as used by stereo loaders of vKITTI2;
  only the ``disparity`` modality needs it.

Classes: the 14 categories of ``colors.txt`` in its order (:data:`VKITTI2_CLASSES`);
"Undefined" and any colour not listed in the scene's ``colors.txt`` are IGNORE_INDEX.

Split (fixed, by scene so that no geometry is shared): "eval" = Scene02 and Scene06 (about a
quarter of the frames), "train" = Scene01, Scene18 and Scene20, each restricted to the
``scenes`` option (default all five). ``variations`` defaults to ("clone",).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdbench.data.base import IGNORE_INDEX
from kdbench.data.loading import (
    FolderDataset,
    Frame,
    Intrinsics,
    check_same_size,
    read_rgb,
    read_rgb_uint8,
    read_uint16,
)
from kdbench.errors import KdbenchError
from kdbench.registry import register_dataset

SCENES = ("Scene01", "Scene02", "Scene06", "Scene18", "Scene20")
EVAL_SCENES = ("Scene02", "Scene06")
"""The scenes of the eval split; the other scenes are the train split."""

VKITTI2_CLASSES: tuple[str, ...] = (
    "Terrain",
    "Sky",
    "Tree",
    "Vegetation",
    "Building",
    "Road",
    "GuardRail",
    "TrafficSign",
    "TrafficLight",
    "Pole",
    "Misc",
    "Truck",
    "Car",
    "Van",
)
"""Train ids 0..13, in the order of the official ``colors.txt``."""

UNDEFINED = "Undefined"
BASELINE = 0.532725
"""Metres between Camera_0 and Camera_1."""
CAMERA = "Camera_0"
CLASS_FOLDERS = ("classSegmentation", "classsegmentation")
DEPTH_SCALE = 100.0
"""Depth PNG units per metre (centimetres)."""
FAR = 65535
"""Depth PNG value of the far plane (sky): infinite depth."""


def _colour_key(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) int64 keys r·2^16 + g·2^8 + b."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_colors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``colors.txt`` -> (sorted colour keys, their train ids) for :func:`colours_to_labels`.

    Each category name must be one of :data:`VKITTI2_CLASSES` or "Undefined" (-> IGNORE_INDEX).
    """
    keys: list[int] = []
    ids: list[int] = []
    lines = path.read_text().split("\n")
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        try:
            name, r, g, b = parts[0], *(int(v) for v in parts[1:])
        except ValueError:
            name, r, g, b = "", -1, -1, -1
        if not (name and 0 <= r <= 255 and 0 <= g <= 255 and 0 <= b <= 255):
            raise KdbenchError(f"{path}:{number}: expected '<Category> r g b', got {line!r}")
        if name != UNDEFINED and name not in VKITTI2_CLASSES:
            known = ", ".join((*VKITTI2_CLASSES, UNDEFINED))
            raise KdbenchError(f"{path}:{number}: unknown category {name!r}; known: {known}")
        keys.append(int(_colour_key(np.array([r, g, b]))))
        ids.append(IGNORE_INDEX if name == UNDEFINED else VKITTI2_CLASSES.index(name))
    order = np.argsort(keys)
    return np.asarray(keys, dtype=np.int64)[order], np.asarray(ids, dtype=np.int64)[order]


def colours_to_labels(rgb: np.ndarray, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colour-coded labels -> (H, W) int64 train ids; unknown colours ignored.

    ``label[p] = ids[k]`` where ``keys[k]`` is the colour key of pixel p, else IGNORE_INDEX
    (``keys`` sorted ascending, as :func:`read_colors` returns them).
    """
    pixel = _colour_key(rgb)
    if keys.size == 0:
        return np.full(pixel.shape, IGNORE_INDEX, dtype=np.int64)
    position = np.clip(np.searchsorted(keys, pixel), 0, keys.size - 1)
    return np.where(keys[position] == pixel, ids[position], IGNORE_INDEX).astype(np.int64)


def read_intrinsics(path: Path) -> dict[int, Intrinsics]:
    """``intrinsic.txt`` -> {frame: intrinsics of Camera_0} (rows ``frame cam fx fy cx cy``)."""
    table: dict[int, Intrinsics] = {}
    for number, line in enumerate(path.read_text().split("\n")[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        try:
            frame, camera = int(parts[0]), int(parts[1])
            fx, fy, cx, cy = (float(v) for v in parts[2:6])
        except (ValueError, IndexError) as err:
            raise KdbenchError(
                f"{path}:{number}: expected 'frame cameraID fx fy cx cy', got {line!r}"
            ) from err
        if camera == 0:
            table[frame] = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy)
    return table


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    """A name or a list of names -> a tuple of names (a suite may give ``scenes: Scene01``)."""
    return (value,) if isinstance(value, str) else tuple(value)


@register_dataset("vkitti2", "Virtual KITTI 2 (synthetic, 14 classes, exact depth)")
class VirtualKitti2(FolderDataset):
    """Virtual KITTI 2, left camera, colour-coded classes and exact depth (module docstring).

    Options besides the common ones (:class:`~kdbench.data.loading.FolderDataset`):
    ``scenes`` (default all five) and ``variations`` (default ("clone",)).
    """

    folder = "vkitti2"
    layout = (
        "SceneXX/<variation>/frames/{rgb,depth,classSegmentation}/Camera_0/"
        "{rgb_NNNNN.jpg,depth_NNNNN.png,classgt_NNNNN.png} (or classsegmentation) and "
        "SceneXX/<variation>/{colors.txt,intrinsic.txt}"
    )
    source = (
        "the Virtual KITTI 2 page, https://europe.naverlabs.com/research/computer-vision/"
        "proxy-virtual-worlds-vkitti-2/ (archives vkitti_2.0.3_rgb, _depth, _classSegmentation, "
        "_textgt)"
    )
    class_names = VKITTI2_CLASSES

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: str = "depth",
        size: Sequence[int] | None = None,
        max_depth: float = 80.0,
        scenes: Sequence[str] = SCENES,
        variations: Sequence[str] = ("clone",),
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size, max_depth=max_depth)
        scenes, variations = _names(scenes), _names(variations)
        chosen = [s for s in scenes if (s in EVAL_SCENES) == (split == "eval")]
        if not chosen or not variations:
            raise KdbenchError(
                f"vkitti2: split {split!r} is empty: scenes={list(scenes)}, "
                f"variations={list(variations)} (eval scenes are {list(EVAL_SCENES)})"
            )
        self._samples: list[tuple[Path, Path, str]] = []  # (variation folder, class folder, NNNNN)
        self._colors: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        self._intrinsics: dict[Path, dict[int, Intrinsics]] = {}
        for scene in chosen:
            for variation in variations:
                self._add_sequence(self.root / scene / variation)
        self.names = [f"{d.parent.name}/{d.name}/{n}" for d, _, n in self._samples]

    def _add_sequence(self, folder: Path) -> None:
        """Check and index every frame of one SceneXX/<variation> folder."""
        rgb_dir = folder / "frames" / "rgb" / CAMERA
        if not rgb_dir.is_dir():
            raise self.missing(rgb_dir, "folder")
        matches = (re.fullmatch(r"rgb_(\d+)\.jpg", p.name) for p in rgb_dir.iterdir())
        frames = sorted(m.group(1) for m in matches if m)
        if not frames:
            raise self.missing(rgb_dir / "rgb_00000.jpg")
        class_dir = self._class_folder(folder)
        self._colors[folder] = read_colors(self.require(folder / "colors.txt"))
        intrinsics = read_intrinsics(self.require(folder / "intrinsic.txt"))
        for frame in frames:
            self.require(folder / "frames" / "depth" / CAMERA / f"depth_{frame}.png")
            self.require(class_dir / f"classgt_{frame}.png")
            if int(frame) not in intrinsics:
                raise KdbenchError(
                    f"{folder / 'intrinsic.txt'}: no row for frame {int(frame)}, camera 0"
                )
            self._samples.append((folder, class_dir, frame))
        self._intrinsics[folder] = intrinsics

    def _class_folder(self, folder: Path) -> Path:
        """``frames/classSegmentation/Camera_0`` or the ``classsegmentation`` spelling."""
        for spelling in CLASS_FOLDERS:
            candidate = folder / "frames" / spelling / CAMERA
            if candidate.is_dir():
                return candidate
        raise self.missing(folder / "frames" / CLASS_FOLDERS[0] / CAMERA, "folder")

    def frame(self, index: int) -> Frame:
        """Sample ``index``: RGB, depth = v/100 m (65535 -> inf), labels via colors.txt."""
        folder, class_dir, frame = self._samples[index]
        files = [
            folder / "frames" / "rgb" / CAMERA / f"rgb_{frame}.jpg",
            folder / "frames" / "depth" / CAMERA / f"depth_{frame}.png",
            class_dir / f"classgt_{frame}.png",
        ]
        rgb = read_rgb(files[0])
        raw = read_uint16(files[1])
        depth = np.where(raw == FAR, np.inf, raw / DEPTH_SCALE).astype(np.float32)
        label = colours_to_labels(read_rgb_uint8(files[2]), *self._colors[folder])
        check_same_size(files, [rgb, depth, label])
        return Frame(rgb, depth, label, self._intrinsics[folder][int(frame)], BASELINE)
