"""Depth <-> disparity, depth -> normals and the modality encodings, against independent maths."""

from __future__ import annotations

import numpy as np
import pytest

from kdbench.data.geometry import (
    MODALITY_CHANNELS,
    depth_to_disparity,
    depth_to_normals,
    disparity_to_depth,
    encode_modality,
)
from kdbench.errors import KdbenchError

H, W = 24, 40
FX, FY, CX, CY = 30.0, 27.0, 19.3, 10.6


def rays() -> np.ndarray:
    """(3, H, W) camera rays ((u − c_x)/f_x, (v − c_y)/f_y, 1), built pixel by pixel."""
    out = np.zeros((3, H, W))
    for v in range(H):
        for u in range(W):
            out[:, v, u] = ((u - CX) / FX, (v - CY) / FY, 1.0)
    return out


def plane_depth(normal: np.ndarray, k: float) -> np.ndarray:
    """Depth of the plane n·X = k seen through every pixel: z = k / (n·r)."""
    return k / np.einsum("c,chw->hw", normal, rays())


def test_tilted_plane_gives_its_normal_everywhere() -> None:
    n0 = np.array([0.3, -0.4, -0.87])
    n0 /= np.linalg.norm(n0)
    depth = plane_depth(n0, -3.0)
    assert depth.min() > 0  # the whole plane is in front of the camera
    normals = depth_to_normals(depth, FX, FY, CX, CY)
    assert normals.dtype == np.float32 and normals.shape == (3, H, W)
    np.testing.assert_allclose(normals, np.broadcast_to(n0[:, None, None], (3, H, W)), atol=1e-6)


def test_fronto_parallel_plane_faces_the_camera() -> None:
    normals = depth_to_normals(np.full((H, W), 7.5, np.float32), FX, FY, CX, CY)
    expected = np.broadcast_to(np.array([0.0, 0.0, -1.0])[:, None, None], (3, H, W))
    np.testing.assert_allclose(normals, expected, atol=1e-6)


def test_occlusion_edges_and_creases_keep_each_plane_exact() -> None:
    """A floor (y = 1.5) meeting a back wall (z = 12), and a box face (z = 4) occluding both:
    every pixel, including those next to the crease and the occlusion edges, gets the normal
    of the surface it sees."""
    r = rays()
    floor = np.where(r[1] > 0, 1.5 / np.where(r[1] > 0, r[1], 1.0), np.inf)
    depth = np.minimum(floor, 12.0)
    box = (np.abs(r[0] * 4.0 - 0.3) < 0.8) & (r[1] * 4.0 > -1.0) & (r[1] * 4.0 < 1.0)
    depth = np.where(box, 4.0, depth)
    expected = np.where(box | (depth == 12.0), np.array([0.0, 0.0, -1.0])[:, None, None],
                        np.array([0.0, -1.0, 0.0])[:, None, None])
    assert box.sum() > 20 and (depth == 12.0).sum() > 20 and (depth < 12.0).sum() > 20
    normals = depth_to_normals(depth, FX, FY, CX, CY)
    np.testing.assert_allclose(normals, expected, atol=1e-6)


def test_sphere_normals_match_the_analytic_ones() -> None:
    """A sphere (centre c, radius R) filling the view: normals (p − c)/R, to second order from two
    pixels inside (central differences), to first order nearer the border (one-sided)."""
    centre, radius = np.array([0.2, -0.1, 6.0]), 4.0
    r = rays()
    a = (r * r).sum(axis=0)
    b = np.einsum("c,chw->hw", centre, r)
    disc = b * b - a * (centre @ centre - radius**2)
    assert disc.min() > 0
    depth = (b - np.sqrt(disc)) / a  # z of the near intersection (r has z = 1)
    expected = (depth * r - centre[:, None, None]) / radius
    normals = depth_to_normals(depth, FX, FY, CX, CY)
    np.testing.assert_allclose(normals[:, 2:-2, 2:-2], expected[:, 2:-2, 2:-2], atol=2e-3)
    np.testing.assert_allclose(normals, expected, atol=3e-2)


