"""What the RGB-X benchmark loaders share (NYUDv2, SUN RGB-D, MFNet, DeLiVER) and the RGB-only
sets (nuImages, ADE20K, VOC): the second modality read from image files as it is stored.

The geometric loaders (:mod:`kdbench.data.loading`) compute ``x`` from metric depth and camera
intrinsics; these benchmarks publish ``x`` ready to read (8-bit depth, HHA, thermal, event,
LiDAR images) without the calibration, as the field's loaders (CMX, DFormer, CMNeXt) read it.
Each loader decodes one sample into native-size arrays (:meth:`RGBXDataset.read`):

- ``rgb``: (H, W, 3) float32 in [0, 1];
- ``x``: (H, W, C_x) float32: an integer image divided by its type's maximum (255 for 8-bit,
  65535 for 16-bit, so in [0, 1] as CMNeXt divides by 255), a depth array in metres divided by
  ``max_depth`` and clipped to [0, 1]; RGB-only sets give one channel of zeros (there is no second
  modality; only the ``rgb`` teacher, which ignores ``x``, is allowed on them);
- ``label``: (H, W) int64 train ids, :data:`~kdbench.data.base.IGNORE_INDEX` where unlabelled;

and :meth:`RGBXDataset.__getitem__` makes the item of :mod:`kdbench.data.base`: with the
``size`` option, rgb resized bilinearly, x and label by nearest neighbour on pixel centres (as
:func:`~kdbench.data.loading.resize_frame`); the eval split keeps its label at native size, where
the evaluation protocol scores it. ``channel_order: bgr`` reverses rgb's channels before the
ImageNet normalisation, as CMX and DFormer feed their networks (for their checkpoints).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from kdbench.data.base import IGNORE_INDEX, normalize_rgb
from kdbench.data.loading import SPLITS, DataRoot, interpolate, read_array
from kdbench.errors import KdbenchError

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(rgb (H, W, 3) float32 in [0, 1], x (H, W, C_x) float32, label (H, W) int64)."""

CHANNEL_ORDERS = ("rgb", "bgr")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".npy")


