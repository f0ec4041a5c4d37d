"""NYU Depth v2 from its official files: ``nyu_depth_v2_labeled.mat`` with Gupta et al.'s
40-class mapping and the standard split (the ``source: official`` variant of ``nyudv2``).

Files under the root (default ``$KDBENCH_DATA/nyudv2``)::

    nyu_depth_v2_labeled.mat   MATLAB v7.3 (HDF5): ``images`` (N, 3, W, H) uint8,
                               ``depths`` (N, W, H) float metres, ``labels`` (N, W, H) 0..894
                               (0 = unlabelled), N = 1449, H × W = 480 × 640
    splits.mat                 ``trainNdxs`` (795) and ``testNdxs`` (654), 1-based image numbers
    classMapping40.mat         ``mapClass`` (894): raw class k -> 40-class id mapClass[k − 1]

HDF5 stores MATLAB's column-major arrays transposed, hence the (W, H) axes. Label: raw k ≥ 1 →
mapClass[k − 1] ∈ 1..40 → train id mapClass − 1; raw 0 (and a map to 0) → ignore. x = depth /
``max_depth`` clipped to [0, 1] (no HHA in these files). h5py reads the HDF5 file (the
``nyudv2`` extra); scipy reads the two MATLAB v5 files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from kdbench.data.base import IGNORE_INDEX
from kdbench.errors import KdbenchError

LABELED = "nyu_depth_v2_labeled.mat"
SPLITS = "splits.mat"
MAPPING = "classMapping40.mat"
FILES = (LABELED, SPLITS, MAPPING)
SPLIT_KEYS = {"train": "trainNdxs", "eval": "testNdxs"}
RAW_CLASSES = 894


def require_h5py() -> Any:
    """The h5py module, or the one-line error naming the extra."""
    try:
        import h5py
    except ImportError:
        raise KdbenchError(
            "nyudv2: source official reads nyu_depth_v2_labeled.mat with h5py; "
            "pip install 'kdbench[nyudv2]'"
        ) from None
    return h5py


def _matlab(path: Path, key: str) -> np.ndarray:
    """Variable ``key`` of a MATLAB v5 file, flattened."""
    from scipy.io import loadmat

    try:
        return np.asarray(loadmat(path)[key]).reshape(-1)
    except (OSError, ValueError, KeyError, NotImplementedError) as err:
        raise KdbenchError(f"{path}: expected a MATLAB file holding {key} ({err!r})") from None


def label_table(path: Path) -> np.ndarray:
    """Lookup raw label 0..894 -> train id (0..39, or IGNORE_INDEX), from ``mapClass``."""
    mapping = _matlab(path, "mapClass").astype(np.int64)
    if mapping.shape != (RAW_CLASSES,) or mapping.min() < 0 or mapping.max() > 40:
        raise KdbenchError(f"{path}: expected mapClass of {RAW_CLASSES} values in 0..40")
    return np.concatenate([[IGNORE_INDEX], np.where(mapping == 0, IGNORE_INDEX, mapping - 1)])


class OfficialNYU:
    """The samples of one split of the official files under ``root``: :meth:`read` (i) ->
    (rgb (H, W, 3) in [0, 1], x (H, W, 1), label (H, W))."""

    def __init__(self, root: Path, split: str, max_depth: float) -> None:
        self.h5py = require_h5py()
        self.path, self.max_depth = root / LABELED, max_depth
        self.table = label_table(root / MAPPING)
        self.numbers = _matlab(root / SPLITS, SPLIT_KEYS[split]).astype(np.int64)
        with self._open() as f:
            count = f["images"].shape[0]
        if self.numbers.size == 0 or self.numbers.min() < 1 or self.numbers.max() > count:
            raise KdbenchError(
                f"{root / SPLITS}: {SPLIT_KEYS[split]} must list image numbers 1..{count}"
            )
        self._file: tuple[int, Any] | None = None

    def _open(self) -> Any:
        try:
            return self.h5py.File(self.path, "r")
        except OSError as err:
            raise KdbenchError(f"cannot read {self.path} as HDF5 (MATLAB v7.3): {err}") from None

    def _handle(self) -> Any:
        """The open file of this process (DataLoader workers each open their own)."""
        if self._file is None or self._file[0] != os.getpid():
            self._file = (os.getpid(), self._open())
        return self._file[1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "h5py": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.h5py = require_h5py()

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image number ``numbers[index]`` (1-based) of the file, transposed to (H, W)."""
        f, i = self._handle(), int(self.numbers[index]) - 1
        rgb = np.asarray(f["images"][i]).transpose(2, 1, 0).astype(np.float32) / 255.0
        depth = np.asarray(f["depths"][i], dtype=np.float64).T
        raw = np.asarray(f["labels"][i]).T.astype(np.int64)
        if raw.max(initial=0) > RAW_CLASSES:
            raise KdbenchError(f"{self.path}: label {int(raw.max())} of image {i + 1} > 894")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
        x = np.clip(depth / self.max_depth, 0.0, 1.0).astype(np.float32)[..., None]
        return np.ascontiguousarray(rgb), x, self.table[raw]
