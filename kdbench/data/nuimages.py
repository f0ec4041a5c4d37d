"""nuImages (nuScenes' 2D set: 93k images of six cameras; RGB only, no depth), semantic masks
formed from its annotation tables as the nuscenes-devkit forms them
(:mod:`kdbench.data.nuimages_tables`).

Layout under the root (default ``$KDBENCH_DATA/nuimages``), the official archives unpacked::

    v1.0-train/{category,sample_data,object_ann,surface_ann}.json   (and the other tables)
    v1.0-val/...
    samples/<CAM>/<file>.jpg       key-frame images, the path in ``sample_data.filename``

Key frames only (the annotated ones). Train ids: 0 = background (no annotation), 1..n the
categories sorted by name without ``vehicle.ego`` and ``flat.driveable_surface``, n + 1 =
``flat.driveable_surface`` (the devkit's 1..n, 24), and ``vehicle.ego`` (the devkit's 31) →
ignore. Split "train" = ``train_version`` (``v1.0-train``), "eval" = ``eval_version``
(``v1.0-val``), scored at native resolution (1600×900). There is no second modality: ``x`` is
one channel of zeros and only the ``rgb`` teacher runs. Needs pycocotools (the ``nuimages``
extra) for the masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kdbench.data.base import IGNORE_INDEX
from kdbench.data.loading import check_same_size, read_rgb
from kdbench.data.nuimages_tables import (
    DRIVEABLE,
    EGO_INDEX,
    INSTALL_HINT,
    NuImagesTables,
    TableError,
)
from kdbench.data.rgbx import RGBXDataset, Sample, no_x
from kdbench.errors import KdbenchError
from kdbench.registry import register_dataset

Version = Literal["v1.0-train", "v1.0-val", "v1.0-mini"]
VERSIONS = ("v1.0-train", "v1.0-val", "v1.0-mini")


def require_pycocotools() -> None:
    """The one-line error naming the extra when pycocotools is not installed."""
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        raise KdbenchError(f"nuimages: pycocotools is not installed; {INSTALL_HINT}") from None


@register_dataset(
    "nuimages", "nuImages (background + 23 + driveable surface, eval = v1.0-val), RGB only"
)
class NuImages(RGBXDataset):
    """nuImages key frames with the devkit's semantic masks (module docstring).

    Options: ``root``, ``size`` ([H, W] or native), ``channel_order`` (rgb | bgr),
    ``train_version`` and ``eval_version`` (v1.0-train | v1.0-val | v1.0-mini);
    ``modality`` is ``none`` (RGB only).
    """

    folder = "nuimages"
    layout = (
        "v1.0-{train,val}/{category,sample_data,object_ann,surface_ann}.json, "
        "samples/<CAM>/<file>.jpg"
    )
    source = "nuImages, https://www.nuscenes.org/nuimages (nuimages-v1.0-all-metadata, -samples)"
    modalities = {"none": 1}
    rgb_only = True

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: Literal["none"] = "none",
        size: Sequence[int] | None = None,
        channel_order: Literal["rgb", "bgr"] = "rgb",
        train_version: Version = "v1.0-train",
        eval_version: Version = "v1.0-val",
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size,
                         channel_order=channel_order)
        version = train_version if split == "train" else eval_version
        if version not in VERSIONS:
            raise KdbenchError(f"nuimages: version must be one of {VERSIONS}, got {version!r}")
        require_pycocotools()
        for table in ("category", "sample_data", "object_ann", "surface_ann"):
            self.require(self.root / version / f"{table}.json")
        try:
            self.tables = NuImagesTables(self.root, version)
        except (TableError, KeyError, TypeError) as err:
            raise KdbenchError(f"nuimages: {version}: malformed table ({err})") from None
        names = sorted(n for n, i in self.tables.index.items() if i < EGO_INDEX and n != DRIVEABLE)
        self.class_names = ("background", *names, DRIVEABLE)
        self._train_id = self._train_ids()
        self.names = [s["filename"] for s in self.tables.key_frames]
        if not self.names:
            raise KdbenchError(f"nuimages: {self.root / version}/sample_data.json has no key frame")
        for name in self.names:
            self.require(self._image(name))

    def _train_ids(self) -> np.ndarray:
        """Lookup table mask index (0..31) -> train id (module docstring)."""
        table = np.full(EGO_INDEX + 1, IGNORE_INDEX, dtype=np.int64)
        table[0] = 0
        for train_id, name in enumerate(self.class_names[1:], start=1):
            table[self.tables.index[name]] = train_id
        return table

    def _image(self, filename: str) -> Path:
        """The image file of a ``sample_data.filename`` (a relative path inside the root)."""
        path = (self.root / filename).resolve()
        if Path(filename).is_absolute() or not path.is_relative_to(self.root.resolve()):
            raise KdbenchError(f"nuimages: sample_data filename {filename!r} leaves the root")
        return path

    @classmethod
    def check_available(cls, options: dict[str, Any]) -> Path:
        """The data root, pycocotools, or the one-line error naming what is missing."""
        require_pycocotools()
        return super().check_available(options)

    def read(self, index: int) -> Sample:
        """Sample ``index``: RGB, no x, the devkit's mask mapped to train ids."""
        record = self.tables.key_frames[index]
        image = self._image(record["filename"])
        rgb = read_rgb(image)
        try:
            mask = self.tables.semantic(record)
        except TableError as err:
            raise KdbenchError(f"nuimages: {err}") from None
        label = self._train_id[mask]
        check_same_size([image, Path(f"sample_data {record['token']} width/height")], [rgb, label])
        return rgb, no_x(label), label
