"""BPKD (reconstruction): the boundary mask and both terms against float64 loops, identities."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX
from methods.bpkd import BPKD, body_loss, boundary_mask, edge_loss
from methods.cwd import CWD
from tests.methods.test_dkd import batch_for, logits_only, tap_info

K = 4


def reference_mask(labels: torch.Tensor, k: int, width: int, pool: int) -> torch.Tensor:
    """Boundary mask by loops: a labelled pixel of class c is in band c when a labelled pixel of
    another class lies within the width×width window; a labelled pixel of another class is in
    band c when a pixel of class c lies within it. Then the mean over the pool×pool window
    (pixels inside the image only), zero on ignored pixels."""
    n, h, w = labels.shape
    r, q = width // 2, pool // 2
    band = torch.zeros(n, k, h, w, dtype=torch.float64)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                here = int(labels[i, y, x])
                if here == IGNORE_INDEX:
                    continue
                near = {
                    int(labels[i, v, u])
                    for v in range(max(0, y - r), min(h, y + r + 1))
                    for u in range(max(0, x - r), min(w, x + r + 1))
                } - {IGNORE_INDEX}
                for c in range(k):
                    if (here == c and near - {c}) or (here != c and c in near):
                        band[i, c, y, x] = 1.0
    soft = torch.zeros_like(band)
    for y in range(h):
        for x in range(w):
            ys = slice(max(0, y - q), min(h, y + q + 1))
            xs = slice(max(0, x - q), min(w, x + q + 1))
            soft[:, :, y, x] = band[:, :, ys, xs].mean(dim=(2, 3))
    return soft * (labels != IGNORE_INDEX).unsqueeze(1)


def reference_edge(zs: torch.Tensor, zt: torch.Tensor, mask: torch.Tensor, tau: float) -> float:
    total, norm = 0.0, float(mask.sum())
    n, k, h, w = zs.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                m = mask[i, :, y, x].tolist()
                s = [v * mm / tau for v, mm in zip(zs[i, :, y, x].tolist(), m, strict=True)]
                t = [v * mm / tau for v, mm in zip(zt[i, :, y, x].tolist(), m, strict=True)]
                log_zs = math.log(sum(math.exp(v) for v in s))
                log_zt = math.log(sum(math.exp(v) for v in t))
                for c in range(k):
                    qt = math.exp(t[c] - log_zt)
                    total += m[c] * qt * ((t[c] - log_zt) - (s[c] - log_zs))
    return total / norm if norm > 0 else 0.0


def reference_body(zs: torch.Tensor, zt: torch.Tensor, mask: torch.Tensor, tau: float) -> float:
    body = 1 - mask.amax(dim=1, keepdim=True)
    n, k = zs.shape[:2]
    total = 0.0
    for i in range(n):
        for c in range(k):
            s = [v / tau for v in (zs[i, c] * body[i, 0]).flatten().tolist()]
            t = [v / tau for v in (zt[i, c] * body[i, 0]).flatten().tolist()]
            ls = math.log(sum(math.exp(v) for v in s))
            lt = math.log(sum(math.exp(v) for v in t))
            pairs = zip(s, t, strict=True)
            total += sum(math.exp(b - lt) * ((b - lt) - (a - ls)) for a, b in pairs)
    return tau**2 * total / (n * k)


def case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(2, K, 5, 6, generator=g, dtype=torch.float64) * 3
    zt = torch.randn(2, K, 5, 6, generator=g, dtype=torch.float64) * 3
    label = torch.randint(0, K, (2, 5, 6), generator=g)
    label[0, 1:3, 2:4] = IGNORE_INDEX
    label[1, :, :3] = 2  # a large region: interior pixels outside every band
    return zs, zt, label


@pytest.mark.parametrize(("width", "pool"), [(3, 3), (3, 1), (5, 3), (1, 3)])
def test_boundary_mask_matches_loops(width: int, pool: int) -> None:
    _, _, label = case(0)
    got = boundary_mask(label, K, width, pool, dtype=torch.float64)
    torch.testing.assert_close(got, reference_mask(label, K, width, pool))
    assert got.min() >= 0 and got.max() <= 1


def test_boundary_mask_of_a_vertical_edge() -> None:
    label = torch.zeros(1, 4, 6, dtype=torch.long)
    label[..., 3:] = 1
    got = boundary_mask(label, 2, width=3, pool=1)
    want = torch.zeros(1, 2, 4, 6)
    want[:, :, :, 2:4] = 1.0  # the two columns either side of the edge, in both class bands
    assert torch.equal(got, want)


@pytest.mark.parametrize("edge_tau", [1.0, 2.0])
def test_terms_match_float64_loops(edge_tau: float) -> None:
    zs, zt, label = case(1)
    mask = boundary_mask(label, K, 3, 3, dtype=torch.float64)
    got_edge = edge_loss(zs, zt, mask, edge_tau)
    assert got_edge.item() == pytest.approx(reference_edge(zs, zt, mask, edge_tau), rel=1e-10)
    assert body_loss(zs, zt, mask, 4.0).item() == pytest.approx(
        reference_body(zs, zt, mask, 4.0), rel=1e-10
    )


def test_method_is_the_weighted_sum_of_its_terms() -> None:
    zs, zt, label = case(2)
    method = BPKD(tap_info(), tap_info(), edge_weight=0.5, body_weight=2.0, width=5, tau=2.0)
    out = method(logits_only(zs), logits_only(zt), batch_for(label))
    mask = reference_mask(label, K, 5, 3)
    assert out["edge"].item() == pytest.approx(0.5 * reference_edge(zs, zt, mask, 1.0), rel=1e-9)
    assert out["body"].item() == pytest.approx(2.0 * reference_body(zs, zt, mask, 2.0), rel=1e-9)


def test_without_boundaries_edge_is_zero_and_body_is_cwd_on_logits() -> None:
    zs, zt, _ = case(3)
    zs.requires_grad_(True)
    label = torch.full((2, 5, 6), 1)
    label[1, 0, 0] = IGNORE_INDEX  # an ignored pixel makes no boundary
    out = BPKD(tap_info(), tap_info())(logits_only(zs), logits_only(zt), batch_for(label))
    cwd = CWD(tap_info(), tap_info(), weight=1.0)
    want = cwd(logits_only(zs), logits_only(zt), batch_for(label))["cwd"]
    assert out["edge"].item() == 0.0 and out["edge"].requires_grad
    torch.testing.assert_close(out["body"], want)


def test_gradients_reach_the_student_in_both_regions() -> None:
    zs, zt, label = case(4)
    zs.requires_grad_(True)
    out = BPKD(tap_info(), tap_info())(logits_only(zs), logits_only(zt), batch_for(label))
    (grad_edge,) = torch.autograd.grad(out["edge"], zs, retain_graph=True)
    (grad_body,) = torch.autograd.grad(out["body"], zs)
    band = boundary_mask(label, K, 3, 3).amax(dim=1) > 0
    assert grad_edge.abs().sum(dim=1)[band].min() > 0  # every band pixel gets an edge gradient
    assert grad_edge.abs().sum(dim=1)[~band].max() == 0
    interior = boundary_mask(label, K, 3, 3).amax(dim=1) < 1
    assert grad_body.abs().sum(dim=1)[interior].min() > 0


@pytest.mark.parametrize("scale", [1e4])
def test_finite_for_extreme_logits_and_bf16_autocast(scale: float) -> None:
    zs, zt, label = case(5)
    zs = (zs.float() * scale).requires_grad_(True)
    method = BPKD(tap_info(), tap_info())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(logits_only(zs.bfloat16()), logits_only(zt.float().bfloat16() * scale),
                     batch_for(label))
    total = out["edge"] + out["body"]
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


@pytest.mark.parametrize("options", [{"width": 2}, {"pool": 0}, {"tau": 0.0}, {"edge_tau": -1.0}])
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(KdbenchError, match="bpkd"):
        BPKD(tap_info(), tap_info(), **options)


def test_the_boundary_mask_is_per_image() -> None:
    """Under data parallelism each rank's masks are those of the whole batch (nothing couples
    images); only the terms' normalisers are per rank."""
    _, _, label = case(6)
    whole = boundary_mask(label, K, 3, 3)
    halves = torch.cat([boundary_mask(label[i : i + 1], K, 3, 3) for i in range(2)])
    assert torch.equal(whole, halves)
