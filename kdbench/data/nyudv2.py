"""NYU Depth v2 (40 classes; 795 train / 654 test images, 480×640) in the DFormer layout.

Layout under the root (default ``$KDBENCH_DATA/nyudv2``), as DFormer and CMX distribute it::

    RGB/<i>.jpg                 8-bit colour image
    Depth/<i>.png | <i>.npy     8-bit depth image (DFormer: min–max scaled per image) or
                                float32 depth in metres
    HHA/<i>.jpg                 3-channel HHA encoding of the depth
    Label/<i>.png               palette or grey PNG, 0 = unlabelled, 1..40 the 40 classes
    train.txt, test.txt         the samples of each split (:mod:`kdbench.data.dformer`)

``modality``: ``depth`` (1 channel: the PNG / 255, or metres / ``max_depth``) or ``hha``
(3 channels / 255). ``source: official`` reads the official ``nyu_depth_v2_labeled.mat`` with
``splits.mat`` and ``classMapping40.mat`` instead (:mod:`kdbench.data.nyudv2_mat`; depth only).
Split "train" = ``train.txt`` (795), "eval" = ``test.txt`` (654; the split of ``splits.mat``),
scored at native resolution. The 40 classes are Gupta et al.'s 40-class mapping of the 894 raw
labels (the names as CMX and DFormer list them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from kdbench.data.dformer import DFormerLayout
from kdbench.data.nyudv2_mat import FILES, OfficialNYU, require_h5py
from kdbench.data.rgbx import Sample
from kdbench.errors import KdbenchError
from kdbench.registry import register_dataset

NYUDV2_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)


@register_dataset("nyudv2", "NYU Depth v2 (40 classes, 795/654, eval = test) + depth or HHA")
class NYUDv2(DFormerLayout):
    """NYU Depth v2 in the DFormer layout (module docstring).

    Options: ``root``, ``modality`` (depth | hha), ``size`` ([H, W] to resize inputs to, or
    native), ``channel_order`` (rgb | bgr), ``max_depth`` (metres, for metric depth),
    ``source`` (dformer: the DFormer/CMX layout | official: the official .mat files).
    """

    folder = "nyudv2"
    layout = (
        "RGB/<i>.jpg, Depth/<i>.png|.npy, HHA/<i>.jpg, Label/<i>.png, train.txt, test.txt "
        "(or, with source: official, nyu_depth_v2_labeled.mat, splits.mat, classMapping40.mat)"
    )
    source = (
        "NYU Depth v2 (https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html) as packaged by "
        "DFormer / CMX (github.com/VCIP-RGBD/DFormer, 'NYUDepthv2')"
    )
    class_names = NYUDV2_CLASSES
    modalities = {"depth": 1, "hha": 3}
    label_folder = "Label"
    x_folders = {"depth": ("Depth", (".png", ".npy")), "hha": ("HHA", (".jpg", ".png"))}

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: Literal["depth", "hha"] = "depth",
        size: Sequence[int] | None = None,
        channel_order: Literal["rgb", "bgr"] = "rgb",
        max_depth: float = 10.0,
        source: Literal["dformer", "official"] = "dformer",
    ) -> None:
        if source not in ("dformer", "official"):
            raise KdbenchError(f"nyudv2: source must be dformer or official, got {source!r}")
        self.source = source
        self._official: OfficialNYU | None = None
        super().__init__(split, root=root, modality=modality, size=size,
                         channel_order=channel_order, max_depth=max_depth)

    def _index(self, split: str) -> None:
        """The DFormer list files, or the official split's image numbers."""
        if self.source == "dformer":
            super()._index(split)
            return
        if self.modality != "depth":
            raise KdbenchError(
                "nyudv2: source official has depth only (no HHA); set modality: depth"
            )
        for name in FILES:
            self.require(self.root / name)
        self._official = OfficialNYU(self.root, split, self.max_depth)
        self.names = [str(number) for number in self._official.numbers]

    def read(self, index: int) -> Sample:
        """Sample ``index`` from the layout the ``source`` option names."""
        if self._official is None:
            return super().read(index)
        return self._official.read(index)

    @classmethod
    def check_available(cls, options: dict[str, Any]) -> Path:
        """The data root and the files of its ``source`` (and h5py for the official files)."""
        if options.get("source") != "official":
            return super().check_available(options)
        root = cls._resolve_root(options.get("root"))
        for name in FILES:
            if not (root / name).is_file():
                raise cls.missing_under(root, root / name)
        require_h5py()
        return root
