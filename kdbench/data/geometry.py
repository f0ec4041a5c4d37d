r"""Geometry shared by every loader: depth <-> disparity, depth -> surface normals, and the
network input of each geometric modality.

Conventions: pinhole camera with intrinsics (f_x, f_y, c_x, c_y) in pixels; the pixel in row v,
column u (integer indices) has its centre at image coordinates (u, v); the camera frame is
x right, y down, z forward. Depth is the metric z-coordinate (not the ray length); a depth that
is <= 0 or not finite is *invalid* (no measurement, or sky).

Normals from depth (the SNE idea of Fan et al., "SNE-RoadSeg", ECCV 2020: differentiate inverse
depth, not depth). A point on the ray of pixel (u, v) is X = z · r(u, v) with
r = ((u − c_x)/f_x, (v − c_y)/f_y, 1). For a plane n·X = k, the inverse depth w = 1/z is affine
in (u, v):

    w(u, v) = (n_x (u − c_x)/f_x + n_y (v − c_y)/f_y + n_z) / k

so with g_u = ∂w/∂u and g_v = ∂w/∂v,

    m = (f_x g_u,  f_y g_v,  w − (u − c_x) g_u − (v − c_y) g_v) = n / k,

and the unit normal facing the camera is n = −m / ‖m‖ (m·X = z w = 1 > 0, so −m points back
towards the camera, and m is never the zero vector). Because w is affine on a plane, finite
differences of w are exact on planes. Each derivative compares the smoothness of the two sides,
the second differences r± = |w_{i±2} − 2 w_{i±1} + w_i| (inf when w_{i±2} is invalid or outside
the image): where one is more than twice the other, the one-sided difference on the smoother
side is used (it continues the same surface, so planes stay exact up to occlusion edges and
creases); otherwise the central difference (second-order accurate on smooth curved surfaces);
one side alone when the other neighbour is invalid or outside the image. A pixel that is
invalid, or has no valid neighbour along u or along v, gets the zero vector. Surfaces narrower
than about two pixels get the normal of a secant across the edge.
"""

from __future__ import annotations

import numpy as np

from kdbench.errors import KdbenchError

MODALITY_CHANNELS: dict[str, int] = {"depth": 1, "inverse_depth": 1, "disparity": 1, "normals": 3}
"""Channels of the network input ``x`` of each geometric modality."""

INVERSE_DEPTH_REF = 1.0
"""Metres: the ``inverse_depth`` input is ``INVERSE_DEPTH_REF / depth``, clipped to [0, 1]."""

MAX_DISPARITY = 192.0
"""Pixels: the ``disparity`` input is disparity / MAX_DISPARITY, clipped to [0, 1] (192 px is the
usual stereo search range at KITTI resolution, e.g. PSMNet's ``maxdisp``)."""


def _valid_depth(depth: np.ndarray) -> np.ndarray:
    """Boolean mask of valid depths: finite and > 0 (any shape)."""
    return np.isfinite(depth) & (depth > 0)


def _edge_aware_derivative(w: np.ndarray, axis: int) -> np.ndarray:
    """Derivative of w (H, W, NaN = invalid) along ``axis``: central, or one-sided on the side
    whose second difference is less than half the other's (module docstring).

    Returns (H, W) float64; NaN where neither neighbour along ``axis`` is valid.
    """
    n = w.shape[axis]
    pad = [(0, 0), (0, 0)]
    pad[axis] = (2, 2)
    wp = np.pad(w, pad, constant_values=np.nan)

    def shifted(k: int) -> np.ndarray:
        return np.take(wp, np.arange(2 + k, 2 + k + n), axis=axis)

    w_m2, w_m1, w_0, w_p1, w_p2 = (shifted(k) for k in (-2, -1, 0, 1, 2))
    forward, backward = w_p1 - w_0, w_0 - w_m1
    res_f = np.abs(w_p2 - 2.0 * w_p1 + w_0)
    res_b = np.abs(w_0 - 2.0 * w_m1 + w_m2)
    res_f[~np.isfinite(res_f)] = np.inf
    res_b[~np.isfinite(res_b)] = np.inf
    has_f, has_b = np.isfinite(forward), np.isfinite(backward)
    use_f = has_f & (~has_b | (res_b > 2.0 * res_f))
    use_b = has_b & (~has_f | (res_f > 2.0 * res_b))
    central = 0.5 * (forward + backward)  # NaN unless both sides are valid
    return np.where(use_f, forward, np.where(use_b, backward, central))


