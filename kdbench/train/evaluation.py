r"""The evaluation protocol: metrics at each label's native resolution.

An eval item is ``{"rgb": (3, h, w), "x": (C_x, h, w), "label": (H, W)}``: the input at the
resolution the data set encodes it (its ``size`` option, else native) and the label at its
native resolution (data sets never resize eval labels). For every image:

1. the input is resized to the protocol's input size (``size`` = (H_in, W_in), or
   ``scale`` s: (round(s·h), round(s·w)); neither: unchanged), rgb bilinearly
   (align_corners=False, antialiased when shrinking) and x by nearest neighbour on pixel centres
   (``nearest-exact``: a measured value, never a blend across an invalid pixel), as training
   treats x under random scaling;
2. logits z come from ``whole`` inference (one forward over the whole input: z at the
   model's output resolution) or ``slide`` inference: the input, padded with 0
   at the bottom and right to at least the window (w_h, w_w), is covered by windows at
   y = min(i·s_h, H' − w_h), x = min(j·s_w, W' − w_w) for i, j = 0 .. ceil((H' − w_h)/s_h), ..;
   each window's logits are upsampled to the window and summed, z is the sum over windows
   divided by the number of windows covering each pixel, cropped to (H_in, W_in);
3. z is upsampled once bilinearly to the label's (H, W), the prediction is argmax over classes, and
   the int64 confusion matrix over the split accumulates it (ignore label masked).

Multi-scale and flip evaluation (``scales`` = [s_1, ..], ``flip``; as CMX and DFormer report
beside single-scale): each view (s, f), f in {unflipped, flipped} when ``flip`` else
{unflipped}, resizes the item input to (round(s·H_in), round(s·W_in)) as in step 1, flips it
horizontally when f (rgb and x), takes its logits as in step 2 and flips them back; the
prediction is argmax_k (1/V) Σ_views up(softmax_k(z_view)) with up the bilinear upsampling to the
label's (H, W) and V the number of views, in float32. A single view (one scale, no flip) is
scored as in step 3, by the argmax of its upsampled logits: the defaults (``scales`` null or
[1.0], no flip) are the single-scale protocol exactly.

Images of different sizes (KITTI's differ by a few pixels) are never stacked: a batch is split
into runs of consecutive items of equal shapes. The metrics do not depend on how many DataLoader
workers read the split, nor on how many processes train the run (each evaluates the images
``rank``, ``rank + world``, ... and their confusion matrices are summed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from kdbench.distributed import current, sum_over_ranks
from kdbench.train.metrics import confusion_matrix, metrics_from_confusion
from kdbench.train.pipeline import start

Forward = Callable[[Tensor, Tensor | None], Tensor]
"""(rgb (N, 3, h, w), x or None) -> logits (N, K, h / r, w / r)."""


def describe(protocol: dict[str, Any]) -> dict[str, Any]:
    """The protocol as the record states it (what a reader needs to compare numbers)."""
    out: dict[str, Any] = {"labels": "native resolution", "mode": protocol["mode"]}
    if protocol["size"] is not None:
        out["input"] = f"resized to {protocol['size'][0]}x{protocol['size'][1]}"
    elif protocol["scale"] is not None:
        out["input"] = f"scaled by {protocol['scale']}"
    else:
        out["input"] = "as loaded (the data set's size option, else native)"
    if protocol["mode"] == "slide":
        out["window"], out["stride"] = list(protocol["window"]), list(protocol["stride"])
    out["scales"], out["flip"] = _scales(protocol), bool(protocol.get("flip", False))
    return out


def _scales(protocol: dict[str, Any]) -> list[float]:
    """The view scales (``scales`` null or absent: [1.0], single-scale)."""
    return [float(s) for s in protocol.get("scales") or [1.0]]


def views(protocol: dict[str, Any]) -> list[tuple[float, bool]]:
    """The (scale, flipped) views of the protocol, every scale unflipped then flipped."""
    flips = (False, True) if protocol.get("flip", False) else (False,)
    return [(s, f) for s in _scales(protocol) for f in flips]


def _rounded(size: Sequence[int], s: float) -> tuple[int, int]:
    """(round(s·h), round(s·w)), halves up, at least 1."""
    return max(1, math.floor(s * size[0] + 0.5)), max(1, math.floor(s * size[1] + 0.5))


def input_size(shape: Sequence[int], protocol: dict[str, Any]) -> tuple[int, int]:
    """The network input (H_in, W_in) for an item input of spatial ``shape`` = (h, w)."""
    h, w = int(shape[0]), int(shape[1])
    if protocol["size"] is not None:
        return int(protocol["size"][0]), int(protocol["size"][1])
    if protocol["scale"] is not None:
        return _rounded((h, w), float(protocol["scale"]))
    return h, w


def resize_input(
    rgb: Tensor, x: Tensor | None, size: tuple[int, int]
) -> tuple[Tensor, Tensor | None]:
    """rgb bilinear (antialiased when shrinking), x nearest-exact; unchanged at the same size."""
    if tuple(rgb.shape[-2:]) == size:
        return rgb, x
    shrink = size[0] < rgb.shape[-2] or size[1] < rgb.shape[-1]
    rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return rgb, None if x is None else F.interpolate(x, size=size, mode="nearest-exact")


def _upsample(z: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(z.float(), size=tuple(size), mode="bilinear", align_corners=False)


def windows(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` >= ``window`` pixels."""
    count = max(math.ceil((length - window) / stride), 0) + 1
    return [min(i * stride, length - window) for i in range(count)]


