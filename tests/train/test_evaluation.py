"""The evaluation protocol: native-resolution labels, input resizing, whole and slide inference,
images of different sizes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.data.cityscapes import Cityscapes
from kdbench.train.evaluation import evaluate, slide_logits, windows
from tests.data.trees import CITYSCAPES_TRAIN_IDS, H, W, write_cityscapes

K = 19
CPU = torch.device("cpu")


class Fixed(nn.Module):
    """A fixed 'segmenter': a seeded 1x1 conv from rgb (+ x) to K logits at half resolution."""

    def __init__(self, in_chans: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(in_chans, K, kernel_size=1)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor | None = None) -> SimpleNamespace:
        inputs = rgb if x is None else torch.cat([rgb, x], dim=1)
        return SimpleNamespace(logits=F.avg_pool2d(self.conv(inputs), 2))


def protocol(**changes: object) -> dict:
    return {"mode": "whole", "size": None, "scale": None, "window": None, "stride": None,
            "batch_size": 2, **changes}


def miou_by_hand(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """mIoU over classes present in truth or prediction, summed over all images (numpy)."""
    tp, fp, fn = np.zeros(K), np.zeros(K), np.zeros(K)
    for pred, truth in pairs:
        keep = truth != 255
        for k in range(K):
            tp[k] += np.sum((pred == k) & (truth == k) & keep)
            fp[k] += np.sum((pred == k) & (truth != k) & keep)
            fn[k] += np.sum((pred != k) & (truth == k) & keep)
    present = tp + fp + fn > 0
    return float(np.mean(tp[present] / (tp + fp + fn)[present]) * 100)


def train_ids(label_ids: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda i: CITYSCAPES_TRAIN_IDS.get(int(i), 255))(label_ids)


def test_miou_is_computed_on_native_labels_not_their_downsampled_version(tmp_path: Path) -> None:
    stems = ["frankfurt_000000_000294", "lindau_000001_000019", "munster_000002_000019"]
    written = write_cityscapes(tmp_path / "cs", {"val": stems})
    dataset = Cityscapes("eval", root=str(tmp_path / "cs"), size=[H // 2, W // 2])
    model = Fixed()
    metrics = evaluate(model, dataset, uses_x=False, protocol=protocol(), device=CPU)

    native, downsampled = [], []
    for i, name in enumerate(dataset.names):
        item = dataset[i]
        assert item["rgb"].shape[-2:] == (H // 2, W // 2) and item["label"].shape == (H, W)
        with torch.no_grad():
            logits = model(item["rgb"][None]).logits
        up = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        truth = train_ids(written[name.split("/")[1]]["label_ids"])
        native.append((up.argmax(1)[0].numpy(), truth))
        small = F.interpolate(logits, size=(H // 2, W // 2), mode="bilinear", align_corners=False)
        downsampled.append((small.argmax(1)[0].numpy(), truth[1::2, 1::2]))
    assert metrics["miou"] == pytest.approx(miou_by_hand(native), abs=1e-9)
    assert metrics["pixels"] == sum(int((t != 255).sum()) for _, t in native)
    assert abs(miou_by_hand(downsampled) - metrics["miou"]) > 0.1  # the fixture tells them apart


class Sizes(torch.utils.data.Dataset):
    """Items of different native sizes (as KITTI's), input at native size."""

    class_names = tuple(f"c{k}" for k in range(K))
    num_classes = K
    shapes = [(16, 24), (16, 24), (18, 22), (16, 24), (20, 30)]

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        h, w = self.shapes[i]
        label = torch.randint(0, K, (h, w), generator=g)
        label[0, :4] = 255
        return {"rgb": torch.randn(3, h, w, generator=g), "x": torch.randn(1, h, w, generator=g),
                "label": label}


def by_hand(model: nn.Module, dataset: Sizes, size_of: Callable, uses_x: bool) -> float:
    """mIoU with each image's input resized to ``size_of(h, w)`` (None: unchanged)."""
    pairs = []
    for i in range(len(dataset)):
        item = dataset[i]
        rgb, x = item["rgb"][None], item["x"][None]
        size = size_of(*rgb.shape[-2:])
        if size is not None:
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False,
                                antialias=size[0] < rgb.shape[-2])
            x = F.interpolate(x, size=size, mode="nearest-exact")
        with torch.no_grad():
            logits = model(rgb, x if uses_x else None).logits
        up = F.interpolate(logits, size=item["label"].shape, mode="bilinear", align_corners=False)
        pairs.append((up.argmax(1)[0].numpy(), item["label"].numpy()))
    return miou_by_hand(pairs)


@pytest.mark.parametrize("workers", [0, 2])
def test_images_of_different_sizes_are_scored_each_at_its_own_size(workers: int) -> None:
    model, dataset = Fixed(in_chans=4), Sizes()
    got = evaluate(model, dataset, uses_x=True, protocol=protocol(batch_size=3), device=CPU,
                   workers=workers)
    assert got["miou"] == pytest.approx(by_hand(model, dataset, lambda h, w: None, True), abs=1e-9)


def test_input_size_and_scale_resize_the_input_only() -> None:
    model, dataset = Fixed(), Sizes()
    sized = evaluate(model, dataset, uses_x=False, protocol=protocol(size=[8, 12]), device=CPU)
    expected = by_hand(model, dataset, lambda h, w: (8, 12), False)
    assert sized["miou"] == pytest.approx(expected, abs=1e-9)
    assert sized["pixels"] == sum(int((dataset[i]["label"] != 255).sum()) for i in range(5))
    doubled = evaluate(model, dataset, uses_x=False, protocol=protocol(scale=2.0), device=CPU)
    expected = by_hand(model, dataset, lambda h, w: (2 * h, 2 * w), False)
    assert doubled["miou"] == pytest.approx(expected, abs=1e-9)
    assert doubled["miou"] != sized["miou"]


def test_slide_with_one_window_equals_whole_inference_and_windows_cover_the_input() -> None:
    model = Fixed()
    rgb = torch.randn(2, 3, 16, 24)

    def forward(r: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        return model(r).logits

    whole = F.interpolate(forward(rgb, None), size=(16, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(slide_logits(forward, rgb, None, (16, 24), (8, 8)), whole)
    # a window larger than the input: zero padding, then cropped back
    padded = F.pad(rgb, (0, 8, 0, 4))
    big = F.interpolate(forward(padded, None), size=(20, 32), mode="bilinear",
                        align_corners=False)[:, :, :16, :24]
    torch.testing.assert_close(slide_logits(forward, rgb, None, (20, 32), (10, 10)), big)
    assert windows(24, 10, 6) == [0, 6, 12, 14]
    assert windows(10, 10, 3) == [0]


def test_slide_averages_overlapping_windows() -> None:
    """A model whose logits are a per-pixel function of the input (no pooling) gives the same
    logits in every window covering a pixel, so sliding equals one whole pass."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, K, 1)

    def forward(r: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        return conv(r)

    rgb = torch.randn(1, 3, 20, 30)
    with torch.no_grad():
        torch.testing.assert_close(slide_logits(forward, rgb, None, (8, 12), (5, 7)), conv(rgb))
