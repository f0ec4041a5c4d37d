"""``folder``: a user's own RGB-X data set in a plain folder layout, with no code to write.

Layout under ``root``::

    classes.txt                      one class per line, in train-id order: ``name`` or
                                     ``name r g b`` (colours: for colour-coded label PNGs)
    train/rgb/<name>.png|.jpg        8-bit colour images
    train/x/<name>.png|.npy          the geometric modality (``x_kind``), same size as rgb
    train/labels/<name>.png          labels, same size as rgb
    val/...                          the eval split, same sub-folders

- ``x`` files: a 16-bit single-channel PNG whose value times ``x_scale`` is the quantity
  (e.g. ``x_scale: 0.001`` for depth in millimetres, ``1/256`` for KITTI-style disparity), or
  a ``.npy`` array: (H, W) depth in metres or disparity in pixels (times ``x_scale``), or
  (H, W, 3) unit surface normals (camera frame, x right, y down, z forward) for
  ``x_kind: normals``. 0 (or a non-finite value) marks an invalid pixel.
- ``labels``: a single-channel 8-bit PNG of train ids 0 .. K−1, 255 = ignored; or, when every
  line of ``classes.txt`` gives a colour, an RGB PNG whose colours are mapped to train ids
  (unlisted colours are ignored).
- ``x_kind``: what the x files hold, ``depth`` (metres), ``disparity`` (pixels) or
  ``normals``; ``modality``: what the network reads (:data:`MODALITY_CHANNELS`), computed from
  the depth as for the other data sets (depth = f_x·B/d for disparity files). ``intrinsics``
  [f_x, f_y, c_x, c_y] in pixels and ``baseline`` in metres are needed only where the geometry
  needs them (normals or disparity from depth, depth from disparity); normals files need
  ``modality: normals``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdbench.data.base import IGNORE_INDEX
from kdbench.data.geometry import disparity_to_depth
from kdbench.data.loading import (
    FolderDataset,
    Frame,
    Intrinsics,
    check_same_size,
    read_rgb,
    read_rgb_uint8,
    read_uint8,
    read_uint16,
)
from kdbench.errors import KdbenchError
from kdbench.registry import register_dataset

SPLIT_FOLDERS = {"train": "train", "eval": "val"}
X_KINDS = ("depth", "disparity", "normals")
RGB_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_classes(path: Path) -> tuple[tuple[str, ...], np.ndarray | None]:
    """``classes.txt`` -> (names, (K, 3) uint8 colours or None if no line gives one).

    Blank lines and lines starting with ``#`` are skipped; colours must be given on every line
    or on none.
    """
    names: list[str] = []
    colours: list[tuple[int, ...]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        values = parts[1:]
        ok = len(values) in (0, 3) and all(v.isdigit() and int(v) <= 255 for v in values)
        if not ok:
            raise KdbenchError(f"{path}:{number}: expected 'name' or 'name r g b', got {line!r}")
        names.append(parts[0])
        if values:
            colours.append(tuple(int(v) for v in values))
    if not names:
        raise KdbenchError(f"{path}: no class listed; expected one 'name [r g b]' per line")
    if colours and len(colours) != len(names):
        raise KdbenchError(f"{path}: give a colour on every line or on none")
    if len(names) > IGNORE_INDEX:
        raise KdbenchError(f"{path}: at most {IGNORE_INDEX} classes (255 is the ignore label)")
    return tuple(names), (np.asarray(colours, dtype=np.uint8) if colours else None)


@register_dataset("folder", "your own RGB-X data: root/{train,val}/{rgb,x,labels} + classes.txt")
class Folder(FolderDataset):
    """A user's RGB-X data set in the folder layout of the module docstring.

    Options besides the common ones (:class:`~kdbench.data.loading.FolderDataset`; ``root`` is
    required): ``x_kind`` (depth | disparity | normals), ``x_scale`` (multiplier of the raw x
    values), ``intrinsics`` ([f_x, f_y, c_x, c_y] pixels) and ``baseline`` (metres).
    """

    folder = "folder"
    layout = "classes.txt and {train,val}/{rgb,x,labels}/<name>.{png,jpg | png,npy | png}"
    source = "your own data (README, 'Your own data set')"
    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: str = "depth",
        size: Sequence[int] | None = None,
        max_depth: float = 80.0,
        x_kind: str = "depth",
        x_scale: float = 1.0,
        intrinsics: Sequence[float] | None = None,
        baseline: float | None = None,
    ) -> None:
        if root is None:
            raise KdbenchError("folder: the root option is required (the data set's folder)")
        super().__init__(split, root=root, modality=modality, size=size, max_depth=max_depth)
        if x_kind not in X_KINDS:
            raise KdbenchError(f"folder: x_kind must be one of {X_KINDS}, got {x_kind!r}")
        if not x_scale > 0:
            raise KdbenchError(f"folder: x_scale must be > 0, got {x_scale!r}")
        if x_kind == "normals" and modality != "normals":
            raise KdbenchError("folder: x_kind normals needs modality: normals")
        self._check_geometry(x_kind, intrinsics, baseline)
        self.x_kind, self.x_scale = x_kind, float(x_scale)
        self.intrinsics = None if intrinsics is None else Intrinsics(*map(float, intrinsics))
        self.baseline = 0.0 if baseline is None else float(baseline)
        self.class_names, self.colours = read_classes(self.require(self.root / "classes.txt"))
        self.base = self.root / SPLIT_FOLDERS[split]
        rgb_dir = self.base / "rgb"
        if not rgb_dir.is_dir():
            raise self.missing(rgb_dir, "folder")
        images = sorted(p for p in rgb_dir.iterdir() if p.suffix.lower() in RGB_SUFFIXES)
        if not images:
            raise self.missing(rgb_dir / "<name>.png")
        self.names = [p.stem for p in images]
        self._rgb = {p.stem: p for p in images}
        self._x = {name: self._x_file(name) for name in self.names}
        for name in self.names:
            self.require(self.base / "labels" / f"{name}.png")

    def _check_geometry(
        self, x_kind: str, intrinsics: Sequence[float] | None, baseline: float | None
    ) -> None:
        """Ask for the intrinsics / baseline exactly where the geometry needs them."""
        if intrinsics is not None and (
            len(intrinsics) != 4 or not all(isinstance(v, (int, float)) for v in intrinsics)
        ):
            raise KdbenchError(f"folder: intrinsics must be [fx, fy, cx, cy], got {intrinsics!r}")
        needs_focal = x_kind == "disparity" or (
            x_kind == "depth" and self.modality in ("normals", "disparity")
        )
        if needs_focal and intrinsics is None:
            raise KdbenchError(
                f"folder: x_kind {x_kind} with modality {self.modality} needs intrinsics: "
                "[fx, fy, cx, cy] (pixels)"
            )
        needs_baseline = x_kind == "disparity" or self.modality == "disparity"
        if needs_baseline and x_kind != "normals" and not (baseline or 0) > 0:
            raise KdbenchError(
                f"folder: x_kind {x_kind} with modality {self.modality} needs baseline > 0 (metres)"
            )

    def _x_file(self, name: str) -> Path:
        for suffix in (".png", ".npy"):
            path = self.base / "x" / f"{name}{suffix}"
            if path.is_file():
                return path
        raise self.missing(self.base / "x" / f"{name}.png (or .npy)")

    def _read_x(self, path: Path) -> np.ndarray:
        """The x file as float64: (H, W) values times ``x_scale``, or (H, W, 3) normals."""
        if path.suffix == ".png":
            return read_uint16(path) * self.x_scale
        try:
            array = np.load(path, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as err:
            raise KdbenchError(f"cannot read array {path}: {err}") from err
        want = 3 if self.x_kind == "normals" else 2
        if array.ndim != want or (want == 3 and array.shape[2] != 3):
            expected = "(H, W, 3) normals" if want == 3 else "(H, W) values"
            raise KdbenchError(f"{path}: expected {expected}, got shape {array.shape}")
        array = np.where(np.isfinite(array), array, 0.0)
        return array if want == 3 else array * self.x_scale

    def _read_label(self, path: Path) -> np.ndarray:
        if self.colours is not None and _channels(path) == 3:
            pixels = read_rgb_uint8(path)
            label = np.full(pixels.shape[:2], IGNORE_INDEX, dtype=np.int64)
            for k, colour in enumerate(self.colours):
                label[(pixels == colour).all(-1)] = k
            return label
        label = read_uint8(path).astype(np.int64)
        bad = (label >= self.num_classes) & (label != IGNORE_INDEX)
        if bad.any():
            raise KdbenchError(
                f"{path}: label value {int(label[bad][0])} is not a train id "
                f"0..{self.num_classes - 1} (classes.txt) or {IGNORE_INDEX}"
            )
        return label

    def frame(self, index: int) -> Frame:
        """Sample ``index``: rgb, depth (from depth or disparity files; zeros for normals files,
        whose normals ride in ``Frame.x``), labels."""
        name = self.names[index]
        files = [self._rgb[name], self._x[name], self.base / "labels" / f"{name}.png"]
        rgb = read_rgb(files[0])
        value = self._read_x(files[1])
        label = self._read_label(files[2])
        check_same_size(files, [rgb, value, label])
        h, w = label.shape
        intrinsics = self.intrinsics or Intrinsics(1.0, 1.0, (w - 1) / 2, (h - 1) / 2)
        if self.x_kind == "normals":
            normals = value.astype(np.float32)
            return Frame(rgb, np.zeros((h, w), np.float32), label, intrinsics, self.baseline,
                         x=normals)
        if self.x_kind == "disparity":
            depth = disparity_to_depth(value, intrinsics.fx, self.baseline)
        else:
            depth = value.astype(np.float32)
        return Frame(rgb, depth, label, intrinsics, self.baseline)


def _channels(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return len(image.getbands())