class RGBXDataset(DataRoot, Dataset, ABC):
    """A benchmark whose second modality is stored as images, under a local root.

    Built as ``cls(split, *, root=None, modality=..., size=None, channel_order="rgb", ...)``;
    ``split`` is "train" or "eval" (each subclass names the official split of each).
    Subclasses set ``folder``, ``layout``, ``source``, ``class_names``, ``modalities``
    (modality name -> C_x; ``{"none": 1}`` for RGB-only sets, whose ``rgb_only`` is True) and
    ``index_files`` (the list files :meth:`check_available` checks, relative to the root);
    their constructor calls ``super().__init__``, fills ``self.names`` after checking the files
    and they implement :meth:`read`.
    """

    class_names: ClassVar[tuple[str, ...]]
    modalities: ClassVar[dict[str, int]]
    rgb_only: ClassVar[bool] = False
    index_files: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        split: str,
        *,
        root: str | None,
        modality: str,
        size: Sequence[int] | None,
        channel_order: str,
    ) -> None:
        if split not in SPLITS:
            raise KdbenchError(f"{self.folder}: split must be one of {SPLITS}, got {split!r}")
        if modality not in self.modalities:
            known = ", ".join(self.modalities)
            raise KdbenchError(f"{self.folder}: unknown modality {modality!r}; known: {known}")
        if size is not None and (
            len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size)
        ):
            raise KdbenchError(f"{self.folder}: size must be [height, width] > 0, got {size!r}")
        if channel_order not in CHANNEL_ORDERS:
            raise KdbenchError(
                f"{self.folder}: channel_order must be one of {CHANNEL_ORDERS}, got "
                f"{channel_order!r}"
            )
        self.split, self.modality, self.channel_order = split, modality, channel_order
        self.size: tuple[int, int] | None = None if size is None else (size[0], size[1])
        self.root = self._resolve_root(root)
        self.names: list[str] = []

    @property
    def num_classes(self) -> int:
        """K, the number of train ids."""
        return len(self.class_names)

    @property
    def x_channels(self) -> int:
        """C_x, the channels of ``x`` for the chosen modality."""
        return self.modalities[self.modality]

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def read(self, index: int) -> Sample:
        """The decoded sample ``index`` at its native size (module docstring)."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """The item at the ``size`` option (native if None); eval labels stay native."""
        rgb, x, label = self.read(index)
        native = label
        if self.size is not None and label.shape != self.size:
            rgb = np.clip(interpolate(rgb, self.size, "bilinear"), 0.0, 1.0)
            x = interpolate(x, self.size, "nearest-exact")
            label = interpolate(label, self.size, "nearest-exact").round().astype(np.int64)
        if self.channel_order == "bgr":
            rgb = rgb[..., ::-1]
        return {
            "rgb": normalize_rgb(rgb),
            "x": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)),
            "label": torch.from_numpy(
                np.ascontiguousarray(native if self.split == "eval" else label, dtype=np.int64)
            ),
        }

    @classmethod
    def check_available(cls, options: dict[str, Any]) -> Path:
        """The data root of ``options`` and its list files; the one-line missing-data error now
        if one is absent (suite validation calls this before anything starts)."""
        root = cls._resolve_root(options.get("root"))
        for name in cls.index_files:
            if not (root / name).is_file():
                raise cls.missing_under(root, root / name)
        return root

    @classmethod
    def missing_under(cls, root: Path, path: Path) -> KdbenchError:
        """The one-line error for a missing file under ``root``, before an instance exists."""
        return KdbenchError(
            f"{cls.folder}: file {path} not found; expected the layout "
            f"{root}/{cls.layout} (obtain the data set from {cls.source})"
        )


# ----------------------------------------------------------------------------- file reading


def unit_image(path: Path, channels: int) -> np.ndarray:
    """An integer image -> (H, W, ``channels``) float32 in [0, 1] (divided by its type's maximum).

    A single-channel image is repeated to 3 channels when 3 are asked for (as CMX and CMNeXt
    read grey X images); a colour image gives its first ``channels`` channels (alpha dropped).
    """
    array = read_array(path)
    if not np.issubdtype(array.dtype, np.integer) or array.dtype == np.int32:
        raise KdbenchError(f"{path}: expected an 8- or 16-bit image, got {array.dtype} pixels")
    scaled = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    if scaled.shape[2] == 1:
        return np.repeat(scaled, channels, axis=2)
    if scaled.shape[2] < channels:
        raise KdbenchError(f"{path}: expected {channels} channels, got {scaled.shape[2]}")
    return np.ascontiguousarray(scaled[..., :channels])


def index_image(path: Path) -> np.ndarray:
    """A label image's class indices (H, W) int64: a grey or palette PNG as stored, or the first
    (red) channel of a colour PNG."""
    array = read_array(path)
    if array.ndim == 3:
        array = array[..., 0]
    if not np.issubdtype(array.dtype, np.integer):
        raise KdbenchError(f"{path}: expected an integer label image, got {array.dtype} pixels")
    return array.astype(np.int64)


def shift_labels(raw: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Labels stored as 1..K with 0 = unlabelled (and 255 = ignore) -> train ids 0..K−1, 0 and
    255 -> :data:`~kdbench.data.base.IGNORE_INDEX`; any other value is an error naming the file."""
    bad = (raw > num_classes) & (raw != IGNORE_INDEX)
    if bad.any():
        raise KdbenchError(
            f"{path}: label value {int(raw[bad][0])} is not 0 (unlabelled), a class "
            f"1..{num_classes} or {IGNORE_INDEX}"
        )
    return np.where((raw == 0) | (raw == IGNORE_INDEX), IGNORE_INDEX, raw - 1)


def check_labels(raw: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Labels stored as train ids 0..K−1 with 255 = ignore, checked; any other value is an error
    naming the file."""
    bad = (raw >= num_classes) & (raw != IGNORE_INDEX)
    if bad.any():
        raise KdbenchError(
            f"{path}: label value {int(raw[bad][0])} is not a class 0..{num_classes - 1} "
            f"or {IGNORE_INDEX}"
        )
    return raw


def read_list(path: Path) -> list[str]:
    """The sample stems of a split list file, one sample a line: ``RGB/2.jpg<TAB>Label/2.png``,
    ``RGB/2.jpg`` or a bare stem ``2`` (the first field's file name without its suffix)."""
    stems = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields:
            name = Path(fields[0])
            stems.append(name.stem if name.suffix.lower() in IMAGE_SUFFIXES else name.name)
    return stems


def no_x(label: np.ndarray) -> np.ndarray:
    """The x of an RGB-only set: one channel of zeros, (H, W, 1) float32."""
    return np.zeros((*label.shape, 1), np.float32)
