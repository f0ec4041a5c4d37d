"""Batch-level training augmentation on tensors: random horizontal flip and random scale.

Runs on whatever device the batch is on and draws every random number from an explicit
``torch.Generator``, so a run is reproducible from its seed and step. The same geometry is applied
to rgb, x and label of each sample: flip, then rescale by s and crop/pad back to the input size.
A horizontal flip maps the camera-frame point (X, Y, Z) to (−X, Y, Z) (for a principal point at
the image centre), so a surface normal (n_x, n_y, n_z) becomes (−n_x, n_y, n_z): with
``normals=True`` channel 0 of the flipped x is negated. Rescaling leaves the values of x
unchanged (depth is not divided by s; bilinearly resampled normals are not renormalised, and
they blend towards 0 next to invalid pixels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbench.data.base import IGNORE_INDEX
from kdbench.errors import KdbenchError


def _placement(size: int, scaled: int, u: float) -> tuple[int, int, int]:
    """(source start, target start, length) along one axis, to copy a resized signal of length
    ``scaled`` into ``size`` pixels.

    A random crop when it is longer, a random placement on the zero/ignore canvas when shorter;
    ``u`` in [0, 1) picks the offset uniformly among the |scaled − size| + 1 integer offsets.
    """
    offset = min(int(u * (abs(scaled - size) + 1)), abs(scaled - size))
    if scaled >= size:
        return offset, 0, size
    return 0, offset, scaled


def augment_batch(
    rgb: Tensor,
    x: Tensor,
    label: Tensor,
    generator: torch.Generator,
    *,
    flip: bool = True,
    scale: tuple[float, float] = (0.75, 1.5),
    normals: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Augment a batch: rgb (N, 3, H, W), x (N, C, H, W) float; label (N, H, W) int64.

    Per sample i, with u_i ~ U[0, 1)^4 drawn from ``generator`` (4 numbers per sample whatever
    the options, on the generator's device):

    - flip horizontally if ``flip`` and u_i0 < 1/2 (with ``normals``, x[:, 0] ← −x[:, 0]);
    - s = scale[0] + (scale[1] − scale[0])·u_i1; resize to (round(sH), round(sW)), rgb and x
      bilinearly (align_corners=False, no antialiasing), label by nearest neighbour on the same
      pixel-centre grid ("nearest-exact");
    - crop back to (H, W) at a random integer offset (u_i2, u_i3) if larger, or paste at a
      random offset onto a canvas of 0 (rgb, x) and :data:`IGNORE_INDEX` (label) if smaller,
      each axis on its own.

    Returns new tensors of the input shapes and dtypes; the inputs are not modified. With
    ``flip=False`` and ``scale=(1, 1)`` the inputs themselves are returned. A scale range that
    is not 0 < scale[0] <= scale[1] raises :class:`KdbenchError`.
    """
    low, high = (float(s) for s in scale)
    if not 0 < low <= high:
        raise KdbenchError(f"train.scale {scale!r}: expected [min, max] with 0 < min <= max")
    if not flip and low == high == 1.0:
        return rgb, x, label  # the identity: no copy, no random draw
    n, _, h, w = rgb.shape
    draws = torch.rand(n, 4, generator=generator, device=generator.device).tolist()
    channels = rgb.shape[1]
    images = torch.cat([rgb, x.to(rgb.dtype)], dim=1)
    out_images = torch.zeros_like(images)
    out_label = torch.full_like(label, IGNORE_INDEX)
    for i, (u_flip, u_scale, u_y, u_x) in enumerate(draws):
        image, lab = images[i : i + 1], label[i : i + 1, None]
        if flip and u_flip < 0.5:
            image, lab = image.flip(-1), lab.flip(-1)
            if normals:
                image = image.clone()
                image[:, channels] = -image[:, channels]
        s = low + (high - low) * u_scale
        sh, sw = max(1, math.floor(s * h + 0.5)), max(1, math.floor(s * w + 0.5))
        if (sh, sw) != (h, w):
            image = F.interpolate(image, size=(sh, sw), mode="bilinear", align_corners=False)
            lab = F.interpolate(lab.float(), size=(sh, sw), mode="nearest-exact").long()
        src_y, dst_y, len_y = _placement(h, sh, u_y)
        src_x, dst_x, len_x = _placement(w, sw, u_x)
        out_images[i, :, dst_y : dst_y + len_y, dst_x : dst_x + len_x] = \
            image[0, :, src_y : src_y + len_y, src_x : src_x + len_x]
        out_label[i, dst_y : dst_y + len_y, dst_x : dst_x + len_x] = \
            lab[0, 0, src_y : src_y + len_y, src_x : src_x + len_x]
    return out_images[:, :channels], out_images[:, channels:].to(x.dtype), out_label
