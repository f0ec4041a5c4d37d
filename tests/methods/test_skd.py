"""Tests of methods/skd.py: pair-wise affinity loss against a float64 loop, its invariances and
the gradient meaning of the authors' detached norm, plus the method's wiring."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, method_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS
from methods.skd import SKD, pair_wise_loss
from tests.methods.fakes import batch, rand

STUDENT = TapInfo((3, 4), (8, 16), 5, 3, 4)
TEACHER = TapInfo((6, 8), (8, 16), 7, 3, 4)


def outputs(
    info: TapInfo, seed: int, size: int = 32, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> Outputs:
    """Random leaf outputs of a model described by ``info`` for (2, 3, size, size) images."""

    def leaf(s: int, *shape: int) -> torch.Tensor:
        return (scale * rand(s, *shape)).to(dtype).requires_grad_()

    stages = tuple(
        leaf(seed + i, 2, c, size // r, size // r)
        for i, (c, r) in enumerate(zip(info.stage_channels, info.stage_reductions, strict=True))
    )
    hw = size // info.logit_reduction
    logits = leaf(seed + 10, 2, info.num_classes, hw, hw)
    return Outputs(
        logits=logits, stages=stages, decoder=leaf(seed + 11, 2, info.decoder_channels, hw, hw)
    )


def pooled_nodes_loop(f: torch.Tensor, kh: int, kw: int) -> list[list[list[float]]]:
    """Per image, the list of node vectors of a ceil-mode max pool with kernel = stride."""
    n_img, c, h, w = f.shape
    x = f.tolist()
    nodes = []
    for n in range(n_img):
        image = []
        for i0 in range(0, h, kh):
            for j0 in range(0, w, kw):
                image.append(
                    [
                        max(
                            x[n][ch][i][j]
                            for i in range(i0, min(i0 + kh, h))
                            for j in range(j0, min(j0 + kw, w))
                        )
                        for ch in range(c)
                    ]
                )
        nodes.append(image)
    return nodes


def pair_loop(fs: torch.Tensor, ft: torch.Tensor, kh: int, kw: int) -> float:
    """mean over images and node pairs of (cos_T − cos_S)², plain float64 Python."""

    def cos(a: list[float], b: list[float]) -> float:
        na = math.sqrt(sum(v * v for v in a))
        nb = math.sqrt(sum(v * v for v in b))
        return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)

    s_nodes, t_nodes = pooled_nodes_loop(fs, kh, kw), pooled_nodes_loop(ft, kh, kw)
    total, count = 0.0, 0
    for s_img, t_img in zip(s_nodes, t_nodes, strict=True):
        for p in range(len(s_img)):
            for q in range(len(s_img)):
                total += (cos(t_img[p], t_img[q]) - cos(s_img[p], s_img[q])) ** 2
                count += 1
    return total / count


def kl_loop(zs: torch.Tensor, zt: torch.Tensor) -> float:
    """mean over pixels of KL(softmax zt ‖ softmax zs), float64 Python."""
    s, t = zs.tolist(), zt.tolist()
    n_img, k, h, w = zs.shape
    total = 0.0
    for n in range(n_img):
        for i in range(h):
            for j in range(w):
                a = [s[n][c][i][j] for c in range(k)]
                b = [t[n][c][i][j] for c in range(k)]
                la = math.log(sum(math.exp(v) for v in a))
                lb = math.log(sum(math.exp(v) for v in b))
                total += sum(
                    math.exp(y - lb) * ((y - lb) - (x - la)) for x, y in zip(a, b, strict=True)
                )
    return total / (n_img * h * w)


def test_max2_matches_float64_loop() -> None:
    fs, ft = rand(0, 2, 3, 4, 4), rand(1, 2, 5, 4, 4)  # channel counts may differ
    assert pair_wise_loss(fs, ft, "max2").item() == pytest.approx(pair_loop(fs, ft, 2, 2), rel=1e-9)


def test_grid2_matches_float64_loop_with_odd_sides() -> None:
    fs, ft = rand(2, 2, 3, 5, 6), rand(3, 2, 4, 5, 6)  # kernel (2, 3): 3 x 2 nodes
    expected = pair_loop(fs, ft, 2, 3)
    assert pair_wise_loss(fs, ft, "grid2").item() == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("pool", ["max2", "grid2"])
def test_zero_when_features_equal_up_to_positive_scale_per_node(pool: str) -> None:
    f = rand(4, 2, 3, 4, 4)
    scale = rand(5, 2, 1, 2, 2).abs() + 0.1  # one positive factor per 2x2 pooling window
    scaled = f * scale.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert pair_wise_loss(scaled, f, pool).item() == pytest.approx(0.0, abs=1e-12)
    assert pair_wise_loss(rand(6, 2, 3, 4, 4), f, pool).item() > 1e-3


def test_live_norm_gives_scale_invariant_gradient_and_detached_norm_does_not() -> None:
    """max2 normalises with a live norm, so ⟨∇L, f⟩ = 0 (L(c·f) is constant in c);
    grid2 follows the authors' detached norm, whose gradient has a radial part."""
    ft = rand(7, 2, 3, 4, 4)
    radial = {}
    for pool in ("max2", "grid2"):
        fs = rand(8, 2, 3, 4, 4).requires_grad_()
        pair_wise_loss(fs, ft, pool).backward()
        radial[pool] = abs(float((fs.grad * fs.detach()).sum()))
    assert radial["max2"] < 1e-12
    assert radial["grid2"] > 1e-6


