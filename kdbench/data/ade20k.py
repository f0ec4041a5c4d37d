"""ADE20K as the MIT Scene Parsing Benchmark (SceneParse150: 150 classes; 20,210 training /
2,000 validation images of varying size). RGB only.

Layout under the root (default ``$KDBENCH_DATA/ade20k``), the official
``ADEChallengeData2016.zip`` unpacked::

    ADEChallengeData2016/images/{training,validation}/ADE_<split>_<id>.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_<split>_<id>.png
                                   0 = "other" (→ ignore), k = 1..150 → train id k − 1

Split "train" = ``training``, "eval" = ``validation`` (2,000), scored at native resolution.
There is no second modality: ``x`` is one channel of zeros and only the ``rgb`` teacher runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from kdbench.data.loading import check_same_size, read_rgb
from kdbench.data.rgbx import RGBXDataset, Sample, index_image, no_x, shift_labels
from kdbench.registry import register_dataset

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
OFFICIAL_SPLIT = {"train": "training", "eval": "validation"}
BASE = "ADEChallengeData2016"


@register_dataset("ade20k", "ADE20K SceneParse150 (150 classes, 20210/2000, eval = val), RGB only")
class ADE20K(RGBXDataset):
    """ADE20K / SceneParse150 (module docstring).

    Options: ``root``, ``size`` ([H, W] or native), ``channel_order`` (rgb | bgr);
    ``modality`` is ``none`` (RGB only).
    """

    folder = "ade20k"
    layout = f"{BASE}/{{images,annotations}}/{{training,validation}}/<name>.{{jpg,png}}"
    source = (
        "the MIT Scene Parsing Benchmark, http://sceneparsing.csail.mit.edu/ "
        "(ADEChallengeData2016.zip)"
    )
    class_names = ADE20K_CLASSES
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
        folder = self.root / BASE / "images" / OFFICIAL_SPLIT[split]
        if not folder.is_dir():
            raise self.missing(folder, "folder")
        self.names = sorted(p.stem for p in folder.glob("*.jpg"))
        if not self.names:
            raise self.missing(folder / "<name>.jpg")
        for index in range(len(self.names)):
            self.require(self._files(index)[1])

    def _files(self, index: int) -> tuple[Path, Path]:
        """(image, annotation) files of sample ``index``."""
        split, name = OFFICIAL_SPLIT[self.split], self.names[index]
        return (
            self.root / BASE / "images" / split / f"{name}.jpg",
            self.root / BASE / "annotations" / split / f"{name}.png",
        )

    def read(self, index: int) -> Sample:
        """Sample ``index``: RGB, no x, labels k → k − 1 with 0 ("other") → ignore."""
        files = self._files(index)
        rgb = read_rgb(files[0])
        label = shift_labels(index_image(files[1]), self.num_classes, files[1])
        check_same_size(files, [rgb, label])
        return rgb, no_x(label), label
