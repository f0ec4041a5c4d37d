"""synthdrive: determinism, split disjointness, exact geometry, label/geometry consistency, and
the deliberate colour ambiguity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdbench.data.base import IGNORE_INDEX
from kdbench.data.geometry import MODALITY_CHANNELS
from kdbench.data.synthdrive import CAMERA_HEIGHT, CLASS_NAMES, MAX_DEPTH, SynthDrive
from kdbench.errors import KdbenchError
from kdbench.registry import DATASETS

SIZE = (48, 96)
CLASS = {name: i for i, name in enumerate(CLASS_NAMES)}


def build(split: str = "train", **options: object) -> SynthDrive:
    options = {"size": SIZE, "train_samples": 6, "eval_samples": 3, **options}
    return SynthDrive(split, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def depth_set() -> SynthDrive:
    return build(modality="depth")


@pytest.fixture(scope="module")
def normals_set() -> SynthDrive:
    return build(modality="normals")


def metric_depth(dataset: SynthDrive) -> np.ndarray:
    """(N, H, W) depth in metres from the ``depth`` modality (x = depth / MAX_DEPTH)."""
    return dataset.x[:, 0].double().numpy() * MAX_DEPTH


def height_above_road(dataset: SynthDrive) -> np.ndarray:
    """(N, H, W) height of each pixel's 3-D point above the road plane: h − z (v − c_y)/f_y."""
    _, fy, _, cy = dataset.intrinsics
    rows = np.arange(SIZE[0], dtype=np.float64)[None, :, None]
    return CAMERA_HEIGHT - metric_depth(dataset) * (rows - cy) / fy


def test_registered_and_items_have_the_contract_shapes(depth_set: SynthDrive) -> None:
    assert DATASETS.get("synthdrive") is SynthDrive
    assert len(depth_set) == 6 and depth_set.num_classes == len(depth_set.class_names) == 7
    item = depth_set[2]
    assert item["rgb"].shape == (3, *SIZE) and item["rgb"].dtype == torch.float32
    assert item["x"].shape == (1, *SIZE) and item["x"].dtype == torch.float32
    assert item["label"].shape == SIZE and item["label"].dtype == torch.int64
    labels = depth_set.label
    assert ((labels >= 0) & (labels < 7)).all()  # every pixel labelled, none IGNORE_INDEX
    assert not (labels == IGNORE_INDEX).any()


@pytest.mark.parametrize("modality", sorted(MODALITY_CHANNELS))
def test_x_channels_follow_the_modality(modality: str) -> None:
    dataset = build(modality=modality, train_samples=1)
    assert dataset.x_channels == MODALITY_CHANNELS[modality] == dataset[0]["x"].shape[0]
    assert torch.isfinite(dataset.x).all()


def test_intrinsics_scale_with_the_size() -> None:
    small = build(size=(32, 64), train_samples=1).intrinsics
    large = build(size=(40, 160), train_samples=1).intrinsics
    assert large[0] / 160 == pytest.approx(small[0] / 64)
    assert large[1] / 40 == pytest.approx(small[1] / 32)
    assert large[2] == pytest.approx(79.5) and small[2] == pytest.approx(31.5)


def test_same_seed_same_tensors_other_seed_other_tensors(depth_set: SynthDrive) -> None:
    again = build(modality="depth")
    for key in ("rgb", "x", "label"):
        assert torch.equal(getattr(depth_set, key), getattr(again, key))
    other = build(modality="depth", seed=1)
    assert not torch.equal(depth_set.rgb, other.rgb)
    assert not torch.equal(depth_set.label, other.label)


def test_modalities_share_scenes_and_colours(depth_set: SynthDrive,
                                             normals_set: SynthDrive) -> None:
    assert torch.equal(depth_set.rgb, normals_set.rgb)
    assert torch.equal(depth_set.label, normals_set.label)


def test_train_and_eval_are_disjoint(depth_set: SynthDrive) -> None:
    evaluation = build("eval", modality="depth")
    assert len(evaluation) == 3
    for i in range(len(evaluation)):
        for j in range(len(depth_set)):
            assert not torch.equal(evaluation.label[i], depth_set.label[j])
            assert not torch.equal(evaluation.rgb[i], depth_set.rgb[j])


def test_every_class_appears(depth_set: SynthDrive) -> None:
    assert set(torch.unique(depth_set.label).tolist()) == set(range(len(CLASS_NAMES)))


