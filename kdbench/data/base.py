"""What every data set yields, and the conventions all of them share.

A data set is a ``torch.utils.data.Dataset`` registered with ``@register_dataset(name)``. It is
built as ``cls(split, **options)`` where ``split`` is ``"train"`` or ``"eval"`` and the options
come from the suite. Each item is a dict:

- ``rgb``: float32 (3, H, W), normalised;
- ``x``: float32 (C_x, H, W), the geometric modality chosen by the ``modality`` option;
- ``label``: int64 (H, W), :data:`IGNORE_INDEX` where unlabelled.

Class attributes / properties every data set provides: ``class_names`` (tuple of K names, the
train ids in order), ``num_classes`` (K) and ``x_channels`` (C_x for the chosen modality).
A data set whose files are missing raises :class:`kdbench.errors.KdbenchError` in its
constructor, naming the expected layout and where the data set is obtained.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = 255
"""Label value of unlabelled pixels, masked out of every loss and metric."""

RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)


def normalize_rgb(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 or [0, 1] float image -> (3, H, W) float32 tensor, ImageNet-normalised."""
    array = np.asarray(image, dtype=np.float32)
    if np.issubdtype(np.asarray(image).dtype, np.integer):
        array = array / 255.0
    mean = np.asarray(RGB_MEAN, dtype=np.float32)
    std = np.asarray(RGB_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1)))
