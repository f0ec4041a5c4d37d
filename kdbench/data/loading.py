"""What the on-disk data sets (KITTI, Virtual KITTI 2, Cityscapes) share: root resolution, the
missing-data error, image readers, resizing with intrinsics, and the common dataset class.

Each loader decodes one sample into a :class:`Frame` (RGB in [0, 1], metric depth with 0 =
invalid, train-id labels, pinhole intrinsics, stereo baseline); :class:`FolderDataset` then
optionally resizes it (:func:`resize_frame`) and encodes it into the item of
:mod:`kdbench.data.base`:

- ``rgb`` = :func:`~kdbench.data.base.normalize_rgb` of the RGB image, (3, H, W) float32;
- ``x`` = :func:`~kdbench.data.geometry.encode_modality` of the depth, (C_x, H, W) float32;
- ``label``: (H, W) int64 train ids, :data:`~kdbench.data.base.IGNORE_INDEX` where unlabelled.

Resizing to ``size = (H', W')`` (scale s_x = W'/W, s_y = H'/H), before the modality is computed:

- RGB: bilinear (``align_corners=False``, antialiased when shrinking);
- label: nearest neighbour on pixel centres (``nearest-exact``: output pixel i reads source pixel
  floor((i + 0.5)/s)), so every output label is an input label;
- depth: the same nearest-neighbour sampling ("nearest-valid"): an output depth is one measured
  input depth, never a blend across an occlusion edge or with an invalid (0) pixel, and an
  output pixel is invalid exactly when its source pixel is;
- intrinsics: f'_x = s_x f_x, f'_y = s_y f_y, c'_x = s_x (c_x + 0.5) − 0.5,
  c'_y = s_y (c_y + 0.5) − 0.5 (pixel centres at integer coordinates, as in
  :mod:`kdbench.data.geometry`), so normals and disparity are computed at the new resolution.
  The metric depth and the baseline do not change; disparity scales with s_x through f'_x.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from kdbench.data.base import normalize_rgb
from kdbench.data.geometry import MODALITY_CHANNELS, encode_modality
from kdbench.errors import KdbenchError

SPLITS = ("train", "eval")
DATA_ENV = "KDBENCH_DATA"
"""Environment variable naming the folder that holds one sub-folder per data set."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels: focal lengths (fx, fy) and principal point (cx, cy)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def scaled(self, sx: float, sy: float) -> Intrinsics:
        """The intrinsics after resizing the image by (sx, sy), pixel-centre convention."""
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=sx * (self.cx + 0.5) - 0.5,
            cy=sy * (self.cy + 0.5) - 0.5,
        )


@dataclass(frozen=True)
class Frame:
    """One decoded sample, before resizing and encoding.

    - ``rgb``: (H, W, 3) float32 in [0, 1];
    - ``depth``: (H, W) float32 metric depth (z), 0 where invalid, +inf where infinitely far;
    - ``label``: (H, W) int64 train ids, IGNORE_INDEX where unlabelled;
    - ``intrinsics`` of this image; ``baseline``: stereo baseline in metres (for disparity);
    - ``x``: (H, W, C) float32 modality read as it is (e.g. normals files), or None to encode
      it from ``depth``.
    """

    rgb: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    intrinsics: Intrinsics
    baseline: float
    x: np.ndarray | None = None