def test_road_depth_is_the_analytic_ground_plane_depth(depth_set: SynthDrive) -> None:
    """For a level camera at height h, the road seen in row v lies at z = h / ((v − c_y)/f_y)."""
    _, fy, _, cy = depth_set.intrinsics
    depth, labels = metric_depth(depth_set), depth_set.label.numpy()
    checked = 0
    for n, v, u in zip(*np.nonzero((labels == CLASS["road"]) & (depth < MAX_DEPTH)), strict=True):
        expected = CAMERA_HEIGHT / ((v - cy) / fy)
        assert depth[n, v, u] == pytest.approx(expected, rel=1e-5)
        checked += 1
    assert checked > 1000


def test_road_normals_point_up(normals_set: SynthDrive) -> None:
    """Road normals are (0, −1, 0) (camera −y); exactly wherever the 5 × 5 neighbourhood is road
    (also next to occlusion edges and curbs, for nearly all road pixels)."""
    labels, normals = normals_set.label.numpy(), normals_set.x.numpy()
    road = labels == CLASS["road"]
    error = np.abs(normals - np.array([0.0, -1.0, 0.0])[None, :, None, None]).max(axis=1)
    padded = np.pad(road, ((0, 0), (2, 2), (2, 2)), constant_values=True)
    inner = road.copy()
    for dv in range(5):
        for du in range(5):
            inner &= padded[:, dv : dv + SIZE[0], du : du + SIZE[1]]
    assert inner.sum() > 1000 and error[inner].max() < 1e-4
    assert (error[road] < 1e-3).mean() > 0.98
    assert (normals[:, 1][road] < -0.5).mean() > 0.995


def test_labels_agree_with_geometry(depth_set: SynthDrive) -> None:
    """Sky has no finite depth (x = 0) and everything else has; nothing is below the road;
    road at height 0, sidewalks at curb height (<= 22 cm), cars between the road and 1.8 m,
    buildings, poles and vegetation stand on the sidewalks (>= 8 cm)."""
    x, labels = depth_set.x[:, 0].numpy(), depth_set.label.numpy()
    sky = labels == CLASS["sky"]
    assert (x[sky] == 0).all() and (x[~sky] > 0).all()
    height = height_above_road(depth_set)
    near = (x > 0) & (x < 1)  # finite and not clipped at MAX_DEPTH
    tol = 1e-3
    assert height[near].min() > -tol
    ranges = {"road": (0.0, 0.0), "sidewalk": (0.0, 0.22), "car": (0.0, 1.8),
              "building": (0.08, 22.3), "pole": (0.08, 8.3), "vegetation": (0.08, 8.3)}
    for name, (low, high) in ranges.items():
        values = height[near & (labels == CLASS[name])]
        assert len(values) > 0, name
        assert low - tol <= values.min() and values.max() <= high + tol, name


def test_rgb_is_ambiguous_where_geometry_is_not() -> None:
    """Over 24 scenes: road and sidewalk mean colours differ by less than their spread; many
    car and sidewalk pixels fall in the road's central 90 % colour box, few sky pixels do."""
    dataset = build(train_samples=24, size=(32, 64))
    rgb = dataset.rgb.permute(0, 2, 3, 1).numpy()
    labels = dataset.label.numpy()
    pixels = {name: rgb[labels == CLASS[name]] for name in CLASS}
    gap = np.abs(pixels["road"].mean(axis=0) - pixels["sidewalk"].mean(axis=0))
    assert (gap < np.minimum(pixels["road"].std(axis=0), pixels["sidewalk"].std(axis=0))).all()
    low, high = np.percentile(pixels["road"], [5, 95], axis=0)

    def inside(name: str) -> float:
        return float(((pixels[name] >= low) & (pixels[name] <= high)).all(axis=1).mean())

    assert inside("car") > 0.3 and inside("sidewalk") > 0.5 and inside("sky") < 0.25


@pytest.mark.parametrize(
    ("split", "options", "match"),
    [
        ("val", {}, "split 'val'"),
        ("train", {"modality": "hha"}, "modality 'hha'"),
        ("train", {"size": (0, 10)}, "size"),
        ("train", {"size": (8, 8, 8)}, "size"),
        ("train", {"train_samples": 0}, "train_samples"),
        ("eval", {"eval_samples": 2.5}, "eval_samples"),
        ("train", {"seed": -1}, "seed"),
    ],
)
def test_bad_options_raise_kdbench_errors(split: str, options: dict, match: str) -> None:
    with pytest.raises(KdbenchError, match=match):
        build(split, **options)
