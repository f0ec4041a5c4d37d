"""Sample augmentation: identities, the normals flip, determinism, golden resampling, and random
scale + crop keeping rgb, x and label aligned."""

from __future__ import annotations

import pytest
import torch

from kdbench.data.augment import DRAWS, augment_sample
from kdbench.data.base import IGNORE_INDEX, RGB_MEAN, RGB_STD
from kdbench.errors import KdbenchError

N, H, W, K = 8, 12, 16, 7


def batch(seed: int = 0, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randn(N, 3, H, W, generator=g)
    x = torch.randn(N, channels, H, W, generator=g)
    label = torch.randint(0, K, (N, H, W), generator=g)
    label[:, 0, :3] = IGNORE_INDEX
    return rgb, x, label


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def augment_batch(
    rgb: torch.Tensor, x: torch.Tensor, label: torch.Tensor, generator: torch.Generator, **options
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`augment_sample` over a batch, the uniforms of each sample drawn from one generator."""
    out = [
        augment_sample(
            rgb[i], x[i], label[i], torch.rand(DRAWS, generator=generator).tolist(), **options
        )
        for i in range(len(rgb))
    ]
    return tuple(torch.stack(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]


def test_no_flip_and_unit_scale_is_the_identity() -> None:
    rgb, x, label = batch()
    out = augment_sample(
        rgb[0],
        x[0],
        label[0],
        [0.1] * DRAWS,
        flip=False,
        scale=(1.0, 1.0),
        normals=True,
        crop=[H, W],
    )
    for a, b in zip(out, (rgb[0], x[0], label[0]), strict=True):
        assert torch.equal(a, b) and a.data_ptr() == b.data_ptr()  # no copy


@pytest.mark.parametrize("normals", [False, True])
def test_flipping_twice_is_the_identity(normals: bool) -> None:
    rgb, x, label = batch()
    once = augment_batch(rgb, x, label, gen(3), scale=(1.0, 1.0), normals=normals)
    twice = augment_batch(*once, gen(3), scale=(1.0, 1.0), normals=normals)
    for a, b in zip(twice, (rgb, x, label), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(once[0], rgb)  # some sample was flipped


def test_flip_negates_the_normals_x_component() -> None:
    """Each sample is either unchanged or mirrored, with x-channel 0 negated only for normals."""
    rgb, x, label = batch()
    out_rgb, out_x, out_label = augment_batch(rgb, x, label, gen(5), scale=(1.0, 1.0), normals=True)
    flipped = 0
    for i in range(N):
        if torch.equal(out_rgb[i], rgb[i]):
            assert torch.equal(out_x[i], x[i]) and torch.equal(out_label[i], label[i])
            continue
        flipped += 1
        mirror = x[i, :, :, torch.arange(W - 1, -1, -1)]
        assert torch.equal(out_rgb[i], rgb[i, :, :, torch.arange(W - 1, -1, -1)])
        assert torch.equal(out_x[i, 0], -mirror[0]) and torch.equal(out_x[i, 1:], mirror[1:])
        assert torch.equal(out_label[i], label[i, :, torch.arange(W - 1, -1, -1)])
    assert 0 < flipped < N
    plain_x = augment_batch(rgb, x, label, gen(5), scale=(1.0, 1.0), normals=False)[1]
    assert torch.equal(plain_x[:, 1:], out_x[:, 1:]) and not torch.equal(plain_x, out_x)


def test_same_generator_seed_same_output() -> None:
    rgb, x, label = batch()
    first = augment_batch(rgb, x, label, gen(11))
    second = augment_batch(rgb, x, label, gen(11))
    other = augment_batch(rgb, x, label, gen(12))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0])


def test_inputs_are_not_modified() -> None:
    rgb, x, label = batch()
    copies = (rgb.clone(), x.clone(), label.clone())
    augment_batch(rgb, x, label, gen(1), normals=True)
    assert all(torch.equal(a, b) for a, b in zip((rgb, x, label), copies, strict=True))


def test_labels_stay_valid_or_ignored_and_shapes_are_kept() -> None:
    rgb, x, label = batch(channels=1)
    out_rgb, out_x, out_label = augment_batch(rgb, x, label, gen(2), scale=(0.5, 2.0))
    assert out_rgb.shape == rgb.shape and out_x.shape == x.shape and out_label.shape == label.shape
    assert out_label.dtype == torch.int64
    values = set(torch.unique(out_label).tolist())
    assert values <= set(range(K)) | {IGNORE_INDEX} and len(values & set(range(K))) == K


def test_upscale_by_two_is_a_crop_of_the_pixel_replicated_label() -> None:
    """s = 2: nearest-exact upsampling repeats each label 2 × 2; the output is an H × W window of
    that image at some integer offset."""
    rgb, x, label = batch()
    out_label = augment_batch(rgb, x, label, gen(4), flip=False, scale=(2.0, 2.0))[2]
    for i in range(N):
        big = label[i].repeat_interleave(2, 0).repeat_interleave(2, 1)
        windows = [
            (dy, dx)
            for dy in range(H + 1)
            for dx in range(W + 1)
            if torch.equal(big[dy : dy + H, dx : dx + W], out_label[i])
        ]
        assert windows


def test_downscale_by_two_is_average_pooling_pasted_on_an_ignore_canvas() -> None:
    """s = 1/2: bilinear (align_corners=False) samples at 2i + 1/2, i.e. the mean of each 2 × 2
    block; labels and x pick pixel (2i + 1, 2j + 1); the rest is padding (0 and IGNORE_INDEX)."""
    rgb, x, label = batch()
    out_rgb, out_x, out_label = augment_batch(rgb, x, label, gen(6), flip=False, scale=(0.5, 0.5))
    h, w = H // 2, W // 2
    for i in range(N):
        inside = (out_label[i] != IGNORE_INDEX) | (out_rgb[i].abs().sum(0) > 0)
        rows, cols = torch.nonzero(inside, as_tuple=True)
        y0, x0 = int(rows.min()), int(cols.min())
        assert inside.sum() == h * w and 0 <= y0 <= H - h and 0 <= x0 <= W - w
        expected = torch.zeros(3, h, w)
        for c in range(3):
            for a in range(h):
                for b in range(w):
                    expected[c, a, b] = rgb[i, c, 2 * a : 2 * a + 2, 2 * b : 2 * b + 2].mean()
        torch.testing.assert_close(out_rgb[i, :, y0 : y0 + h, x0 : x0 + w], expected)
        assert torch.equal(out_label[i, y0 : y0 + h, x0 : x0 + w], label[i, 1::2, 1::2])
        assert torch.equal(out_x[i, :, y0 : y0 + h, x0 : x0 + w], x[i, :, 1::2, 1::2])
        assert (out_label[i][~inside] == IGNORE_INDEX).all()
        assert (out_rgb[i][:, ~inside] == 0).all() and (out_x[i][:, ~inside] == 0).all()


@pytest.mark.parametrize("scale", [(0.0, 1.0), (1.5, 1.0), (-1.0, 2.0)])
def test_bad_scale_range_raises(scale: tuple[float, float]) -> None:
    rgb, x, label = batch()
    with pytest.raises(KdbenchError, match="scale"):
        augment_batch(rgb, x, label, gen(0), scale=scale)


def pattern(height: int, width: int, block: int = 8) -> tuple[torch.Tensor, ...]:
    """Blocks of ``block`` pixels, block (a, b) of class (a + 2b) mod K, in rgb (every channel
    the class), x (channel 0 the class, channel 1 the class + 100) and label alike."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    label = (ys // block + 2 * (xs // block)) % K
    rgb = label.float()[None].repeat(3, 1, 1)
    x = torch.stack([label.float(), label.float() + 100])
    return rgb, x, label


@pytest.mark.parametrize("seed", range(6))
def test_random_scale_and_crop_keep_rgb_x_and_label_aligned(seed: int) -> None:
    """Scale in [0.5, 2], crop 20 x 28 of a 24 x 36 pattern: x and label are resampled on the
    same grid, so they agree exactly; rgb (bilinear) agrees inside the blocks; padding is 0 in
    rgb and x and IGNORE_INDEX in the label."""
    rgb, x, label = pattern(24, 36, block=6)
    u = torch.rand(DRAWS, generator=gen(seed)).tolist()
    out_rgb, out_x, out_label = augment_sample(
        rgb, x, label, u, scale=(0.5, 2.0), crop=[20, 28], normals=False
    )
    assert out_rgb.shape == (3, 20, 28) and out_x.shape == (2, 20, 28)
    assert out_label.shape == (20, 28)
    valid = out_label != IGNORE_INDEX
    assert valid.any()
    assert torch.equal(out_x[0][valid], out_label[valid].float())
    assert torch.equal(out_x[1][valid], out_label[valid].float() + 100)
    assert (out_x[:, ~valid] == 0).all() and (out_rgb[:, ~valid] == 0).all()
    # rgb: exact wherever the 3 x 3 neighbourhood of the label is one class
    padded = torch.nn.functional.pad(out_label[None, None].float(), (1, 1, 1, 1), value=-1.0)
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1)[0, 0].reshape(20, 28, 9)
    flat = (windows == out_label[..., None]).all(-1) & valid
    assert flat.sum() > 0.2 * valid.sum()
    for c in range(3):
        torch.testing.assert_close(out_rgb[c][flat], out_label[flat].float())


def test_crop_flips_normals_and_pads_a_small_image() -> None:
    """Scale 1 of a 10 x 12 image into a 16 x 20 crop: pasted whole at a random offset, padded;
    flipped with u_0 < 1/2, normals' x-component negated."""
    rgb, x, label = pattern(10, 12, block=3)
    x = torch.stack([x[0], x[0] + 1, x[0] + 2])
    u = [0.2, 0.0, 0.5, 0.9] + [0.5] * (DRAWS - 4)
    out_rgb, out_x, out_label = augment_sample(
        rgb, x, label, u, scale=(1.0, 1.0), crop=[16, 20], normals=True
    )
    valid = out_label != IGNORE_INDEX
    rows, cols = torch.nonzero(valid, as_tuple=True)
    y0, x0 = int(rows.min()), int(cols.min())
    assert valid.sum() == 10 * 12
    window = (slice(y0, y0 + 10), slice(x0, x0 + 12))
    assert torch.equal(out_label[window], label.flip(-1))
    assert torch.equal(out_rgb[:, window[0], window[1]], rgb.flip(-1))
    assert torch.equal(out_x[0][window], -x[0].flip(-1))
    assert torch.equal(out_x[1:, window[0], window[1]], x[1:].flip(-1))


def test_jitter_changes_colour_only_and_stays_in_range() -> None:
    rgb, x, label = batch()
    u = [0.9, 0.5, 0.5, 0.5, 0.9, 0.1, 0.8, 0.5]
    out_rgb, out_x, out_label = augment_sample(
        rgb[0], x[0], label[0], u, flip=False, scale=(1.0, 1.0), jitter=0.4
    )
    assert torch.equal(out_x, x[0]) and torch.equal(out_label, label[0])
    assert not torch.allclose(out_rgb, rgb[0])
    mean = torch.tensor(RGB_MEAN)[:, None, None]
    std = torch.tensor(RGB_STD)[:, None, None]
    image = out_rgb * std + mean
    assert image.min() >= -1e-6 and image.max() <= 1 + 1e-6


@pytest.mark.parametrize(
    ("size_out", "window"),
    [
        ((23, 41), (3, 15, 5, 30)),
        ((7, 9), (0, 7, 0, 9)),
        ((24, 32), (4, 12, 8, 16)),
        ((13, 16), (2, 9, 0, 16)),
    ],
)
def test_windows_equal_a_crop_of_the_whole_resized_image(
    size_out: tuple[int, int], window: tuple[int, int, int, int]
) -> None:
    from kdbench.data.augment import bilinear_window, nearest_window

    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, H, W, generator=g)
    label = torch.randint(0, K, (1, H, W), generator=g)
    y0, ly, x0, lx = window
    rows, cols = (y0, ly, H, size_out[0]), (x0, lx, W, size_out[1])
    whole = torch.nn.functional.interpolate(
        image[None], size=size_out, mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(
        bilinear_window(image, rows, cols),
        whole[:, y0 : y0 + ly, x0 : x0 + lx],
        rtol=1e-5,
        atol=1e-5,
    )
    nearest = torch.nn.functional.interpolate(
        label[None].float(), size=size_out, mode="nearest-exact"
    )[0].long()
    assert torch.equal(nearest_window(label, rows, cols), nearest[:, y0 : y0 + ly, x0 : x0 + lx])