def test_normals_are_unit_and_face_the_camera() -> None:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 0.002, (H, W)), axis=0), axis=1)
    depth = 5.0 + smooth
    normals = depth_to_normals(depth, FX, FY, CX, CY)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=0), 1.0, atol=1e-5)
    points = depth * rays()
    assert ((normals * points).sum(axis=0) < 0).all()


def test_invalid_depth_gives_finite_zeros() -> None:
    depth = np.full((H, W), 5.0)
    depth[3, 4], depth[5, 6], depth[7, 8], depth[9, 10] = 0.0, -2.0, np.nan, np.inf
    depth[:, 20] = np.nan  # pixels of column 21 have no u-neighbour on the left
    depth[:, 22] = np.nan  # ... and column 21 none at all: zero normals there
    normals = depth_to_normals(depth, FX, FY, CX, CY)
    assert np.isfinite(normals).all()
    for v, u in ((3, 4), (5, 6), (7, 8), (9, 10)):
        assert (normals[:, v, u] == 0).all()
    assert (normals[:, :, [20, 21, 22]] == 0).all()
    valid = np.ones((H, W), bool)
    valid[[3, 5, 7, 9], [4, 6, 8, 10]] = False
    valid[:, 20:23] = False
    np.testing.assert_allclose(normals[2][valid], -1.0, atol=1e-6)


@pytest.mark.parametrize("value", [1e-300, 1e-320, 1e300, 1e-30, 1e30])
def test_extreme_depths_stay_finite(value: float) -> None:
    normals = depth_to_normals(np.full((6, 7), value), FX, FY, CX, CY)
    assert np.isfinite(normals).all()
    norms = np.linalg.norm(normals, axis=0)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))


def test_disparity_depth_round_trip_and_golden_values() -> None:
    focal, baseline = 721.5, 0.54
    disparity = np.array([[0.0, -1.0, 0.5], [12.25, 96.0, np.nan]])
    depth = disparity_to_depth(disparity, focal, baseline)
    for (i, j), d in np.ndenumerate(disparity):
        expected = focal * baseline / d if np.isfinite(d) and d > 0 else 0.0
        assert depth[i, j] == pytest.approx(expected, rel=1e-6)
    back = depth_to_disparity(depth, focal, baseline)
    valid = np.isfinite(disparity) & (disparity > 0)
    np.testing.assert_allclose(back[valid], disparity[valid], rtol=1e-6)
    assert (back[~valid] == 0).all()
    assert (depth_to_disparity(np.array([np.inf, 0.0, -3.0, np.nan]), focal, baseline) == 0).all()


@pytest.mark.parametrize("modality", sorted(MODALITY_CHANNELS))
def test_encode_modality_shapes_and_invalid_pixels(modality: str) -> None:
    depth = np.linspace(1.0, 120.0, H * W).reshape(H, W)
    depth[0, 0], depth[1, 1] = 0.0, np.inf
    x = encode_modality(depth, FX, FY, CX, CY, modality)
    assert x.shape == (MODALITY_CHANNELS[modality], H, W) and x.dtype == np.float32
    assert np.isfinite(x).all() and (x[:, 0, 0] == 0).all() and (x[:, 1, 1] == 0).all()


def test_encode_modality_scalings() -> None:
    depth = np.array([[0.5, 2.0, 40.0, 160.0]])
    scaled = encode_modality(depth, 100.0, 100.0, 1.5, 0.0, "depth", max_depth=80.0)
    np.testing.assert_allclose(scaled[0], [[0.5 / 80, 2 / 80, 0.5, 1.0]], rtol=1e-6)
    inverse = encode_modality(depth, 100.0, 100.0, 1.5, 0.0, "inverse_depth")
    np.testing.assert_allclose(inverse[0], [[1.0, 0.5, 1 / 40, 1 / 160]], rtol=1e-6)
    disparity = encode_modality(depth, 100.0, 100.0, 1.5, 0.0, "disparity", baseline=0.5)
    np.testing.assert_allclose(disparity[0], [[100 / 192, 25 / 192, 1.25 / 192, 0.3125 / 192]],
                               rtol=1e-6)


def test_unknown_modality_names_itself_and_the_known_ones() -> None:
    with pytest.raises(KdbenchError, match="hha.*depth.*normals"):
        encode_modality(np.ones((2, 2)), 1.0, 1.0, 0.0, 0.0, "hha")
