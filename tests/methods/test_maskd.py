"""MasKD's pure losses against float64 loops; the zero-token identity; gradients; extremes."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.method import IGNORE_INDEX
from methods.maskd import dice_term, maskd_loss, token_loss, token_masks


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def reference_masks(zt: torch.Tensor, tokens: torch.Tensor) -> list:
    n, k, h, w = zt.shape
    return [
        [
            [
                [sigmoid(sum(float(tokens[t, c]) * float(zt[i, c, y, x]) for c in range(k)))
                 for x in range(w)]
                for y in range(h)
            ]
            for t in range(tokens.shape[0])
        ]
        for i in range(n)
    ]


def reference_maskd(zs: torch.Tensor, zt: torch.Tensor, tokens: torch.Tensor) -> float:
    n, k, h, w = zs.shape
    masks = reference_masks(zt, tokens)
    total, count = 0.0, 0
    for i in range(n):
        for t in range(tokens.shape[0]):
            m = masks[i][t]
            norm = sum(m[y][x] for y in range(h) for x in range(w)) + 1e-5
            for c in range(k):
                num = sum(m[y][x] ** 2 * (float(zs[i, c, y, x]) - float(zt[i, c, y, x])) ** 2
                          for y in range(h) for x in range(w))
                total += num / norm
                count += 1
    return 0.5 * total / count


def reference_dice(masks: list) -> float:
    total, count = 0.0, 0
    for per_image in masks:
        flat = [[v for row in m for v in row] for m in per_image]
        for a, ma in enumerate(flat):
            for b, mb in enumerate(flat):
                if a == b:
                    continue
                inner = sum(p * q for p, q in zip(ma, mb, strict=True))
                total += 2 * inner / (sum(p * p for p in ma) + sum(q * q for q in mb) + 2e-12)
                count += 1
    return total / count


def case(seed: int, t: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) * 2
    zt = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) * 2
    tokens = torch.randn(t, 4, generator=g, dtype=torch.float64) * 0.5
    return zs, zt, tokens


def test_maskd_loss_matches_loops() -> None:
    zs, zt, tokens = case(0)
    got = maskd_loss(zs, zt, tokens).item()
    assert got == pytest.approx(reference_maskd(zs, zt, tokens), rel=1e-10)


def test_zero_tokens_give_a_quarter_of_the_logit_mse() -> None:
    zs, zt, _ = case(1)
    tokens = torch.zeros(8, 4, dtype=torch.float64)
    pixels = zs.shape[-1] * zs.shape[-2]
    want = 0.25 * (zs - zt).square().mean().item() * pixels / (pixels + 2e-5)
    assert maskd_loss(zs, zt, tokens).item() == pytest.approx(want, rel=1e-12)
    assert maskd_loss(zs, zt, tokens).item() == pytest.approx(
        0.25 * (zs - zt).square().mean().item(), rel=1e-5
    )


def test_dice_matches_loops_and_token_loss_is_ce_plus_dice() -> None:
    zs, zt, tokens = case(2)
    masks = token_masks(zt, tokens)
    want = torch.tensor(reference_masks(zt, tokens), dtype=torch.float64)
    torch.testing.assert_close(masks, want)
    assert dice_term(masks).item() == pytest.approx(reference_dice(reference_masks(zt, tokens)),
                                                    rel=1e-10)
    label = torch.randint(0, 4, (2, 6, 10), generator=torch.Generator().manual_seed(0))
    label[0, 0] = IGNORE_INDEX
    combined = torch.nn.functional.interpolate(
        masks.sum(1, keepdim=True) * zt, size=(6, 10), mode="bilinear", align_corners=False
    )
    ce = torch.nn.functional.cross_entropy(combined, label, ignore_index=IGNORE_INDEX)
    assert token_loss(zt, tokens, label).item() == pytest.approx(
        ce.item() + dice_term(masks).item(), rel=1e-10
    )


def test_one_token_has_no_dice_pair() -> None:
    _, zt, tokens = case(3, t=1)
    assert dice_term(token_masks(zt, tokens)).item() == 0.0


def test_gradients_reach_student_and_tokens_in_stage_one() -> None:
    zs, zt, tokens = case(4)
    zs.requires_grad_(True)
    tokens.requires_grad_(True)
    maskd_loss(zs, zt, tokens.detach()).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    label = torch.randint(0, 4, (2, 3, 5), generator=torch.Generator().manual_seed(1))
    token_loss(zt, tokens, label).backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


def test_finite_for_extreme_logits() -> None:
    zs, zt, tokens = case(5)
    zs = (zs.float() * 1e4).requires_grad_(True)
    loss = maskd_loss(zs, zt.float() * 1e4, tokens.float())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


def test_the_student_loss_is_the_mean_of_per_image_losses() -> None:
    """Masks are per image: the batch's loss is the mean of the images' (data parallelism
    couples nothing but the final mean)."""
    zs, zt, tokens = case(6)
    per_image = torch.stack([maskd_loss(zs[i : i + 1], zt[i : i + 1], tokens) for i in range(2)])
    torch.testing.assert_close(maskd_loss(zs, zt, tokens), per_image.mean())
