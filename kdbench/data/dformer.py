"""The DFormer layout shared by NYUDv2 and SUN RGB-D: one folder per modality, list files.

Under the root: ``RGB/<stem>.jpg`` (or ``.png``), one folder per second modality
(:attr:`DFormerLayout.x_folders`), a label folder of ``<stem>.png`` holding 0 = unlabelled and
1..K (→ train ids 0..K−1, 0 → ignore, as CMX/DFormer's uint8 ``label − 1``), and ``train.txt`` /
``test.txt`` naming the samples of each split, one a line: ``RGB/2.jpg<TAB>Label/2.png``,
``RGB/2.jpg`` or a bare stem (:func:`~kdbench.data.rgbx.read_list`). Split "eval" is the
official test list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from kdbench.data.loading import check_same_size, read_rgb
from kdbench.data.rgbx import RGBXDataset, Sample, index_image, read_list, shift_labels, unit_image
from kdbench.errors import KdbenchError

LIST_FILES = {"train": "train.txt", "eval": "test.txt"}
RGB_SUFFIXES = (".jpg", ".png")


class DFormerLayout(RGBXDataset):
    """RGB-D data in the DFormer layout (module docstring).

    Subclasses set ``label_folder`` and ``x_folders``: modality -> (folder, file suffixes in the
    order tried); a ``.npy`` file holds (H, W) depth in metres (x = depth / ``max_depth``,
    clipped to [0, 1]; 0 or non-finite = no measurement → 0), an image file is read by
    :func:`~kdbench.data.rgbx.unit_image`.
    """

    label_folder: ClassVar[str]
    x_folders: ClassVar[dict[str, tuple[str, tuple[str, ...]]]]
    index_files = tuple(LIST_FILES.values())

    def __init__(
        self,
        split: str,
        *,
        root: str | None,
        modality: str,
        size: Sequence[int] | None,
        channel_order: str,
        max_depth: float,
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size,
                         channel_order=channel_order)
        if not max_depth > 0:
            raise KdbenchError(f"{self.folder}: max_depth must be > 0 metres, got {max_depth!r}")
        self.max_depth = float(max_depth)
        self._index(split)

    def _index(self, split: str) -> None:
        """Fill ``names`` from the split's list file, every sample's files checked."""
        self.names = read_list(self.require(self.root / LIST_FILES[split]))
        if not self.names:
            raise KdbenchError(f"{self.folder}: {self.root / LIST_FILES[split]} lists no sample")
        self._files = [self._sample_files(name) for name in self.names]

    def _find(self, folder: str, stem: str, suffixes: Sequence[str]) -> Path:
        """The first existing ``root/folder/stem<suffix>``, else the missing-file error."""
        for suffix in suffixes:
            path = self.root / folder / f"{stem}{suffix}"
            if path.is_file():
                return path
        raise self.missing(self.root / folder / f"{stem}{'|'.join(suffixes)}")

    def _sample_files(self, stem: str) -> tuple[Path, Path, Path]:
        """(rgb, x, label) files of sample ``stem``."""
        folder, suffixes = self.x_folders[self.modality]
        return (
            self._find("RGB", stem, RGB_SUFFIXES),
            self._find(folder, stem, suffixes),
            self.require(self.root / self.label_folder / f"{stem}.png"),
        )

    def _read_x(self, path: Path) -> np.ndarray:
        """(H, W, C_x) float32 in [0, 1] from an image or a metres ``.npy``."""
        if path.suffix != ".npy":
            return unit_image(path, self.x_channels)
        try:
            depth = np.load(path, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as err:
            raise KdbenchError(f"cannot read array {path}: {err}") from err
        if depth.ndim != 2:
            raise KdbenchError(f"{path}: expected (H, W) depth in metres, got {depth.shape}")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
        return np.clip(depth / self.max_depth, 0.0, 1.0).astype(np.float32)[..., None]

    def read(self, index: int) -> Sample:
        """Sample ``index``: RGB, x (:meth:`_read_x`), labels 1..K → 0..K−1, 0 → ignore."""
        files = self._files[index]
        rgb = read_rgb(files[0])
        x = self._read_x(files[1])
        label = shift_labels(index_image(files[2]), self.num_classes, files[2])
        check_same_size(files, [rgb, x, label])
        return rgb, x, label
