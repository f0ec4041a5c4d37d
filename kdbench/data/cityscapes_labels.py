"""The Cityscapes label table: the 34 label ids of the ground-truth images -> the 19 train ids.

Written from the official definition, ``cityscapesscripts/helpers/labels.py`` in
github.com/mcordts/cityscapesScripts (the ``labels`` list: name, id, trainId, ...). Label ids
0..33 appear in ``*_gtFine_labelIds.png``; 'license plate' (id -1) never does. Of the 34 ids, 19
are evaluated and get train ids 0..18; the other 15 (void classes, parking, rail track, guard
rail, bridge, tunnel, polegroup, caravan, trailer) get trainId 255, which is exactly
:data:`kdbench.data.base.IGNORE_INDEX`.

KITTI semantics uses the same label ids ("the data format and metrics are conform with The
Cityscapes Dataset", cvlibs.net/datasets/kitti/eval_semseg.php), so both loaders share this
table.
"""

from __future__ import annotations

import numpy as np

from kdbench.data.base import IGNORE_INDEX

LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
"""The 19 evaluated label ids and their train ids; every other id maps to IGNORE_INDEX."""

NUM_LABEL_IDS = 34
"""Label ids 0..33 ('unlabeled' .. 'bicycle')."""

TRAIN_CLASS_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
"""Names of train ids 0..18, in order."""


def _lookup_table() -> np.ndarray:
    """A 256-entry uint8 table: ``table[label_id]`` is the train id, IGNORE_INDEX elsewhere."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


_TABLE = _lookup_table()


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) uint8 Cityscapes label ids -> (H, W) int64 train ids.

    ``train[p] = LABEL_ID_TO_TRAIN_ID.get(ids[p], IGNORE_INDEX)``; ids 34..255 (which a valid
    label image never holds) are ignored too.
    """
    ids = np.asarray(label_ids)
    if ids.dtype != np.uint8:
        raise TypeError(f"label ids must be uint8, got {ids.dtype}")
    return _TABLE[ids].astype(np.int64)
