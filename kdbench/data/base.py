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

IGNORE_INDEX = 255
"""Label value of unlabelled pixels, masked out of every loss and metric."""