def depth_to_normals(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(H, W) metric depth -> (3, H, W) float32 unit normals in the camera frame, facing the camera.

    Method: gradients of inverse depth (module docstring), n = −m/‖m‖ with
    m = (f_x ∂_u w, f_y ∂_v w, w − (u − c_x) ∂_u w − (v − c_y) ∂_v w), w = 1/depth; exact on
    planes including pixels next to occlusion edges and creases, second order on smooth
    surfaces. Invalid pixels (depth <= 0 or not finite, or 1/depth not finite) and pixels without
    a valid neighbour along u or v give the zero vector; the output is always finite.
    """
    depth = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = np.where(_valid_depth(depth), 1.0 / depth, np.nan)
        w[~np.isfinite(w)] = np.nan
        g_u = _edge_aware_derivative(w, axis=1)
        g_v = _edge_aware_derivative(w, axis=0)
        h, wd = depth.shape
        u = np.arange(wd, dtype=np.float64)[None, :] - cx
        v = np.arange(h, dtype=np.float64)[:, None] - cy
        m = np.stack([fx * g_u, fy * g_v, w - u * g_u - v * g_v])
        ok = np.isfinite(m).all(axis=0)
        m = np.where(ok, m, 0.0)
        # Scale by the largest component before the norm, so huge inverse depths cannot overflow.
        biggest = np.abs(m).max(axis=0)
        ok &= biggest > 0
        m = m / np.where(ok, biggest, 1.0)
        norm = np.sqrt((m * m).sum(axis=0))
        normals = np.where(ok, -m / np.where(ok, norm, 1.0), 0.0)
    return normals.astype(np.float32)


def disparity_to_depth(disparity: np.ndarray, focal: float, baseline: float) -> np.ndarray:
    """Disparity d in pixels -> depth z = f·B/d in metres (float32); 0 where d <= 0 or not finite.

    ``focal`` f in pixels, ``baseline`` B in metres; any shape.
    """
    disparity = np.asarray(disparity, dtype=np.float64)
    valid = np.isfinite(disparity) & (disparity > 0)
    with np.errstate(divide="ignore", over="ignore"):
        depth = np.where(valid, focal * baseline / np.where(valid, disparity, 1.0), 0.0)
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


def depth_to_disparity(depth: np.ndarray, focal: float, baseline: float) -> np.ndarray:
    """Depth z in metres -> disparity d = f·B/z in pixels (float32); 0 where z is invalid.

    Invalid depth: <= 0 or not finite (so infinitely far sky also gets 0); any shape.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = _valid_depth(depth)
    with np.errstate(divide="ignore", over="ignore"):
        disparity = np.where(valid, focal * baseline / np.where(valid, depth, 1.0), 0.0)
    return np.where(np.isfinite(disparity), disparity, 0.0).astype(np.float32)


def encode_modality(
    depth: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    modality: str,
    baseline: float = 0.54,
    max_depth: float = 80.0,
) -> np.ndarray:
    """(H, W) metric depth -> the network input ``x`` of ``modality``, (C, H, W) float32.

    Scalings (invalid depth -> 0 in every channel):

    - ``depth``: z / max_depth clipped to [0, 1] (depths beyond ``max_depth`` saturate at 1);
    - ``inverse_depth``: INVERSE_DEPTH_REF / z = (1 m)/z clipped to [0, 1] (0.0125 at 80 m,
      0.5 at 2 m; sky and invalid 0, which for sky is the true limit);
    - ``disparity``: f_x·B/z / MAX_DISPARITY clipped to [0, 1], disparity in pixels for a stereo
      pair of baseline B = ``baseline`` metres (so it scales with the image resolution);
    - ``normals``: :func:`depth_to_normals`, unit vectors with components in [−1, 1].

    An unknown ``modality`` raises :class:`KdbenchError` listing the known ones.
    """
    if modality not in MODALITY_CHANNELS:
        known = ", ".join(MODALITY_CHANNELS)
        raise KdbenchError(f"unknown modality {modality!r}; known: {known}")
    depth = np.asarray(depth, dtype=np.float64)
    valid = _valid_depth(depth)
    safe = np.where(valid, depth, 1.0)
    if modality == "depth":
        out = np.where(valid, np.clip(safe / max_depth, 0.0, 1.0), 0.0)[None]
    elif modality == "inverse_depth":
        out = np.where(valid, np.clip(INVERSE_DEPTH_REF / safe, 0.0, 1.0), 0.0)[None]
    elif modality == "disparity":
        disparity = depth_to_disparity(depth, fx, baseline)
        out = np.clip(disparity / MAX_DISPARITY, 0.0, 1.0)[None]
    else:
        return depth_to_normals(depth, fx, fy, cx, cy)
    return out.astype(np.float32)
