"""Tests of methods/ifvd.py: prototype-cosine maps and their MSE against a float64 loop, the
identities they must satisfy, masking of ignored pixels and absent classes, and the wiring."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, method_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS
from methods.ifvd import IFVD, ifvd_loss, prototype_cosine_map
from tests.methods.fakes import batch, rand

K = 3
STUDENT = TapInfo((3, 4), (8, 16), 5, K, 4)
TEACHER = TapInfo((6, 8), (8, 16), 7, K, 4)


def labels(seed: int, n: int, h: int, w: int) -> torch.Tensor:
    """Random labels in [0, K) with some ignored pixels; class 2 absent from image 1."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, K, (n, h, w), generator=g)
    label[torch.rand(n, h, w, generator=g) < 0.25] = IGNORE_INDEX
    label[1][label[1] == 2] = 0
    return label


def cosine_map_loop(f: torch.Tensor, label: torch.Tensor) -> dict[tuple[int, int, int], float]:
    """{(n, i, j): cos(f_pixel, mean of f over the pixel's class in its image)}, labelled only."""
    x, y = f.tolist(), label.tolist()
    n_img, c, h, w = f.shape
    out = {}
    for n in range(n_img):
        members: dict[int, list[tuple[int, int]]] = {}
        for i in range(h):
            for j in range(w):
                if y[n][i][j] != IGNORE_INDEX:
                    members.setdefault(y[n][i][j], []).append((i, j))
        for pixels in members.values():
            proto = [sum(x[n][ch][i][j] for i, j in pixels) / len(pixels) for ch in range(c)]
            norm_p = math.sqrt(sum(v * v for v in proto))
            for i, j in pixels:
                v = [x[n][ch][i][j] for ch in range(c)]
                norm_v = math.sqrt(sum(a * a for a in v))
                out[(n, i, j)] = sum(a * b for a, b in zip(v, proto, strict=True)) / (
                    norm_v * norm_p
                )
    return out


def ifvd_loop(fs: torch.Tensor, ft: torch.Tensor, label: torch.Tensor, reduction: str) -> float:
    ms, mt = cosine_map_loop(fs, label), cosine_map_loop(ft, label)
    total = sum((ms[p] - mt[p]) ** 2 for p in ms)
    return total / (len(ms) if reduction == "valid" else label.numel())


