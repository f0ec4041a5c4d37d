"""PASCAL VOC 2012 with the SBD augmentation (21 classes with background; 10,582 train_aug /
1,449 val images of varying size). RGB only.

Layout under the root (default ``$KDBENCH_DATA/voc``), VOC2012's folder with SBD's
``SegmentationClassAug`` beside it::

    JPEGImages/<id>.jpg
    SegmentationClassAug/<id>.png       grey PNG of class indices (train_aug)
    SegmentationClass/<id>.png          palette PNG, its indices read as stored (val)
    ImageSets/Segmentation/train_aug.txt, val.txt   (or at the root) one id a line

0 = background, 1..20 the object classes, 255 = ignore (object borders). Split "train" =
``train_aug.txt`` with ``SegmentationClassAug``, "eval" = ``val.txt`` (1,449) with
``SegmentationClass``, scored at native resolution. There is no second modality: ``x`` is one
channel of zeros and only the ``rgb`` teacher runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from kdbench.data.loading import check_same_size, read_rgb
from kdbench.data.rgbx import RGBXDataset, Sample, check_labels, index_image, no_x, read_list
from kdbench.errors import KdbenchError
from kdbench.registry import register_dataset

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
SPLIT_FILES = {"train": ("train_aug.txt", "SegmentationClassAug"),
               "eval": ("val.txt", "SegmentationClass")}
LIST_FOLDERS = ("ImageSets/Segmentation", ".")


@register_dataset("voc", "PASCAL VOC 2012 + SBD (21 classes, 10582/1449, eval = val), RGB only")
class VOC(RGBXDataset):
    """PASCAL VOC 2012 augmented (module docstring).

    Options: ``root``, ``size`` ([H, W] or native), ``channel_order`` (rgb | bgr);
    ``modality`` is ``none`` (RGB only).
    """

    folder = "voc"
    layout = (
        "JPEGImages/<id>.jpg, SegmentationClassAug/<id>.png, SegmentationClass/<id>.png, "
        "ImageSets/Segmentation/{train_aug,val}.txt"
    )
    source = (
        "PASCAL VOC 2012 (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) and SBD's "
        "SegmentationClassAug (as CIRKD and mmsegmentation prepare it)"
    )
    class_names = VOC_CLASSES
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
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size,
                         channel_order=channel_order)
        list_name, self.label_folder = SPLIT_FILES[split]
        list_file = find_list(self.root, list_name)
        if list_file is None:
            raise self.missing(self.root / LIST_FOLDERS[0] / list_name)
        self.names = read_list(list_file)
        if not self.names:
            raise KdbenchError(f"voc: {list_file} lists no image")
        for index in range(len(self.names)):
            for path in self._files(index):
                self.require(path)

    @classmethod
    def check_available(cls, options: dict[str, Any]) -> Path:
        """The data root and both list files, or the one-line missing-data error."""
        root = super().check_available(options)
        for list_name, _ in SPLIT_FILES.values():
            if find_list(root, list_name) is None:
                raise cls.missing_under(root, root / LIST_FOLDERS[0] / list_name)
        return root

    def _files(self, index: int) -> tuple[Path, Path]:
        """(image, label) files of sample ``index``."""
        name = self.names[index]
        return (self.root / "JPEGImages" / f"{name}.jpg",
                self.root / self.label_folder / f"{name}.png")

    def read(self, index: int) -> Sample:
        """Sample ``index``: RGB, no x, class indices as stored (255 = ignore)."""
        files = self._files(index)
        rgb = read_rgb(files[0])
        label = check_labels(index_image(files[1]), self.num_classes, files[1])
        check_same_size(files, [rgb, label])
        return rgb, no_x(label), label


def find_list(root: Path, name: str) -> Path | None:
    """The list file ``name`` under ``ImageSets/Segmentation`` or the root, or None."""
    for folder in LIST_FOLDERS:
        path = root / folder / name
        if path.is_file():
            return path
    return None
