"""DeLiVER (CMNeXt's synthetic driving set; 25 classes; 1042×1042; depth, event and LiDAR
images beside RGB, under five weather and light conditions).

Layout under the root (default ``$KDBENCH_DATA/deliver``), ``<cond>`` ∈ cloud, fog, night,
rain, sun and ``<split>`` ∈ train, val, test::

    img/<cond>/<split>/<scene>/<frame>_rgb_front.png           8-bit RGB
    hha/<cond>/<split>/<scene>/<frame>_depth_front.png         HHA (what CMNeXt reads as "depth")
    depth/<cond>/<split>/<scene>/<frame>_depth_front.png       depth image
    event/<cond>/<split>/<scene>/<frame>_event_front.png       event image
    lidar/<cond>/<split>/<scene>/<frame>_lidar_front.png       LiDAR projection image
    semantic/<cond>/<split>/<scene>/<frame>_semantic_front.png red channel: 1..25 the classes,
                                                               0 and 255 unlabelled

Every modality's path is the RGB path with its folder and file-name part replaced, as CMNeXt
forms it. ``modality``: ``hha`` (3 channels), ``depth`` (1), ``event`` (3), ``lidar`` (3); an
image is divided by its type's maximum, a grey one repeated to the channels asked for
(:func:`~kdbench.data.rgbx.unit_image`). Labels 1..25 → train ids 0..24, 0 and 255 → ignore.
Split "train" = ``train``, "eval" = ``eval_split`` (``val`` by default, as CMNeXt reports; or
``test``), over the ``conditions`` listed (all five by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from kdbench.data.loading import check_same_size, read_rgb
from kdbench.data.rgbx import RGBXDataset, Sample, index_image, shift_labels, unit_image
from kdbench.errors import KdbenchError
from kdbench.registry import register_dataset

DELIVER_CLASSES = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk",
    "Vegetation", "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack",
    "GroundRail", "TrafficLight", "Static", "Dynamic", "Water", "Terrain", "TwoWheeler", "Bus",
    "Truck",
)
CONDITIONS = ("cloud", "fog", "night", "rain", "sun")
RGB_SUFFIX = "_rgb_front.png"
X_FILES = {
    "hha": ("hha", "_depth_front.png"),
    "depth": ("depth", "_depth_front.png"),
    "event": ("event", "_event_front.png"),
    "lidar": ("lidar", "_lidar_front.png"),
}
"""modality -> (folder, file-name suffix replacing ``_rgb_front.png``)."""


@register_dataset("deliver", "DeLiVER (25 classes, 1042x1042, eval = val) + depth/HHA/event/LiDAR")
class Deliver(RGBXDataset):
    """DeLiVER with one of its modalities as x (module docstring).

    Options: ``root``, ``modality`` (hha | depth | event | lidar), ``size`` ([H, W] or native),
    ``channel_order`` (rgb | bgr), ``conditions`` (subset of cloud, fog, night, rain, sun),
    ``eval_split`` (val | test).
    """

    folder = "deliver"
    layout = (
        "{img,hha,depth,event,lidar,semantic}/<cond>/<split>/<scene>/"
        "<frame>_{rgb,depth,depth,event,lidar,semantic}_front.png"
    )
    source = "DeLiVER (github.com/jamycheung/DELIVER, the CMNeXt project)"
    class_names = DELIVER_CLASSES
    modalities = {"hha": 3, "depth": 1, "event": 3, "lidar": 3}

    def __init__(
        self,
        split: str,
        *,
        root: str | None = None,
        modality: Literal["hha", "depth", "event", "lidar"] = "hha",
        size: Sequence[int] | None = None,
        channel_order: Literal["rgb", "bgr"] = "rgb",
        conditions: Sequence[Literal["cloud", "fog", "night", "rain", "sun"]] = CONDITIONS,
        eval_split: Literal["val", "test"] = "val",
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size,
                         channel_order=channel_order)
        if not conditions or not set(conditions) <= set(CONDITIONS) or len(
            set(conditions)) != len(conditions):
            raise KdbenchError(
                f"deliver: conditions must be distinct names from {CONDITIONS}, got {conditions!r}"
            )
        if eval_split not in ("val", "test"):
            raise KdbenchError(f"deliver: eval_split must be val or test, got {eval_split!r}")
        self.official_split = "train" if split == "train" else eval_split
        self._rgb: list[Path] = []
        for condition in sorted(conditions):
            folder = self.root / "img" / condition / self.official_split
            if not folder.is_dir():
                raise self.missing(folder, "folder")
            self._rgb += sorted(folder.glob(f"*/*{RGB_SUFFIX}"))
        if not self._rgb:
            raise self.missing(self.root / "img" / "<cond>" / self.official_split /
                               f"<scene>/<frame>{RGB_SUFFIX}")
        self.names = [str(p.relative_to(self.root / "img"))[: -len(RGB_SUFFIX)]
                      for p in self._rgb]
        for index in range(len(self.names)):
            for path in self._files(index)[1:]:
                self.require(path)

    def _files(self, index: int) -> tuple[Path, Path, Path]:
        """(rgb, x, label) files of sample ``index``."""
        stem = self.names[index]
        folder, suffix = X_FILES[self.modality]
        return (
            self._rgb[index],
            self.root / folder / f"{stem}{suffix}",
            self.root / "semantic" / f"{stem}_semantic_front.png",
        )

    def read(self, index: int) -> Sample:
        """Sample ``index``: RGB, x (:func:`~kdbench.data.rgbx.unit_image`), labels from the red
        channel, 1..25 → 0..24, 0 and 255 → ignore."""
        files = self._files(index)
        rgb = read_rgb(files[0])
        x = unit_image(files[1], self.x_channels)
        label = shift_labels(index_image(files[2]), self.num_classes, files[2])
        check_same_size(files, [rgb, x, label])
        return rgb, x, label
