r"""Training augmentation of one sample: photometric jitter, random scale, random crop, flip.

The recipe of segmentation-KD papers (CIRKD, DIST, MasKD): a random scale of the (native) image,
then a random crop to a fixed size, padded where the scaled image is smaller, and a random
horizontal flip. The same geometry is applied to rgb, x and label. Every random number is an
argument (``u``, 8 uniforms in [0, 1)), so the caller seeds it per (run seed, step, sample) and
a run is reproducible and resumable whatever the number of DataLoader workers.

A horizontal flip maps the camera-frame point (X, Y, Z) to (−X, Y, Z) (for a principal point at
the image centre), so a surface normal (n_x, n_y, n_z) becomes (−n_x, n_y, n_z): with
``normals=True`` channel 0 of the flipped x is negated. Rescaling leaves the values of x
unchanged (depth is not divided by s, disparity not multiplied by it), as evaluation does when it
resizes its input; x is resampled by nearest neighbour on pixel centres (``nearest-exact``), so
every value is a measured one, never a blend across an occlusion edge or with an invalid (0)
pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from kdbench.data.base import IGNORE_INDEX, RGB_MEAN, RGB_STD
from kdbench.errors import KdbenchError

DRAWS = 8
"""Uniforms per sample: flip, scale, crop y, crop x, brightness, contrast, saturation, spare."""


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


Window = tuple[int, int, int, int]
"""Along one axis: (first output pixel, output length, input size, resized size)."""


def _nearest_index(window: Window) -> Tensor:
    """Input pixel of each output pixel of the window, nearest-exact: min(floor((i + 1/2)·in/out),
    in − 1), computed in float32 as ``F.interpolate`` does (so the two agree where
    (i + 1/2)·in/out is an integer)."""
    start, length, size_in, size_out = window
    i = torch.arange(start, start + length, dtype=torch.float32) + 0.5
    scale = torch.tensor(size_in / size_out, dtype=torch.float32)
    return (i * scale).floor().long().clamp(0, size_in - 1)


def _linear_index(window: Window) -> tuple[Tensor, Tensor, Tensor]:
    """(floor c, min(floor c + 1, in − 1), c − floor c) with c = max((i + 1/2)·in/out − 1/2, 0),
    the bilinear source coordinate of each output pixel (align_corners=False), in float64."""
    start, length, size_in, size_out = window
    i = torch.arange(start, start + length, dtype=torch.float64)
    c = ((i + 0.5) * (size_in / size_out) - 0.5).clamp_min(0)
    low = c.floor()
    frac = c - low
    low = low.long().clamp(max=size_in - 1)
    return low, (low + 1).clamp(max=size_in - 1), frac


def _box(t: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, int, int]:
    """The view of ``t`` (C, H, W) over the rows and columns the indices touch, with offsets,
    so that indexing reads only that box of a large image."""
    r0, c0 = int(rows.min()), int(cols.min())
    return t[:, r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1], r0, c0


def nearest_window(t: Tensor, rows: Window, cols: Window) -> Tensor:
    """The window of (C, H, W) ``t`` resized by nearest neighbour on pixel centres
    ("nearest-exact", :func:`_nearest_index`). Computes only the window, never the whole
    resized image."""
    r, c = _nearest_index(rows), _nearest_index(cols)
    box, r0, c0 = _box(t, r, c)
    return box.index_select(1, r - r0).index_select(2, c - c0)


def bilinear_window(t: Tensor, rows: Window, cols: Window) -> Tensor:
    """The window of (C, H, W) float ``t`` resized bilinearly (align_corners=False, no
    antialiasing, as ``F.interpolate``): along each axis, value (1 − f)·t[floor c] +
    f·t[min(floor c + 1, in − 1)] (:func:`_linear_index`); rows first, then columns. Computes
    only the window, never the whole resized image."""
    r_low, r_high, r_frac = _linear_index(rows)
    c_low, c_high, c_frac = _linear_index(cols)
    box, r0, c0 = _box(t, torch.cat([r_low, r_high]), torch.cat([c_low, c_high]))
    top, bottom = box.index_select(1, r_low - r0), box.index_select(1, r_high - r0)
    out = top + (bottom - top) * r_frac.to(t.dtype)[None, :, None]
    left, right = out.index_select(2, c_low - c0), out.index_select(2, c_high - c0)
    return left + (right - left) * c_frac.to(t.dtype)[None, None, :]


def jitter_rgb(rgb: Tensor, strength: float, u: Sequence[float]) -> Tensor:
    r"""Photometric jitter of an ImageNet-normalised rgb (3, H, W), in [0, 1] colour space.

    With I = rgb·σ + μ, factors b, c, s = 1 + strength·(2u − 1) (brightness, contrast,
    saturation) and Y(I) = 0.299 R + 0.587 G + 0.114 B the luma:

        I ← clip(b·I);  I ← clip(c·(I − mean Y(I)) + mean Y(I));  I ← clip(s·(I − Y(I)) + Y(I))

    and the result normalised again. ``strength`` = 0 returns ``rgb`` itself.
    """
    if strength == 0:
        return rgb
    mean = torch.tensor(RGB_MEAN, dtype=rgb.dtype)[:, None, None]
    std = torch.tensor(RGB_STD, dtype=rgb.dtype)[:, None, None]
    luma = torch.tensor((0.299, 0.587, 0.114), dtype=rgb.dtype)[:, None, None]
    b, c, s = (1 + strength * (2 * v - 1) for v in u)
    image = (rgb * std + mean).mul(b).clamp(0, 1)
    grey = (image * luma).sum(0).mean()
    image = ((image - grey) * c + grey).clamp(0, 1)
    grey_pixel = (image * luma).sum(0, keepdim=True)
    image = ((image - grey_pixel) * s + grey_pixel).clamp(0, 1)
    return (image - mean) / std


def augment_sample(
    rgb: Tensor,
    x: Tensor,
    label: Tensor,
    u: Sequence[float],
    *,
    flip: bool = True,
    scale: Sequence[float] = (0.75, 1.5),
    crop: Sequence[int] | None = None,
    normals: bool = False,
    jitter: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Augment one sample: rgb (3, H, W), x (C, H, W) float; label (H, W) int64.

    With ``u`` = :data:`DRAWS` uniforms in [0, 1):

    - photometric jitter of rgb (:func:`jitter_rgb`, u_4 .. u_6) if ``jitter`` > 0;
    - s = scale[0] + (scale[1] − scale[0])·u_1; resize to (round(sH), round(sW)), rgb
      bilinearly (align_corners=False, no antialiasing), x and label by nearest neighbour on
      the same pixel-centre grid ("nearest-exact");
    - crop to ``crop`` = (h, w) (default: (H, W)) at a random integer offset (u_2, u_3) where
      the scaled image is larger, or paste it at a random offset onto a canvas of 0 (rgb: the
      mean colour after normalisation; x: invalid) and :data:`IGNORE_INDEX` (label) where it
      is smaller, each axis on its own. Only the cropped window of the resized image is
      computed (:func:`bilinear_window`, :func:`nearest_window`), so the cost is that of the
      crop, not of an image scaled up to 2x;
    - flip horizontally if ``flip`` and u_0 < 1/2 (with ``normals``, x[0] ← −x[0]).

    Returns new tensors of shapes (3, h, w), (C, h, w), (h, w); the inputs are not modified.
    With ``flip=False``, ``scale=(1, 1)``, no jitter and ``crop`` null or (H, W) the inputs
    themselves are returned. A scale range that is not 0 < scale[0] <= scale[1] raises
    :class:`KdbenchError`.
    """
    low, high = (float(s) for s in scale)
    if not 0 < low <= high:
        raise KdbenchError(f"train.scale {list(scale)!r}: expected [min, max] with 0 < min <= max")
    u_flip, u_scale, u_y, u_x, *u_colour = (float(v) for v in u)
    h, w = label.shape
    ch, cw = (h, w) if crop is None else (int(crop[0]), int(crop[1]))
    if not flip and low == high == 1.0 and jitter == 0 and (ch, cw) == (h, w):
        return rgb, x, label  # the identity: no copy
    rgb = jitter_rgb(rgb, jitter, u_colour[:3])
    s = low + (high - low) * u_scale
    sh, sw = max(1, math.floor(s * h + 0.5)), max(1, math.floor(s * w + 0.5))
    src_y, dst_y, len_y = _placement(ch, sh, u_y)
    src_x, dst_x, len_x = _placement(cw, sw, u_x)
    rows, cols = (src_y, len_y, h, sh), (src_x, len_x, w, sw)
    out_rgb = rgb.new_zeros(3, ch, cw)
    out_x = x.new_zeros(x.shape[0], ch, cw)
    out_label = label.new_full((ch, cw), IGNORE_INDEX)
    target = (slice(dst_y, dst_y + len_y), slice(dst_x, dst_x + len_x))
    out_rgb[:, target[0], target[1]] = bilinear_window(rgb, rows, cols)
    out_x[:, target[0], target[1]] = nearest_window(x, rows, cols)
    out_label[target] = nearest_window(label[None], rows, cols)[0]
    if flip and u_flip < 0.5:
        out_rgb, out_x, out_label = out_rgb.flip(-1), out_x.flip(-1), out_label.flip(-1)
        if normals:
            out_x[0] = -out_x[0]
    return out_rgb, out_x, out_label
