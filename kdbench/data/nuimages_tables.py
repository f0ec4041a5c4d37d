"""A reader of nuImages' JSON tables and semantic masks, kdbench's own (no torch, no devkit).

The official nuscenes-devkit pins numpy < 2, which kdbench cannot share, so this module reads
the four tables the semantic masks need, ``<root>/<version>/{category, sample_data, object_ann,
surface_ann}.json`` (each a JSON list of records keyed by ``token``), and forms the mask exactly
as the devkit's ``NuImages.get_segmentation`` does (nuimages/nuimages.py and
nuimages/utils/utils.py of nutonomy/nuscenes-devkit):

- category index (``name_to_index_mapping``): the category names sorted, without
  ``vehicle.ego`` and ``flat.driveable_surface``, are 1..n (n < 24), ``flat.driveable_surface``
  is 24, ``vehicle.ego`` 31, and 0 is the background (no annotation);
- the mask starts at 0 (H, W from ``sample_data.height/width``); every surface annotation of the
  image is painted with its category index, then every object annotation, in the order of their
  tokens; an annotation whose ``mask`` is null is skipped;
- a ``mask`` is ``{"size": [H, W], "counts": base64 of COCO's compressed RLE}``, decoded by
  pycocotools (``mask_decode``).

pycocotools is imported when a mask is decoded (the ``nuimages`` extra).
"""

from __future__ import annotations

import base64
import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

TABLES = ("category", "sample_data", "object_ann", "surface_ann")
EGO, DRIVEABLE = "vehicle.ego", "flat.driveable_surface"
EGO_INDEX, DRIVEABLE_INDEX = 31, 24
INSTALL_HINT = "pip install 'kdbench[nuimages]' (pycocotools)"


class TableError(ValueError):
    """A table is missing or malformed (the message names the file)."""


def read_table(root: Path, version: str, name: str) -> list[dict[str, Any]]:
    """The records of ``<root>/<version>/<name>.json``."""
    path = root / version / f"{name}.json"
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TableError(f"{path}: cannot read the nuImages table ({err})") from err
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TableError(f"{path}: expected a JSON list of records")
    return records


def category_indices(categories: list[dict[str, Any]]) -> dict[str, int]:
    """Category name -> the devkit's mask index (module docstring)."""
    names = sorted(c["name"] for c in categories if c["name"] not in (EGO, DRIVEABLE))
    if len(names) >= DRIVEABLE_INDEX:
        raise TableError(f"expected fewer than {DRIVEABLE_INDEX} categories, got {len(names)}")
    index = {name: i for i, name in enumerate(names, start=1)}
    return {**index, DRIVEABLE: DRIVEABLE_INDEX, EGO: EGO_INDEX}


def decode_mask(mask: dict[str, Any]) -> np.ndarray:
    """A nuImages mask record -> (H, W) uint8 of 0/1 (base64-wrapped COCO RLE)."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError as err:
        raise ImportError(f"nuimages needs pycocotools: {INSTALL_HINT}") from err
    rle = {"size": list(mask["size"]), "counts": base64.b64decode(mask["counts"])}
    with warnings.catch_warnings():  # pycocotools 2.0 under numpy 2: a copy-keyword notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(coco_mask.decode(rle), dtype=np.uint8)


class NuImagesTables:
    """The tables of one nuImages version under ``root`` (e.g. ``v1.0-val``), indexed by image.

    ``key_frames``: the key-frame ``sample_data`` records, sorted by token; ``index``: category
    name -> mask index; :meth:`semantic` the devkit's semantic mask of one image.
    """

    def __init__(self, root: Path, version: str) -> None:
        tables = {name: read_table(root, version, name) for name in TABLES}
        self.category_name = {c["token"]: c["name"] for c in tables["category"]}
        self.index = category_indices(tables["category"])
        self.key_frames = sorted(
            (s for s in tables["sample_data"] if s.get("is_key_frame")), key=lambda s: s["token"]
        )
        self.annotations: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for name in ("surface_ann", "object_ann"):
            ordered = tables[name] if name == "surface_ann" else sorted(
                tables[name], key=lambda a: a["token"])
            for ann in ordered:
                self.annotations[ann["sample_data_token"]].append(ann)

    def semantic(self, sample_data: dict[str, Any]) -> np.ndarray:
        """(H, W) int32 mask of the devkit's category indices for one ``sample_data`` record."""
        out = np.zeros((sample_data["height"], sample_data["width"]), dtype=np.int32)
        for ann in self.annotations.get(sample_data["token"], []):
            if ann.get("mask") is None:
                continue
            mask = decode_mask(ann["mask"])
            if mask.shape != out.shape:
                raise TableError(
                    f"annotation {ann['token']}: mask size {mask.shape} differs from the image's "
                    f"{out.shape}"
                )
            out[mask == 1] = self.index[self.category_name[ann["category_token"]]]
        return out