def test_method_sums_weighted_pair_and_pixel_terms() -> None:
    s, t = outputs(STUDENT, 0), outputs(TEACHER, 20)
    label = torch.full((2, 32, 32), IGNORE_INDEX)
    out = SKD(STUDENT, TEACHER, pair_weight=2.0, pixel_weight=3.0)(s, t, batch(label))
    assert set(out) == {"skd_pair", "skd_pixel"}
    expected_pair = pair_loop(s.stages[-1].detach(), t.stages[-1].detach(), 2, 2)
    assert out["skd_pair"].item() == pytest.approx(2.0 * expected_pair, rel=1e-7)
    expected_pixel = kl_loop(s.logits.detach(), t.logits.detach())
    assert out["skd_pixel"].item() == pytest.approx(3.0 * expected_pixel, rel=1e-9)
    authors = SKD(STUDENT, TEACHER, pixel_weight=3.0, pixel_reduction="image_sum")
    n = s.logits.shape[0]  # the authors divide the sum over all pixels by h·w only
    assert authors(s, t, batch(label))["skd_pixel"].item() == pytest.approx(
        3.0 * n * expected_pixel, rel=1e-9
    )


def test_stage_selection_sums_and_decoder_feature_option() -> None:
    s, t = outputs(STUDENT, 1), outputs(TEACHER, 21)
    b = batch(torch.zeros(2, 32, 32, dtype=torch.long))
    both = SKD(STUDENT, TEACHER, stages=(0, 1))(s, t, b)["skd_pair"].item()
    parts = [SKD(STUDENT, TEACHER, stages=(i,))(s, t, b)["skd_pair"].item() for i in (0, 1)]
    assert both == pytest.approx(sum(parts), rel=1e-12)
    dec = SKD(STUDENT, TEACHER, feature="decoder", pair_weight=1.0)(s, t, b)["skd_pair"]
    expected = pair_loop(s.decoder.detach(), t.decoder.detach(), 2, 2)
    assert dec.item() == pytest.approx(expected, rel=1e-7)


def test_student_resized_to_teacher_size_and_gradients_reach_student() -> None:
    teacher_info = TapInfo((6, 8), (4, 8), 7, 3, 4)  # teacher stages twice the student's size
    s, t = outputs(STUDENT, 2), outputs(teacher_info, 22)
    out = SKD(STUDENT, teacher_info)(s, t, batch(torch.zeros(2, 32, 32, dtype=torch.long)))
    sum(out.values()).backward()
    assert s.stages[-1].grad is not None and bool(s.stages[-1].grad.abs().sum() > 0)
    assert s.logits.grad is not None and bool(s.logits.grad.abs().sum() > 0)


@pytest.mark.parametrize("pool", ["max2", "grid2"])
def test_finite_for_extreme_magnitudes_and_ignored_labels(pool: str) -> None:
    s = outputs(STUDENT, 3, scale=1e4, dtype=torch.float32)
    t = outputs(TEACHER, 23, scale=1e4, dtype=torch.float32)
    label = torch.full((2, 32, 32), IGNORE_INDEX)
    out = SKD(STUDENT, TEACHER, pool=pool)(s, t, batch(label))
    total = sum(out.values())
    total.backward()
    assert bool(torch.isfinite(total))
    assert bool(torch.isfinite(s.stages[-1].grad).all()) and bool(
        torch.isfinite(s.logits.grad).all()
    )


def test_options_and_errors() -> None:
    assert method_options(METHODS.get("skd")) == {
        "pair_weight": 10.0,
        "pixel_weight": 10.0,
        "pool": "max2",
        "stages": (-1,),
        "feature": "stages",
        "pixel_reduction": "mean",
    }
    with pytest.raises(KdbenchError, match="pool"):
        SKD(STUDENT, TEACHER, pool="avg")  # type: ignore[arg-type]
    with pytest.raises(KdbenchError, match="stages"):
        SKD(STUDENT, TEACHER, stages=(5,))
    with pytest.raises(KdbenchError, match="feature"):
        SKD(STUDENT, TEACHER, feature="logits")  # type: ignore[arg-type]