def interpolate(array: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """(H, W) or (H, W, C) array -> same layout at ``size`` with ``F.interpolate`` ``mode``."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    if mode == "bilinear":
        shrinking = size[0] < t.shape[-2] or size[1] < t.shape[-1]
        t = F.interpolate(t, size=size, mode=mode, align_corners=False, antialias=shrinking)
    else:
        t = F.interpolate(t, size=size, mode=mode)
    out = t[0, 0] if array.ndim == 2 else t[0].permute(1, 2, 0)
    return out.numpy()


def resize_frame(frame: Frame, size: tuple[int, int]) -> Frame:
    """``frame`` resized to ``size = (H', W')``: RGB bilinear, label and depth nearest-exact,
    intrinsics scaled (module docstring); unchanged if already that size."""
    h, w = frame.label.shape
    if (h, w) == tuple(size):
        return frame
    rgb = np.clip(interpolate(frame.rgb, size, "bilinear"), 0.0, 1.0)
    label = interpolate(frame.label, size, "nearest-exact").round().astype(np.int64)
    depth = interpolate(frame.depth, size, "nearest-exact")
    x = None if frame.x is None else interpolate(frame.x, size, "nearest-exact")
    intrinsics = frame.intrinsics.scaled(size[1] / w, size[0] / h)
    return replace(frame, rgb=rgb, depth=depth, label=label, intrinsics=intrinsics, x=x)


def encode_frame(frame: Frame, modality: str, max_depth: float) -> dict[str, torch.Tensor]:
    """A :class:`Frame` -> the item ``{"rgb": (3,H,W), "x": (C,H,W), "label": (H,W)}``.

    ``rgb`` and ``x`` float32, ``label`` int64; ``x`` is the encoded ``modality`` (or
    ``frame.x`` as it is, channels first).
    """
    k = frame.intrinsics
    if frame.x is not None:
        x = frame.x.transpose(2, 0, 1).astype(np.float32)
    else:
        x = encode_modality(
            frame.depth, k.fx, k.fy, k.cx, k.cy, modality, baseline=frame.baseline,
            max_depth=max_depth,
        )
    return {
        "rgb": normalize_rgb(frame.rgb),
        "x": torch.from_numpy(np.ascontiguousarray(x)),
        "label": torch.from_numpy(np.ascontiguousarray(frame.label, dtype=np.int64)),
    }


# ----------------------------------------------------------------------------- file reading


def _open(path: Path) -> Image.Image:
    """Open an image file; a corrupt file raises KdbenchError naming it."""
    try:
        image = Image.open(path)
        image.load()
    except OSError as err:
        raise KdbenchError(f"cannot read image {path}: {err}") from err
    return image


def read_array(path: Path) -> np.ndarray:
    """An image's pixels as stored, with no conversion: (H, W) or (H, W, C), the file's dtype
    (uint8, uint16 or int32), palette PNGs as their indices."""
    return np.asarray(_open(path))


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour image (PNG or JPEG) -> (H, W, 3) float32 in [0, 1]."""
    return np.asarray(_open(path).convert("RGB"), dtype=np.float32) / 255.0


def read_rgb_uint8(path: Path) -> np.ndarray:
    """An 8-bit colour image -> (H, W, 3) uint8 (for colour-coded labels)."""
    return np.asarray(_open(path).convert("RGB"), dtype=np.uint8)


def read_uint8(path: Path) -> np.ndarray:
    """A single-channel 8-bit PNG (mode L or P) -> (H, W) uint8 (label ids)."""
    image = _open(path)
    if image.mode not in ("L", "P"):
        raise KdbenchError(f"{path}: expected a single-channel 8-bit PNG, got mode {image.mode}")
    return np.asarray(image, dtype=np.uint8)


def read_uint16(path: Path) -> np.ndarray:
    """A single-channel 16-bit PNG -> (H, W) float64 of the raw values 0..65535."""
    image = _open(path)
    if image.mode not in ("I;16", "I;16B", "I"):
        raise KdbenchError(f"{path}: expected a single-channel 16-bit PNG, got mode {image.mode}")
    return np.asarray(image).astype(np.float64)


def check_same_size(files: Sequence[Path], arrays: Sequence[np.ndarray]) -> None:
    """Raise KdbenchError naming the files if the arrays' (H, W) differ."""
    shapes = [a.shape[:2] for a in arrays]
    if len(set(shapes)) > 1:
        listed = ", ".join(f"{f} {s[0]}x{s[1]}" for f, s in zip(files, shapes, strict=True))
        raise KdbenchError(f"image sizes differ within one sample: {listed}")


# ----------------------------------------------------------------------------- the dataset


class DataRoot:
    """A data set's local root folder and the one-line errors naming its expected layout.

    Subclasses set ``folder`` (the sub-folder of ``$KDBENCH_DATA``), ``layout`` (the expected
    path pattern, relative to the root) and ``source`` (where the data set is obtained), and
    set ``self.root`` with :meth:`_resolve_root`.
    """

    folder: ClassVar[str]
    layout: ClassVar[str]
    source: ClassVar[str]
    root: Path

    def missing(self, path: Path, what: str = "file") -> KdbenchError:
        """The one-line error for a missing ``path``, naming the layout and the source."""
        return KdbenchError(
            f"{self.folder}: {what} {path} not found; expected the layout "
            f"{self.root}/{self.layout} (obtain the data set from {self.source})"
        )

    def require(self, path: Path) -> Path:
        """``path`` if it is an existing file, else :meth:`missing`."""
        if not path.is_file():
            raise self.missing(path)
        return path

    @classmethod
    def _resolve_root(cls, root: str | None) -> Path:
        """The root folder: ``root`` or ``$KDBENCH_DATA/<folder>``; it must exist."""
        if root is None:
            base = os.environ.get(DATA_ENV)
            if not base:
                raise KdbenchError(
                    f"{cls.folder}: no data root; set the data set's root option or "
                    f"{DATA_ENV} (expected ${DATA_ENV}/{cls.folder}/{cls.layout}; "
                    f"obtain the data set from {cls.source})"
                )
            path = Path(base).expanduser() / cls.folder
        else:
            path = Path(root).expanduser()
        if not path.is_dir():
            raise KdbenchError(
                f"{cls.folder}: data root {path} not found; expected the layout "
                f"{path}/{cls.layout} (obtain the data set from {cls.source})"
            )
        return path

    @classmethod
    def check_available(cls, options: dict[str, Any]) -> Path:
        """The data root of ``options``; the one-line missing-data error now if it is absent
        (suite validation calls this before anything starts or is submitted)."""
        return cls._resolve_root(options.get("root"))


class FolderDataset(DataRoot, Dataset, ABC):
    """A data set read from its official on-disk layout under a local root.

    Built as ``cls(split, *, root=None, modality="depth", size=None, max_depth=80.0)``:

    - ``split``: "train" or "eval" (each subclass documents its fixed split);
    - ``root``: the data set's folder; default ``$KDBENCH_DATA/<folder>``;
    - ``modality``: one of :data:`~kdbench.data.geometry.MODALITY_CHANNELS`;
    - ``size``: (H, W) to resize every sample's input to (module docstring), or None for native
      size; the eval split's labels stay at native size (:mod:`kdbench.train.evaluation`);
    - ``max_depth``: metres, the saturation of the ``depth`` modality.

    Subclasses set ``folder``, ``layout`` (the expected path pattern, relative to the root),
    ``source`` (where the data set is obtained) and ``class_names``; their constructor calls
    ``super().__init__`` and then fills ``self.names`` (one name per sample) after checking that
    every file exists, and they implement :meth:`frame`.
    """

    class_names: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: str = "depth",
        size: Sequence[int] | None = None,
        max_depth: float = 80.0,
    ) -> None:
        if split not in SPLITS:
            raise KdbenchError(f"{self.folder}: split must be one of {SPLITS}, got {split!r}")
        if modality not in MODALITY_CHANNELS:
            known = ", ".join(MODALITY_CHANNELS)
            raise KdbenchError(f"{self.folder}: unknown modality {modality!r}; known: {known}")
        if size is not None and (
            len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size)
        ):
            raise KdbenchError(f"{self.folder}: size must be [height, width] > 0, got {size!r}")
        if not max_depth > 0:
            raise KdbenchError(f"{self.folder}: max_depth must be > 0 metres, got {max_depth!r}")
        self.split = split
        self.modality = modality
        self.size: tuple[int, int] | None = None if size is None else (size[0], size[1])
        self.max_depth = float(max_depth)
        self.root = self._resolve_root(root)
        self.names: list[str] = []

    @property
    def num_classes(self) -> int:
        """K, the number of train ids."""
        return len(self.class_names)

    @property
    def x_channels(self) -> int:
        """C_x, the channels of ``x`` for the chosen modality."""
        return MODALITY_CHANNELS[self.modality]

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def frame(self, index: int) -> Frame:
        """The decoded sample ``index`` at its native size."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """The item at the ``size`` option (native if None); the eval split keeps its label at
        the native resolution, where the evaluation protocol scores it."""
        frame = native = self.frame(index)
        if self.size is not None:
            frame = resize_frame(frame, self.size)
        item = encode_frame(frame, self.modality, self.max_depth)
        if self.split == "eval":
            item["label"] = torch.from_numpy(np.ascontiguousarray(native.label, dtype=np.int64))
        return item
