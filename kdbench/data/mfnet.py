"""MFNet (RGB-thermal urban scenes; 9 classes including "unlabeled"; 784 train / 392 val / 393
test images, 480×640), as RTFNet and CMNeXt distribute it.

Layout under the root (default ``$KDBENCH_DATA/mfnet``), ``<name>`` like ``00001D`` (day) or
``00002N`` (night)::

    images/<name>.png           4-channel PNG: R, G, B, thermal (read as stored, never converted)
    labels/<name>.png           0..8: 0 = unlabeled, 1..8 the classes
    train.txt, val.txt, test.txt   one name a line

``modality: thermal`` (1 channel, the fourth channel / 255). Split "train" = ``train.txt``,
"eval" = ``test.txt`` (393). Two evaluation conventions exist (``unlabeled``):

- ``class`` (default; RTFNet, CMNeXt): label 0 is the class "unlabeled", trained and scored
  like the others: 9 classes;
- ``ignore``: label 0 marks pixels without a class, ignored in training and scoring, and
  1..8 → train ids 0..7: 8 classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from kdbench.data.loading import check_same_size, read_array
from kdbench.data.rgbx import (
    RGBXDataset,
    Sample,
    check_labels,
    index_image,
    read_list,
    shift_labels,
)
from kdbench.errors import KdbenchError
from kdbench.registry import register_dataset

MFNET_CLASSES = (
    "unlabeled", "car", "person", "bike", "curve", "car stop", "guardrail", "color cone", "bump",
)
LIST_FILES = {"train": "train.txt", "eval": "test.txt"}


@register_dataset("mfnet", "MFNet RGB-thermal (9 classes, 784/393, eval = test)")
class MFNet(RGBXDataset):
    """MFNet with its thermal channel as x (module docstring).

    Options: ``root``, ``modality`` (thermal), ``size`` ([H, W] or native), ``channel_order``
    (rgb | bgr), ``unlabeled`` (class | ignore: the class-0 convention).
    """

    folder = "mfnet"
    layout = "images/<name>.png (R, G, B, thermal), labels/<name>.png, train.txt, test.txt"
    source = (
        "the MFNet data set (https://www.mi.t.u-tokyo.ac.jp/static/projects/mil_multispectral/), "
        "as packaged by RTFNet (github.com/yuxiangsun/RTFNet)"
    )
    modalities = {"thermal": 1}
    index_files = tuple(LIST_FILES.values())

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: Literal["thermal"] = "thermal",
        size: Sequence[int] | None = None,
        channel_order: Literal["rgb", "bgr"] = "rgb",
        unlabeled: Literal["class", "ignore"] = "class",
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size,
                         channel_order=channel_order)
        if unlabeled not in ("class", "ignore"):
            raise KdbenchError(f"mfnet: unlabeled must be class or ignore, got {unlabeled!r}")
        self.unlabeled = unlabeled
        self.class_names = MFNET_CLASSES if unlabeled == "class" else MFNET_CLASSES[1:]
        self.names = read_list(self.require(self.root / LIST_FILES[split]))
        if not self.names:
            raise KdbenchError(f"mfnet: {self.root / LIST_FILES[split]} lists no sample")
        for name in self.names:
            for path in self._files(name):
                self.require(path)

    def _files(self, name: str) -> tuple[Path, Path]:
        """(image, label) files of sample ``name``."""
        return self.root / "images" / f"{name}.png", self.root / "labels" / f"{name}.png"

    def read(self, index: int) -> Sample:
        """Sample ``index``: channels 0-2 of the image as RGB, channel 3 as thermal, labels by
        the ``unlabeled`` convention."""
        image_path, label_path = self._files(self.names[index])
        image = read_array(image_path)
        if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
            raise KdbenchError(
                f"{image_path}: expected an 8-bit 4-channel PNG (R, G, B, thermal), got "
                f"shape {image.shape} {image.dtype}"
            )
        raw = index_image(label_path)
        check_same_size([image_path, label_path], [image, raw])
        pixels = image.astype(np.float32) / 255.0
        if self.unlabeled == "class":
            label = check_labels(raw, self.num_classes, label_path)
        else:
            label = shift_labels(raw, self.num_classes, label_path)
        return pixels[..., :3], pixels[..., 3:], label
