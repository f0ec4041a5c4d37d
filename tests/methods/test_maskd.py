"""MasKD's pure losses against float64 loops; the zero-token identity; gradients; extremes;
the method on main and auxiliary logits, its stage's tokens, bf16 autocast, and 2 gloo ranks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as tmp_mp

from kdbench.distributed import process_group
from kdbench.errors import KdbenchError
from kdbench.launch.spawn import free_port
from kdbench.method import IGNORE_INDEX, build_method, resize_like
from kdbench.models.outputs import Outputs, TapInfo
from methods.maskd import TOKENS_FILE, MasKD, dice_term, maskd_loss, token_loss, token_masks
from tests.methods.fakes import batch


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


# The method: main and auxiliary logits, its stage's tokens, precision, data parallelism.

K = 4
INFO = TapInfo((8, 16), (4, 8), 8, K, 4)


def logits_pair(seed: int, scale: float = 1.0, aux: tuple[bool, bool] = (False, False)
                ) -> tuple[Outputs, Outputs]:
    """Student logits (2, K, 6, 8) and teacher logits (2, K, 3, 4) (resized by the method),
    each with auxiliary logits (2, K, 3, 4) where ``aux`` says so."""
    g = torch.Generator().manual_seed(seed)

    def out(h: int, w: int, with_aux: bool, grad: bool) -> Outputs:
        z = (torch.randn(2, K, h, w, generator=g, dtype=torch.float64) * scale)
        a = torch.randn(2, K, 3, 4, generator=g, dtype=torch.float64) * scale if with_aux else None
        return Outputs(logits=z.requires_grad_(grad), stages=(), decoder=z,
                       aux=None if a is None else a.requires_grad_(grad))

    return out(6, 8, aux[0], True), out(3, 4, aux[1], False)


def built(tokens: torch.Tensor | None = None, **options: object) -> MasKD:
    method = MasKD(INFO, INFO, **options).double()
    if tokens is not None:
        method.tokens.copy_(tokens)
    return method


def call(method: MasKD, student: Outputs, teacher: Outputs) -> dict[str, torch.Tensor]:
    label = torch.zeros(2, 24, 32, dtype=torch.long)
    return method(student, teacher, batch(label))


def test_the_method_is_weight_times_the_loss_on_resized_teacher_logits() -> None:
    student, teacher = logits_pair(7)
    tokens = torch.randn(8, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    losses = call(built(tokens, weight=2.5), student, teacher)
    assert set(losses) == {"maskd"}  # no auxiliary head: no auxiliary term
    zt = resize_like(teacher.logits, student.logits)
    want = 2.5 * reference_maskd(student.logits.detach(), zt, tokens)
    assert losses["maskd"].item() == pytest.approx(want, rel=1e-10)


def test_aux_term_uses_the_same_tokens_on_both_aux_heads() -> None:
    tokens = torch.randn(8, K, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    student, teacher = logits_pair(8, aux=(True, True))
    losses = call(built(tokens), student, teacher)
    want = 0.4 * reference_maskd(student.aux.detach(), teacher.aux, tokens)
    assert losses["maskd_aux"].item() == pytest.approx(want, rel=1e-10)
    for missing in ((True, False), (False, True)):  # one model without an aux head: no term
        assert set(call(built(tokens), *logits_pair(8, aux=missing))) == {"maskd"}
    assert set(call(built(tokens, aux=0.0), student, teacher)) == {"maskd"}


def test_gradients_reach_the_student_not_the_tokens() -> None:
    student, teacher = logits_pair(9, aux=(True, True))
    method = built(torch.randn(8, K, dtype=torch.float64))
    sum(call(method, student, teacher).values()).backward()
    assert student.logits.grad.abs().sum() > 0 and student.aux.grad.abs().sum() > 0
    assert not method.tokens.requires_grad and method.extra_parameters() == 0
    assert "tokens" not in method.state_dict()  # the stage run's artefact, not the student's


def test_finite_at_extreme_logits_and_the_float32_loss_under_bf16_autocast() -> None:
    student, teacher = logits_pair(10, scale=1e4, aux=(True, True))
    method = built(torch.randn(8, K, dtype=torch.float64))
    losses = call(method, student, teacher)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.isfinite(student.logits.grad).all() and torch.isfinite(student.aux.grad).all()
    student, teacher = logits_pair(11, scale=10.0, aux=(True, True))
    half = [Outputs(logits=o.logits.detach().bfloat16().requires_grad_(True), stages=(),
                    decoder=o.logits.detach().bfloat16(),
                    aux=o.aux.detach().bfloat16().requires_grad_(True)) for o in (student, teacher)]
    method = MasKD(INFO, INFO)
    method.tokens.copy_(torch.randn(8, K))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = call(method, *half)
    plain = call(method, *(Outputs(logits=o.logits.float(), stages=(), decoder=o.decoder,
                                   aux=o.aux.float()) for o in half))
    for key, value in mixed.items():
        assert value.dtype == torch.float32 and torch.isfinite(value)
        torch.testing.assert_close(value, plain[key])
    sum(mixed.values()).backward()
    assert half[0].logits.grad.dtype == torch.bfloat16
    assert torch.isfinite(half[0].logits.grad.float()).all()


def test_load_stage_reads_the_tokens_and_refuses_a_wrong_file(tmp_path: Path) -> None:
    tokens = torch.randn(8, K)
    torch.save({"tokens": tokens}, tmp_path / TOKENS_FILE)
    method = MasKD(INFO, INFO)
    method.load_stage(tmp_path)
    torch.testing.assert_close(method.tokens, tokens, rtol=0, atol=0)
    with pytest.raises(KdbenchError, match=r"expected tokens of shape \(3, 4\)"):
        MasKD(INFO, INFO, num_tokens=3).load_stage(tmp_path)
    with pytest.raises(KdbenchError, match="no receptive tokens"):
        method.load_stage(tmp_path / "elsewhere")
    built_set = build_method([("maskd", {})], INFO, INFO, {0: tmp_path})
    torch.testing.assert_close(built_set.terms["maskd"].tokens, tokens, rtol=0, atol=0)
    with pytest.raises(KdbenchError, match="needs its maskd_tokens run"):
        build_method([("maskd", {})], INFO, INFO, {})


def _ranks(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2: the method on its image of the batch; the loss and the gradient of
    its image, averaged over the ranks as DistributedDataParallel averages gradients."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    student, teacher = logits_pair(12, aux=(True, True))
    method = built(torch.randn(8, K, generator=torch.Generator().manual_seed(3),
                               dtype=torch.float64))
    mine = [Outputs(logits=o.logits.detach()[rank:rank + 1].requires_grad_(True), stages=(),
                    decoder=o.decoder[rank:rank + 1],
                    aux=o.aux.detach()[rank:rank + 1].requires_grad_(True))
            for o in (student, teacher)]
    with process_group("gloo"):
        loss = sum(call(method, *mine).values())
        (loss / 2).backward()  # the mean over ranks of the ranks' losses
        total = loss.detach().clone()
        torch.distributed.all_reduce(total)
        torch.save({"loss": total / 2, "grad": mine[0].logits.grad, "aux": mine[0].aux.grad},
                   f"{out}/rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_ranks_give_the_loss_and_gradients_of_the_whole_batch(tmp_path: Path) -> None:
    """Masks are per image: the ranks' mean loss is the whole batch's, and each rank's gradient
    is the whole batch's gradient on its image (nothing couples the images)."""
    tmp_mp.spawn(_ranks, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    student, teacher = logits_pair(12, aux=(True, True))
    method = built(torch.randn(8, K, generator=torch.Generator().manual_seed(3),
                               dtype=torch.float64))
    loss = sum(call(method, student, teacher).values())
    loss.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for r, saved in enumerate(ranks):
        torch.testing.assert_close(saved["loss"], loss.detach())
        torch.testing.assert_close(saved["grad"], student.logits.grad[r:r + 1])
        torch.testing.assert_close(saved["aux"], student.aux.grad[r:r + 1])
