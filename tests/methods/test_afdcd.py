"""Af-DCD: pure losses against float64 loops, no negatives with one group, the small-map rule,
the method's terms and its gradient-clipping hook."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import Batch, build_method
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.models.student import Segmenter
from kdbench.registry import TEACHERS
from kdbench.train.loop import Models, train_step
from methods.afdcd import (
    AfDCD,
    fitted_sizes,
    make_projector,
    patch_contrast_loss,
    reconstruction_loss,
    spatial_mask,
)
from methods.kd import kd_loss


def reference_contrast(g: torch.Tensor, t: torch.Tensor, tau: float, groups: int, patch: int,
                       pool: int) -> float:
    """Loops: max-pool, then for every patch and every student token (position, group) the
    cross-entropy over the positive and the other groups' teacher tokens of that patch."""
    gp = torch.nn.functional.max_pool2d(g, pool)
    tp = torch.nn.functional.max_pool2d(t, pool)
    n, c, h, w = gp.shape
    d = c // groups

    def token(x: torch.Tensor, i: int, y: int, xx: int, grp: int) -> list[float]:
        return x[i, grp * d : (grp + 1) * d, y, xx].tolist()

    total = 0.0
    for i in range(n):
        for py in range(0, h, patch):
            for px in range(0, w, patch):
                cells = [(py + a, px + b) for a in range(patch) for b in range(patch)]
                for grp in range(groups):
                    for (y, x) in cells:
                        s = token(gp, i, y, x, grp)

                        def logit(
                            y2: int, x2: int, g2: int, s: list[float] = s, i: int = i
                        ) -> float:
                            other = token(tp, i, y2, x2, g2)
                            return -sum(abs(p - q) for p, q in zip(s, other, strict=True)) / tau

                        positive = logit(y, x, grp)
                        candidates = [positive] + [
                            logit(y2, x2, g2) for g2 in range(groups) if g2 != grp
                            for (y2, x2) in cells
                        ]
                        top = max(candidates)
                        lse = top + math.log(sum(math.exp(v - top) for v in candidates))
                        total += lse - positive
    return total / (h * w) / n


def maps(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64),
            torch.randn(*shape, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize(("groups", "patch", "pool"), [(2, 2, 2), (4, 1, 1), (2, 4, 2)])
def test_patch_contrast_matches_loops(groups: int, patch: int, pool: int) -> None:
    g, t = maps(0, (2, 8, 8, 8))
    got = patch_contrast_loss(g, t, 0.5, groups, patch, pool).item()
    assert got == pytest.approx(reference_contrast(g, t, 0.5, groups, patch, pool), rel=1e-10)


def test_one_channel_group_has_no_negatives_and_zero_contrast() -> None:
    g, t = maps(1, (2, 6, 8, 8))
    g.requires_grad_(True)
    loss = patch_contrast_loss(g, t, 0.07, groups=1, patch=2, pool=2)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(g.grad, torch.zeros_like(g))


def test_default_token_count_per_patch_is_256() -> None:
    """At the defaults on a 16-divisible map: 16 groups × 4×4 positions, 240 negatives each;
    a student equal to the teacher has every positive at distance 0."""
    t = torch.randn(1, 32, 16, 16, dtype=torch.float64)
    loss = patch_contrast_loss(t, t, 0.07)
    pooled = torch.nn.functional.max_pool2d(t, 4)
    assert pooled.shape[-2:] == (4, 4)
    assert 0 < loss.item() < math.log(241) * 256 / 16


def test_reconstruction_is_the_summed_square_over_the_batch() -> None:
    g, t = maps(2, (3, 4, 5, 6))
    want = sum(float(((g[i] - t[i]) ** 2).sum()) for i in range(3)) / 3
    assert reconstruction_loss(g, t).item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("shape", "want"),
    [((2, 512, 64, 128), (16, 4, 4)), ((2, 40, 4, 8), (8, 1, 4)), ((2, 24, 6, 10), (8, 1, 2)),
     ((1, 7, 1, 2), (1, 1, 1))],
)
def test_fitted_sizes_shrink_to_fit(shape: tuple[int, ...], want: tuple[int, int, int]) -> None:
    assert fitted_sizes(shape, 16, 4, 4) == want
    g, t = maps(3, shape)
    assert torch.isfinite(patch_contrast_loss(g.float(), t.float()))


def test_gradients_and_extreme_values() -> None:
    g, t = maps(4, (2, 8, 8, 8))
    g = (g.float() * 1e4).requires_grad_(True)
    loss = patch_contrast_loss(g, t.float() * 1e4, 0.07, 2, 2, 2)
    loss = loss + reconstruction_loss(g, t.float())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(g.grad).all() and g.grad.abs().sum() > 0


def test_masks() -> None:
    gen = torch.Generator().manual_seed(0)
    random = spatial_mask((4, 3, 32, 32), "random", 0.75, gen)
    assert random.shape == (4, 1, 32, 32) and abs(random.mean().item() - 0.25) < 0.03
    centre = spatial_mask((1, 3, 6, 9), "centre", 0.75)
    assert centre[0, 0, 2:4, 3:6].sum() == 0 and centre.sum() == 54 - 6