def outputs(
    info: TapInfo, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> Outputs:
    """Outputs for (2, 3, 32, 32) images; only the stages and the decoder matter to IFVD."""
    stages = tuple(
        (scale * rand(seed + i, 2, c, 32 // r, 32 // r)).to(dtype).requires_grad_()
        for i, (c, r) in enumerate(zip(info.stage_channels, info.stage_reductions, strict=True))
    )
    decoder = (scale * rand(seed + 9, 2, info.decoder_channels, 8, 8)).to(dtype).requires_grad_()
    return Outputs(logits=torch.zeros(2, K, 8, 8, dtype=dtype), stages=stages, decoder=decoder)


@pytest.mark.parametrize("reduction", ["valid", "all"])
def test_loss_matches_float64_loop(reduction: str) -> None:
    fs, ft, label = rand(0, 2, 3, 4, 4), rand(1, 2, 5, 4, 4), labels(2, 2, 4, 4)
    got = ifvd_loss(fs, ft, label, K, reduction)  # type: ignore[arg-type]
    assert got.item() == pytest.approx(ifvd_loop(fs, ft, label, reduction), rel=1e-10)


def test_map_is_zero_at_ignored_pixels_and_one_for_singleton_classes() -> None:
    f, label = rand(3, 1, 4, 2, 2), torch.tensor([[[0, IGNORE_INDEX], [1, 1]]])
    m = prototype_cosine_map(f, label, K)
    assert m[0, 0, 1].item() == 0.0
    assert m[0, 0, 0].item() == pytest.approx(1.0, abs=1e-12)  # its own prototype
    assert m[0, 1, 0].item() < 1.0


def test_zero_when_maps_agree_even_across_channel_counts_and_rotations() -> None:
    fs, label = rand(4, 2, 3, 4, 4), labels(5, 2, 4, 4)
    assert ifvd_loss(fs, fs.clone(), label, K).item() == 0.0
    q, _ = torch.linalg.qr(rand(6, 5, 5))  # orthogonal 5x5, applied to zero-padded channels
    padded = torch.cat([fs, torch.zeros(2, 2, 4, 4, dtype=fs.dtype)], dim=1)
    ft = 3.0 * torch.einsum("dc,nchw->ndhw", q, padded)
    assert ifvd_loss(fs, ft, label, K).item() == pytest.approx(0.0, abs=1e-20)
    assert ifvd_loss(fs, rand(7, 2, 3, 4, 4), label, K).item() > 1e-3


def test_absent_class_contributes_nothing_and_all_ignored_gives_zero() -> None:
    fs, ft = rand(8, 2, 3, 4, 4), rand(9, 2, 3, 4, 4)
    label = labels(10, 2, 4, 4)
    assert ifvd_loss(fs, ft, label, K).item() == pytest.approx(
        ifvd_loss(fs, ft, label, K + 4).item(), rel=1e-12
    )  # more (absent) classes change nothing
    ignored = torch.full((2, 4, 4), IGNORE_INDEX)
    fs.requires_grad_()
    loss = ifvd_loss(fs, ft, ignored, K)
    loss.backward()
    assert loss.item() == 0.0 and bool((fs.grad == 0).all())


def test_method_resizes_labels_nearest_and_applies_weight() -> None:
    student = TapInfo((3, 4), (8, 8), 5, K, 4)  # last stage 4x4, so the maps have 16 pixels
    teacher = TapInfo((6, 8), (8, 8), 7, K, 4)
    s, t = outputs(student, 0), outputs(teacher, 20)
    label = labels(11, 2, 32, 32)
    out = IFVD(student, teacher, weight=2.0)(s, t, batch(label))
    assert set(out) == {"ifvd"}
    small = label[:, 4::8, 4::8]  # nearest-exact 32x32 -> 4x4: the pixel under each centre
    expected = ifvd_loop(s.stages[-1].detach(), t.stages[-1].detach(), small, "valid")
    assert out["ifvd"].item() == pytest.approx(2.0 * expected, rel=1e-10)
    out["ifvd"].backward()
    assert s.stages[-1].grad is not None and bool(s.stages[-1].grad.abs().sum() > 0)


def test_stages_sum_and_decoder_option() -> None:
    s, t = outputs(STUDENT, 1), outputs(TEACHER, 21)
    b = batch(labels(12, 2, 32, 32))
    both = IFVD(STUDENT, TEACHER, stages=(0, 1))(s, t, b)["ifvd"].item()
    parts = [IFVD(STUDENT, TEACHER, stages=(i,))(s, t, b)["ifvd"].item() for i in (0, 1)]
    assert both == pytest.approx(sum(parts), rel=1e-12)
    dec = IFVD(STUDENT, TEACHER, feature="decoder", weight=1.0)(s, t, b)["ifvd"].item()
    small = b.label[:, 2::4, 2::4]
    expected = ifvd_loop(s.decoder.detach(), t.decoder.detach(), small, "valid")
    assert dec == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("all_ignored", [False, True])
def test_finite_for_extreme_features(all_ignored: bool) -> None:
    s = outputs(STUDENT, 2, scale=1e4, dtype=torch.float32)
    t = outputs(TEACHER, 22, scale=1e4, dtype=torch.float32)
    label = labels(13, 2, 32, 32)
    if all_ignored:
        label[:] = IGNORE_INDEX
    s.stages[-1].data[0, :, 0, 0] = 0.0  # a zero feature vector: cosine must stay finite
    loss = IFVD(STUDENT, TEACHER)(s, t, batch(label))["ifvd"]
    loss.backward()
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(s.stages[-1].grad).all())


def test_options_and_errors() -> None:
    assert method_options(METHODS.get("ifvd")) == {
        "weight": 20.0,
        "stages": (-1,),
        "reduction": "valid",
        "feature": "stages",
    }
    with pytest.raises(KdbenchError, match="reduction"):
        IFVD(STUDENT, TEACHER, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(KdbenchError, match="feature"):
        IFVD(STUDENT, TEACHER, feature="logits")  # type: ignore[arg-type]
    with pytest.raises(KdbenchError, match="stages"):
        IFVD(STUDENT, TEACHER, stages=())
