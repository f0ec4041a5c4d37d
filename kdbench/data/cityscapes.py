"""Cityscapes (fine annotations, 19 classes) with depth from its precomputed stereo disparity.

Layout under the root (default ``$KDBENCH_DATA/cityscapes``; the leftImg8bit, gtFine, disparity
and camera archives unpacked side by side), ``<stem>`` = ``{city}_{seq:06d}_{frame:06d}``::

    leftImg8bit/{split}/{city}/<stem>_leftImg8bit.png   8-bit RGB
    gtFine/{split}/{city}/<stem>_gtFine_labelIds.png    uint8 label ids 0..33
    disparity/{split}/{city}/<stem>_disparity.png       uint16 disparity
    camera/{split}/{city}/<stem>_camera.json            calibration

Checked against cityscapesScripts (github.com/mcordts/cityscapesScripts): the README's
``{root}/{type}{video}/{split}/{city}/{city}_{seq:0>6}_{frame:0>6}_{type}{ext}`` structure;
"disparity: ... for each pixel p with p > 0: d = ( float(p) - 1. ) / 256., while a value p = 0
is an invalid measurement"; ``helpers/labels.py`` for the label ids -> train ids
(:mod:`kdbench.data.cityscapes_labels`). The camera json (csCalibration.pdf) holds
``{"extrinsic": {"baseline": B, ...}, "intrinsic": {"fx", "fy", "u0", "v0"}}`` with B in metres,
(u0, v0) the principal point.

Depth: z = f_x·B/d; p = 0 and p = 1 (d = 0) are invalid (depth 0).

Split: "train" = the official ``train`` split (2975 images), "eval" = the official ``val``
split (500 images; the test labels are not public). Images are 2048x1024; set ``size``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from kdbench.data.cityscapes_labels import TRAIN_CLASS_NAMES, label_ids_to_train_ids
from kdbench.data.geometry import disparity_to_depth
from kdbench.data.loading import (
    FolderDataset,
    Frame,
    Intrinsics,
    check_same_size,
    read_rgb,
    read_uint8,
    read_uint16,
)
from kdbench.errors import KdbenchError
from kdbench.registry import register_dataset

OFFICIAL_SPLIT = {"train": "train", "eval": "val"}
IMAGE_SUFFIX = "_leftImg8bit.png"


def read_camera(path: Path) -> tuple[Intrinsics, float]:
    """A Cityscapes ``*_camera.json`` -> (intrinsics (fx, fy, u0, v0), baseline in metres)."""
    try:
        camera = json.loads(path.read_text())
        k, baseline = camera["intrinsic"], float(camera["extrinsic"]["baseline"])
        intrinsics = Intrinsics(
            fx=float(k["fx"]), fy=float(k["fy"]), cx=float(k["u0"]), cy=float(k["v0"])
        )
    except (ValueError, KeyError, TypeError) as err:
        raise KdbenchError(
            f"{path}: expected JSON with extrinsic.baseline and intrinsic.fx/fy/u0/v0 ({err!r})"
        ) from err
    return intrinsics, baseline


@register_dataset("cityscapes", "Cityscapes fine (19 classes) + SGM disparity")
class Cityscapes(FolderDataset):
    """Cityscapes with the official train/val split and disparity-derived depth (module docstring).

    Options: only the common ones (:class:`~kdbench.data.loading.FolderDataset`).
    """

    folder = "cityscapes"
    layout = (
        "{leftImg8bit,gtFine,disparity,camera}/{train,val}/<city>/"
        "<city>_<seq>_<frame>_{leftImg8bit.png,gtFine_labelIds.png,disparity.png,camera.json}"
    )
    source = (
        "the Cityscapes Dataset, https://www.cityscapes-dataset.com/downloads/ "
        "(leftImg8bit_trainvaltest, gtFine_trainvaltest, disparity_trainvaltest, "
        "camera_trainvaltest)"
    )
    class_names = TRAIN_CLASS_NAMES

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: str = "depth",
        size: Sequence[int] | None = None,
        max_depth: float = 80.0,
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size, max_depth=max_depth)
        self.official_split = OFFICIAL_SPLIT[split]
        image_dir = self.root / "leftImg8bit" / self.official_split
        if not image_dir.is_dir():
            raise self.missing(image_dir, "folder")
        images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not images:
            raise self.missing(image_dir / "<city>" / f"<city>_<seq>_<frame>{IMAGE_SUFFIX}")
        self.names = [f"{p.parent.name}/{p.name[: -len(IMAGE_SUFFIX)]}" for p in images]
        for index in range(len(self.names)):
            for path in self._files(index):
                self.require(path)

    def _files(self, index: int) -> list[Path]:
        """[image, label ids, disparity, camera json] of sample ``index``."""
        city, stem = self.names[index].split("/")
        where = Path(self.official_split) / city
        return [
            self.root / "leftImg8bit" / where / f"{stem}{IMAGE_SUFFIX}",
            self.root / "gtFine" / where / f"{stem}_gtFine_labelIds.png",
            self.root / "disparity" / where / f"{stem}_disparity.png",
            self.root / "camera" / where / f"{stem}_camera.json",
        ]

    def frame(self, index: int) -> Frame:
        """Sample ``index``: RGB, depth = f_x·B/((p − 1)/256) for p > 1, train-id labels."""
        image, labels, disparity_file, camera = self._files(index)
        rgb = read_rgb(image)
        label = label_ids_to_train_ids(read_uint8(labels))
        raw = read_uint16(disparity_file)
        disparity = (raw - 1.0).clip(min=0.0) / 256.0  # p = 0 (and p = 1) -> d = 0: invalid
        check_same_size([image, labels, disparity_file], [rgb, label, raw])
        intrinsics, baseline = read_camera(camera)
        depth = disparity_to_depth(disparity, intrinsics.fx, baseline)
        return Frame(rgb, depth, label, intrinsics, baseline)