def afdcd_outputs(info: TapInfo, seed: int, scale: float = 1.0) -> Outputs:
    gen = torch.Generator().manual_seed(seed)
    stages = tuple(torch.randn(2, c, 32 // r, 64 // r, generator=gen) * scale
                   for c, r in zip(info.stage_channels, info.stage_reductions, strict=True))
    return Outputs(torch.randn(2, 5, 8, 16, generator=gen) * scale, stages,
                   torch.randn(2, info.decoder_channels, 8, 16, generator=gen))


STUDENT = TapInfo((8, 24), (4, 8), 16, 5, 4)
TEACHER = TapInfo((12, 32), (4, 8), 24, 5, 4)


@pytest.mark.parametrize("projector", ["plain", "enhanced"])
def test_method_terms_are_the_pure_losses(projector: str) -> None:
    torch.manual_seed(0)
    method = AfDCD(STUDENT, TEACHER, mask_ratio=0.0, projector=projector, groups=4, patch=2,
                   pool=2)
    student, teacher = afdcd_outputs(STUDENT, 1), afdcd_outputs(TEACHER, 2)
    label = torch.zeros(2, 32, 64, dtype=torch.long)
    out = method(student, teacher, Batch(torch.zeros(2, 3, 32, 64), torch.zeros(2, 1, 32, 64),
                                         label))
    g = method.projector(method.align(student.stages[-1]))  # mask ratio 0 keeps everything
    assert g.shape == teacher.stages[-1].shape
    torch.testing.assert_close(out["fd"], 2e-6 * reconstruction_loss(g, teacher.stages[-1]))
    torch.testing.assert_close(
        out["ctr"], 5e-3 * patch_contrast_loss(g, teacher.stages[-1], 0.07, 4, 2, 2)
    )
    torch.testing.assert_close(out["kd"], kd_loss(student.logits, teacher.logits, 1.0))


def test_enhanced_projector_formula() -> None:
    torch.manual_seed(1)
    proj = make_projector("enhanced", 6)
    x = torch.randn(1, 6, 5, 5)
    x_1 = torch.relu(proj.block_1(x))
    x_2 = torch.relu(proj.block_2(x_1))
    torch.testing.assert_close(proj(x), (proj.adaptor_1(x_1) + proj.adaptor_2(x_2)) / 2)


def test_hook_clips_the_connectors_gradient_norm() -> None:
    torch.manual_seed(3)
    method = build_method([("afdcd", {"clip": 0.5, "fd_weight": 1.0})], STUDENT, TEACHER)
    student, teacher = afdcd_outputs(STUDENT, 4, scale=10.0), afdcd_outputs(TEACHER, 5, 10.0)
    label = torch.zeros(2, 32, 64, dtype=torch.long)
    out = method(student, teacher, Batch(torch.zeros(2, 3, 32, 64), torch.zeros(2, 1, 32, 64),
                                         label))
    sum(out.values()).backward()
    grads = [p.grad for p in method.parameters()]
    assert torch.nn.utils.get_total_norm(grads) > 0.5
    method.before_optimizer_step()
    assert torch.nn.utils.get_total_norm(grads).item() == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("options", [{"mask": "edge"}, {"projector": "mlp"}, {"groups": 0},
                                     {"mask_ratio": 1.0}, {"tau": 0.0}])
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(KdbenchError, match="afdcd"):
        AfDCD(STUDENT, TEACHER, **options)


def test_the_training_step_clips_the_connectors_before_the_optimizer_steps() -> None:
    """One ``train_step`` with SGD at lr 1: the connectors move by exactly their clipped
    gradient, whose norm is ``clip`` (the loop calls the method's hook before stepping)."""
    torch.manual_seed(0)
    student = Segmenter("test_resnet", 5, decoder_channels=16)
    teacher = TEACHERS.get("intermediate")("test_resnet", 5, 1, decoder_channels=16)
    method = build_method([("afdcd", {"clip": 1e-3, "fd_weight": 1.0})], student.tap_info,
                          teacher.tap_info)
    models = Models(student, method, teacher, uses_x=False)
    optimizer = torch.optim.SGD([*student.parameters(), *method.parameters()], lr=1.0)
    before = [p.detach().clone() for p in method.parameters()]
    gen = torch.Generator().manual_seed(1)
    data = {"rgb": torch.randn(2, 3, 32, 64, generator=gen),
            "x": torch.randn(2, 1, 32, 64, generator=gen),
            "label": torch.randint(0, 5, (2, 32, 64), generator=gen)}
    train_step(models, data, 0, 10, 0, {"amp": "off"}, optimizer,
               torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"))
    moved = [p.detach() - b for p, b in zip(method.parameters(), before, strict=True)]
    assert torch.nn.utils.get_total_norm(moved).item() == pytest.approx(1e-3, rel=1e-4)


def test_both_terms_are_means_of_per_image_terms() -> None:
    """Nothing couples the images of a batch: the batch's terms are the means of the images'."""
    g, t = maps(6, (3, 8, 8, 8))
    for loss in (reconstruction_loss, lambda a, b: patch_contrast_loss(a, b, 0.5, 2, 2, 2)):
        per_image = torch.stack([loss(g[i : i + 1], t[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(loss(g, t), per_image.mean())