def slide_logits(
    forward: Forward, rgb: Tensor, x: Tensor | None, window: Sequence[int], stride: Sequence[int]
) -> Tensor:
    """Sliding-window logits (N, K, h, w) at the input resolution (module docstring, step 2)."""
    n, _, h, w = rgb.shape
    wh, ww = int(window[0]), int(window[1])
    ph, pw = max(wh - h, 0), max(ww - w, 0)
    if ph or pw:
        rgb = F.pad(rgb, (0, pw, 0, ph))
        x = None if x is None else F.pad(x, (0, pw, 0, ph))
    total: Tensor | None = None
    count = torch.zeros(1, 1, h + ph, w + pw, device=rgb.device)
    for y0 in windows(h + ph, wh, int(stride[0])):
        for x0 in windows(w + pw, ww, int(stride[1])):
            crop = (slice(None), slice(None), slice(y0, y0 + wh), slice(x0, x0 + ww))
            z = _upsample(forward(rgb[crop], None if x is None else x[crop]), (wh, ww))
            if total is None:
                total = torch.zeros(n, z.shape[1], h + ph, w + pw, device=rgb.device)
            total[crop] += z
            count[crop] += 1
    assert total is not None
    return (total / count)[:, :, :h, :w]


def predict(forward: Forward, rgb: Tensor, x: Tensor | None, protocol: dict[str, Any]) -> Tensor:
    """Logits of an input already resized (step 1): the model's output (whole) or (N, K, h, w)
    at the input's size (slide)."""
    if protocol["mode"] == "slide":
        return slide_logits(forward, rgb, x, protocol["window"], protocol["stride"])
    return forward(rgb, x)


def view_logits(
    forward: Forward,
    rgb: Tensor,
    x: Tensor | None,
    view: tuple[float, bool],
    protocol: dict[str, Any],
    device: torch.device,
) -> Tensor:
    """Logits of one view (s, flipped) of the batch rgb (N, 3, h, w), x (N, C_x, h, w) or None:
    the inputs resized to (round(s·H_in), round(s·W_in)) for (H_in, W_in) the protocol's input
    size (step 1), moved to ``device``, flipped horizontally when flipped, predicted (step 2),
    the logits flipped back."""
    scale, flipped = view
    size = _rounded(input_size(rgb.shape[-2:], protocol), scale)
    rgb, x = resize_input(rgb, x, size)
    rgb = rgb.to(device, non_blocking=True)
    x = None if x is None else x.to(device, non_blocking=True)
    if flipped:
        rgb, x = rgb.flip(-1), None if x is None else x.flip(-1)
    z = predict(forward, rgb, x, protocol)
    return z.flip(-1) if flipped else z


def scores(
    forward: Forward,
    data: dict[str, Tensor],
    uses_x: bool,
    protocol: dict[str, Any],
    device: torch.device,
) -> Tensor:
    """(N, K, H, W) float32 scores of the batch ``data`` at its label size (H, W), argmax over K
    the prediction: one view, its upsampled logits (step 3); several, the mean over views of the
    upsampled softmax (module docstring)."""
    rgb, x = data["rgb"], data["x"] if uses_x else None
    label_size = data["label"].shape[-2:]
    all_views = views(protocol)
    if len(all_views) == 1:
        return _upsample(view_logits(forward, rgb, x, all_views[0], protocol, device), label_size)
    total = torch.zeros((), device=device)
    for view in all_views:
        z = view_logits(forward, rgb, x, view, protocol, device)
        total = total + _upsample(z.float().softmax(1), label_size)
    return total / len(all_views)


def same_shape_runs(items: list[dict[str, Tensor]]) -> Iterator[dict[str, Tensor]]:
    """Consecutive items of equal rgb and label shapes, stacked into batches."""
    start = 0
    for end in range(1, len(items) + 1):
        if end == len(items) or _shapes(items[end]) != _shapes(items[start]):
            yield {k: torch.stack([it[k] for it in items[start:end]]) for k in items[start]}
            start = end


def _shapes(item: dict[str, Tensor]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(item["rgb"].shape), tuple(item["label"].shape)


def _as_list(items: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    return items


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    uses_x: bool,
    protocol: dict[str, Any],
    device: torch.device,
    workers: int = 0,
    autocast: Callable[[], Any] | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` over the whole split under ``protocol`` (module docstring).

    ``protocol``: ``mode`` ("whole" | "slide"), ``size`` ([H, W] or None), ``scale`` (float or
    None), ``window`` and ``stride`` ([h, w], slide only), ``batch_size``, optionally ``scales``
    (list of floats or None) and ``flip`` (bool). ``autocast`` is a factory of the forward's
    autocast context (None: full precision).
    """
    was_training = model.training
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def forward(rgb: Tensor, x: Tensor | None) -> Tensor:
        rgb = rgb.contiguous(memory_format=fmt)
        x = None if x is None else x.contiguous(memory_format=fmt)
        if autocast is None:
            return model(rgb, x).logits
        with autocast():
            return model(rgb, x).logits

    group = current()
    loader = DataLoader(
        Subset(dataset, range(group.rank, len(dataset), group.world)),
        batch_size=protocol["batch_size"],
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_list,
        pin_memory=device.type == "cuda",
    )
    k = dataset.num_classes
    confusion = torch.zeros(k, k, dtype=torch.int64)
    for items in start(loader):
        for data in same_shape_runs(items):
            score = scores(forward, data, uses_x, protocol, device)
            confusion += confusion_matrix(score.argmax(1).cpu(), data["label"], k)
    model.train(was_training)
    if group.world > 1:  # every rank read its share of the split: the sum is the split's
        confusion = sum_over_ranks(confusion.to(device)).cpu()
    return metrics_from_confusion(confusion, dataset.class_names)
