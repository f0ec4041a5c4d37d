"""SUN RGB-D (37 classes; 5285 train / 5050 test images, sizes vary by sensor), DFormer layout.

Layout under the root (default ``$KDBENCH_DATA/sunrgbd``)::

    RGB/<stem>.jpg              8-bit colour image
    Depth/<stem>.png            8-bit depth image
    labels/<stem>.png           0 = void, 1..37 the 37 classes (lower-case folder name)
    train.txt, test.txt         the samples of each split (:mod:`kdbench.data.dformer`)

``modality: depth`` (1 channel, the PNG / 255). Split "train" = ``train.txt`` (5285), "eval" =
``test.txt`` (5050). Images of the four sensors differ in size: training batches them by its
crop (``train.crop``), evaluation scores every image at its native size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from kdbench.data.dformer import DFormerLayout
from kdbench.registry import register_dataset

SUNRGBD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "fridge", "tv", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag",
)


@register_dataset("sunrgbd", "SUN RGB-D (37 classes, 5285/5050, eval = test) + depth")
class SUNRGBD(DFormerLayout):
    """SUN RGB-D in the DFormer layout (module docstring).

    Options: ``root``, ``modality`` (depth), ``size`` ([H, W] or native), ``channel_order``
    (rgb | bgr), ``max_depth`` (metres, for ``.npy`` depth).
    """

    folder = "sunrgbd"
    layout = "RGB/<stem>.jpg, Depth/<stem>.png, labels/<stem>.png, train.txt, test.txt"
    source = (
        "SUN RGB-D (https://rgbd.cs.princeton.edu/) as packaged by DFormer "
        "(github.com/VCIP-RGBD/DFormer, 'SUNRGBD')"
    )
    class_names = SUNRGBD_CLASSES
    modalities = {"depth": 1}
    label_folder = "labels"
    x_folders = {"depth": ("Depth", (".png", ".npy"))}

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: Literal["depth"] = "depth",
        size: Sequence[int] | None = None,
        channel_order: Literal["rgb", "bgr"] = "rgb",
        max_depth: float = 10.0,
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size,
                         channel_order=channel_order, max_depth=max_depth)
