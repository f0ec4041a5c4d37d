"""KITTI semantic segmentation (200 labelled training images) with depth from KITTI stereo 2015.

Layout under the root (default ``$KDBENCH_DATA/kitti``; each official archive unpacked into a
folder of its own name), ``<id>`` = 000000 .. 000199::

    data_semantics/training/image_2/<id>_10.png              left colour image, 8-bit RGB
    data_semantics/training/semantic/<id>_10.png             uint8 Cityscapes label ids
    data_scene_flow/training/disp_occ_0/<id>_10.png          uint16 disparity
    data_scene_flow_calib/training/calib_cam_to_cam/<id>.txt calibration (P_rect_02)

Checked against the data sets' own documentation:

- cvlibs.net/datasets/kitti/eval_semseg.php: 200 training and 200 test images "corresponding to
  the KITTI Stereo and Flow Benchmark 2015", data format "conform with The Cityscapes Dataset";
  the devkit_semantics README: ``training/image_2`` and ``training/semantic``, "single channel
  uint8 8-bit PNG image with each pixel value representing its semantic label ID". Label ids ->
  the 19 train ids with :mod:`kdbench.data.cityscapes_labels`.
- The stereo/flow/scene flow 2015 devkit readme: file names ``xxxxxx_10.png`` (10 = reference
  frame), ``disp_occ_0`` = disparity of the first pair, all pixels with ground truth; "Disparity
  maps are saved as uint16 PNG images ... A 0 value indicates an invalid pixel ...
  disp(u,v) = ((float)I(u,v))/256.0". Calibration ``calib_cam_to_cam/<id>.txt`` lines
  ``key: numbers``; ``P_rect_02`` is the 3x4 rectified projection K[I|t] of the left colour
  camera, so f_x = P[0,0], f_y = P[1,1], c_x = P[0,2], c_y = P[1,2].

Depth: z = f_x·B/d with B = ``baseline`` (default 0.54 m, the KITTI stereo rig); pixels with
d = 0 are invalid (depth 0). Ground truth is sparse (LiDAR accumulated over frames), so
``dense_dir`` may name a folder of dense maps with the same file names (``<id>_10.png``; absolute
or relative to the root), uint16 PNGs in the same value/256 encoding holding disparity in pixels
(``dense_kind="disparity"``, e.g. a stereo network's output) or depth in metres
(``dense_kind="depth"``, as KITTI depth completion stores it); 0 = invalid.

Split (fixed; KITTI has no official validation set): "eval" = the 40 images whose index is a
multiple of 5 (000000, 000005, ..., 000195), "train" = the other 160.

Image sizes differ slightly between images (about 1242x375); set ``size`` to batch them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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

EVAL_EVERY = 5
"""Images whose index is a multiple of EVAL_EVERY form the eval split."""

IMAGE_DIR = "data_semantics/training/image_2"
LABEL_DIR = "data_semantics/training/semantic"
DISPARITY_DIR = "data_scene_flow/training/disp_occ_0"
CALIB_DIR = "data_scene_flow_calib/training/calib_cam_to_cam"
DENSE_KINDS = ("disparity", "depth")


def read_p_rect_02(path: Path) -> Intrinsics:
    """The intrinsics of the left colour camera from a KITTI ``calib_cam_to_cam`` file.

    Reads the line ``P_rect_02: p00 p01 ... p23`` (row-major 3x4 projection K[I|t]) and returns
    (f_x, f_y, c_x, c_y) = (P[0,0], P[1,1], P[0,2], P[1,2]).
    """
    for line in path.read_text().splitlines():
        key, _, values = line.partition(":")
        if key.strip() != "P_rect_02":
            continue
        try:
            p = np.array([float(v) for v in values.split()]).reshape(3, 4)
        except ValueError:
            break
        return Intrinsics(fx=p[0, 0], fy=p[1, 1], cx=p[0, 2], cy=p[1, 2])
    raise KdbenchError(f"{path}: expected a line 'P_rect_02: <12 numbers>' (3x4 projection)")


@register_dataset("kitti", "KITTI semantics (200 images, 19 classes) + stereo 2015 disparity")
class KittiSemantics(FolderDataset):
    """KITTI semantic segmentation with stereo-2015 disparity as depth (module docstring).

    Options besides the common ones (:class:`~kdbench.data.loading.FolderDataset`):
    ``baseline`` (metres, default 0.54), ``dense_dir`` (folder of dense maps, default None: the
    sparse ``disp_occ_0``) and ``dense_kind`` ("disparity" or "depth").
    """

    folder = "kitti"
    layout = (
        f"{{{IMAGE_DIR},{LABEL_DIR},{DISPARITY_DIR}}}/<id>_10.png and {CALIB_DIR}/<id>.txt "
        "(<id> = 000000..000199)"
    )
    source = (
        "the KITTI Vision Benchmark Suite, https://www.cvlibs.net/datasets/kitti/ : "
        "semantic segmentation (eval_semseg.php) + stereo 2015 and its calibration "
        "(eval_scene_flow.php?benchmark=stereo)"
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
        baseline: float = 0.54,
        dense_dir: str | None = None,
        dense_kind: str = "disparity",
    ) -> None:
        super().__init__(split, root=root, modality=modality, size=size, max_depth=max_depth)
        if not baseline > 0:
            raise KdbenchError(f"kitti: baseline must be > 0 metres, got {baseline!r}")
        if dense_kind not in DENSE_KINDS:
            raise KdbenchError(f"kitti: dense_kind must be in {DENSE_KINDS}, got {dense_kind!r}")
        self.baseline = float(baseline)
        self.depth_kind = dense_kind if dense_dir is not None else "disparity"
        self.depth_dir = self._dense_folder(dense_dir) if dense_dir else self.root / DISPARITY_DIR

        image_dir = self.root / IMAGE_DIR
        if not image_dir.is_dir():
            raise self.missing(image_dir, "folder")
        ids = sorted(
            p.name[:6] for p in image_dir.iterdir() if re.fullmatch(r"\d{6}_10\.png", p.name)
        )
        if not ids:
            raise self.missing(image_dir / "000000_10.png")
        wanted_eval = split == "eval"
        self.names = [i for i in ids if (int(i) % EVAL_EVERY == 0) == wanted_eval]
        self._intrinsics: dict[str, Intrinsics] = {}
        for name in self.names:
            self.require(self.root / LABEL_DIR / f"{name}_10.png")
            depth_file = self.depth_dir / f"{name}_10.png"
            if dense_dir and not depth_file.is_file():
                raise KdbenchError(
                    f"kitti: dense map {depth_file} not found; expected "
                    f"{self.depth_dir}/<id>_10.png for every image "
                    f"(uint16 PNG, value/256 = {self.depth_kind})"
                )
            self.require(depth_file)
            calib = self.require(self.root / CALIB_DIR / f"{name}.txt")
            self._intrinsics[name] = read_p_rect_02(calib)

    def _dense_folder(self, dense_dir: str) -> Path:
        """``dense_dir`` as an existing folder, relative paths taken from the root."""
        path = Path(dense_dir).expanduser()
        path = path if path.is_absolute() else self.root / path
        if not path.is_dir():
            raise KdbenchError(
                f"kitti: dense_dir {path} not found; expected a folder of <id>_10.png uint16 PNGs "
                f"(value/256 = {self.depth_kind})"
            )
        return path

    def frame(self, index: int) -> Frame:
        """Sample ``index``: RGB, depth = f_x·B/(v/256) (or the dense map), train-id labels."""
        name = self.names[index]
        files = [
            self.root / IMAGE_DIR / f"{name}_10.png",
            self.depth_dir / f"{name}_10.png",
            self.root / LABEL_DIR / f"{name}_10.png",
        ]
        rgb = read_rgb(files[0])
        value = read_uint16(files[1]) / 256.0  # 0 = invalid
        label = label_ids_to_train_ids(read_uint8(files[2]))
        check_same_size(files, [rgb, value, label])
        intrinsics = self._intrinsics[name]
        if self.depth_kind == "depth":
            depth = value.astype(np.float32)
        else:
            depth = disparity_to_depth(value, intrinsics.fx, self.baseline)
        return Frame(rgb, depth, label, intrinsics, self.baseline)
