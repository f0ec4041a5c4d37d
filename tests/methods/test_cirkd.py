"""Tests of methods/cirkd.py: the pixel-pair and memory terms against float64 loops, their
identities, the FIFO class queues, determinism, checkpointing of the state and gradients."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, method_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS
from methods.cirkd import (
    CIRKD,
    ClassMemory,
    memory_relation_loss,
    pair_relation_loss,
    pool_to_stride,
)
from tests.methods.fakes import batch, rand

K = 3
STUDENT = TapInfo((3, 4), (8, 16), 5, K, 4)
TEACHER = TapInfo((6, 8), (8, 16), 7, K, 4)
SMALL = {"pixel_memory": 6, "region_memory": 4, "pixels_per_class": 2}


def outputs(
    info: TapInfo, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> Outputs:
    """Outputs for (2, 3, 16, 16) images: decoder 4x4 at reduction 4, stages 2x2 and 1x1."""
    stages = tuple(
        (scale * rand(seed + i, 2, c, 16 // r, 16 // r)).to(dtype).requires_grad_()
        for i, (c, r) in enumerate(zip(info.stage_channels, info.stage_reductions, strict=True))
    )
    decoder = (scale * rand(seed + 9, 2, info.decoder_channels, 4, 4)).to(dtype).requires_grad_()
    return Outputs(logits=torch.zeros(2, K, 4, 4, dtype=dtype), stages=stages, decoder=decoder)


def labels(seed: int, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, K, (2, size, size), generator=g)
    label[torch.rand(2, size, size, generator=g) < 0.2] = IGNORE_INDEX
    return label


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(a * a for a in v))
    return [a / norm for a in v]


def kl_rows(t_logits: list[float], s_logits: list[float], tau: float) -> float:
    """KL(softmax(t/τ) ‖ softmax(s/τ)) of two rows, float64 Python."""
    lt = math.log(sum(math.exp(a / tau) for a in t_logits))
    ls = math.log(sum(math.exp(a / tau) for a in s_logits))
    return sum(
        math.exp(a / tau - lt) * ((a / tau - lt) - (b / tau - ls))
        for a, b in zip(t_logits, s_logits, strict=True)
    )


def pixel_vectors(f: torch.Tensor) -> list[list[list[float]]]:
    """Per image, the unit channel vector of every pixel in row-major order."""
    n_img, c, h, w = f.shape
    x = f.tolist()
    return [
        [unit([x[n][ch][i][j] for ch in range(c)]) for i in range(h) for j in range(w)]
        for n in range(n_img)
    ]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def pair_loop(fs: torch.Tensor, ft: torch.Tensor, tau: float) -> float:
    s, t = pixel_vectors(fs), pixel_vectors(ft)
    n = len(s)
    total = 0.0
    for i in range(n):
        for j in range(n):
            rows = [
                kl_rows([dot(tp, tq) for tq in t[j]], [dot(sp, sq) for sq in s[j]], tau)
                for sp, tp in zip(s[i], t[i], strict=True)
            ]
            total += sum(rows) / len(rows)
    return total / n**2


def memory_loop(s_anchor: list, t_anchor: list, contrast: list, tau: float) -> float:
    rows = [
        kl_rows([dot(ta, v) for v in contrast], [dot(sa, v) for v in contrast], tau)
        for sa, ta in zip(s_anchor, t_anchor, strict=True)
    ]
    return sum(rows) / len(rows)


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_pair_term_matches_float64_loop(tau: float) -> None:
    fs, ft = rand(0, 2, 3, 2, 3), rand(1, 2, 4, 2, 3)  # channel counts may differ
    assert pair_relation_loss(fs, ft, tau).item() == pytest.approx(
        pair_loop(fs, ft, tau), rel=1e-10
    )


def test_pair_term_zero_when_relations_agree() -> None:
    fs = rand(2, 2, 3, 2, 3)
    scaled = fs * (rand(3, 2, 1, 2, 3).abs() + 0.1)  # positive per-pixel scale
    assert pair_relation_loss(fs, scaled, 0.1).item() == pytest.approx(0.0, abs=1e-12)
    q, _ = torch.linalg.qr(rand(4, 5, 5))
    rotated = torch.einsum("dc,nchw->ndhw", q, torch.cat([fs, 0 * fs[:, :2]], dim=1))
    assert pair_relation_loss(fs, rotated, 0.1).item() == pytest.approx(0.0, abs=1e-12)
    assert pair_relation_loss(fs, rand(5, 2, 3, 2, 3), 0.1).item() > 1e-3


def test_pair_groups_are_the_authors_per_gpu_batches() -> None:
    """Groups of 2 consecutive images (16 images over 8 GPUs); None relates the whole batch."""
    fs, ft = rand(11, 5, 3, 2, 2), rand(12, 5, 4, 2, 2)
    groups = [(0, 2), (2, 4), (4, 5)]
    want = sum(pair_loop(fs[a:b], ft[a:b], 0.2) for a, b in groups) / len(groups)
    assert pair_relation_loss(fs, ft, 0.2, group=2).item() == pytest.approx(want, rel=1e-10)
    full = pair_relation_loss(fs, ft, 0.2, group=None).item()
    assert full == pytest.approx(pair_loop(fs, ft, 0.2), rel=1e-10)
    assert pair_relation_loss(fs, ft, 0.2, group=5).item() == pytest.approx(full, rel=1e-12)


@pytest.mark.slow
def test_pair_term_has_the_exact_gradient() -> None:
    fs, ft = rand(6, 2, 3, 2, 2).requires_grad_(), rand(7, 2, 4, 2, 2)
    assert torch.autograd.gradcheck(lambda x: pair_relation_loss(x, ft, 0.5), (fs,))


def test_memory_term_matches_float64_loop() -> None:
    s, t, v = rand(8, 5, 4), rand(9, 5, 4), rand(10, 7, 4)
    s, t, v = (torch.nn.functional.normalize(x, dim=1) for x in (s, t, v))
    got = memory_relation_loss(s, t, v, 0.1).item()
    assert got == pytest.approx(memory_loop(s.tolist(), t.tolist(), v.tolist(), 0.1), rel=1e-10)


@pytest.mark.slow
def test_memory_term_in_chunks_has_the_same_value_and_gradient(monkeypatch) -> None:  # noqa: ANN001
    import methods.cirkd as cirkd

    s, t, v = rand(13, 11, 4), rand(14, 11, 4), rand(15, 6, 4)
    s, t, v = (torch.nn.functional.normalize(x, dim=1) for x in (s, t, v))
    s.requires_grad_(True)
    whole = memory_relation_loss(s, t, v, 0.1)
    (grad_whole,) = torch.autograd.grad(whole, s)
    monkeypatch.setattr(cirkd, "ROW_CHUNK", 3)  # 11 anchors: chunks of 3, 3, 3, 2
    chunked = memory_relation_loss(s, t, v, 0.1)
    (grad_chunked,) = torch.autograd.grad(chunked, s)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-12)
    torch.testing.assert_close(grad_chunked, grad_whole)
    want = memory_loop(s.tolist(), t.tolist(), v.tolist(), 0.1)
    assert chunked.item() == pytest.approx(want, rel=1e-10)
    # The closed-form gradient equals autograd's through the plain formula.
    plain = cirkd.relation_kl(s @ v.T, t @ v.T, 0.1)
    torch.testing.assert_close(torch.autograd.grad(plain, s)[0], grad_whole)
    fs, ft = rand(16, 2, 3, 2, 3).requires_grad_(), rand(17, 2, 4, 2, 3)
    assert torch.autograd.gradcheck(lambda x: pair_relation_loss(x, ft, 0.5), (fs,))


def test_push_is_a_fifo_ring_per_class() -> None:
    memory = ClassMemory(2, 1, pixel_size=5, region_size=1, pixels_per_class=2)
    q, ptr = memory.pixel_queue, memory.pixel_ptr
    other = q[1].clone()
    keep = torch.tensor([[True, True], [False, False]])  # class 1 writes nothing
    for first in (1.0, 3.0, 5.0):
        rows = torch.tensor([[[first], [first + 1]], [[-1.0], [-1.0]]])
        ClassMemory.push(q, ptr, rows, keep)
    assert q[0, :, 0].tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]  # 6 overwrote the oldest entry, 1
    assert ptr.tolist() == [1, 0]
    assert torch.equal(q[1], other)
    ClassMemory.push(q, ptr, torch.tensor([[[7.0], [8.0]], [[9.0], [10.0]]]),
                     torch.tensor([[True, False], [True, True]]))  # a prefix of each class's rows
    assert q[0, :, 0].tolist() == [6.0, 7.0, 3.0, 4.0, 5.0] and q[1, :2, 0].tolist() == [9.0, 10.0]
    assert ptr.tolist() == [2, 2]


def test_enqueue_picks_pixels_uniformly_without_replacement() -> None:
    """Class 0 has 4 pixels, 2 picked per call: every pair of distinct pixels is equally likely
    (6 pairs, each with probability 1/6), and a class with one pixel enqueues just it."""
    torch.manual_seed(0)
    memory = ClassMemory(2, 1, pixel_size=2, region_size=1, pixels_per_class=2)
    feats = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    label = torch.tensor([[[0, 0, 1], [0, 0, IGNORE_INDEX]]])
    pairs: dict[frozenset, int] = {}
    for _ in range(600):
        memory.enqueue(feats, label)
        picked = frozenset(memory.pixel_queue[0, :, 0].tolist())
        pairs[picked] = pairs.get(picked, 0) + 1
        assert memory.pixel_queue[1, memory.pixel_ptr[1] - 1, 0].item() == 3.0
    assert set(pairs) == {frozenset(p) for p in
                          [(1, 2), (1, 4), (1, 5), (2, 4), (2, 5), (4, 5)]}
    assert all(60 <= n <= 140 for n in pairs.values()), pairs  # 100 expected, ~8.3 sd


def test_enqueue_regions_and_pixels_per_image_and_class() -> None:
    torch.manual_seed(0)
    memory = ClassMemory(3, 2, pixel_size=8, region_size=4, pixels_per_class=2)
    feats = torch.nn.functional.normalize(rand(11, 2, 2, 2, 3).float(), dim=1)
    label = torch.tensor([[[0, 0, 1], [0, IGNORE_INDEX, 1]], [[0, 2, 2], [2, 2, 2]]])
    memory.enqueue(feats, label)
    assert memory.region_ptr.tolist() == [2, 1, 1]
    assert memory.pixel_ptr.tolist() == [3, 2, 2]  # image 1 has one pixel of class 0
    for slot, (n, k) in enumerate([(0, 0), (1, 0)]):
        mean = feats[n].permute(1, 2, 0)[label[n] == k].mean(dim=0)
        expected = mean / mean.norm()
        assert torch.allclose(memory.region_queue[k, slot], expected, atol=1e-6)
    class0_image0 = feats[0].permute(1, 2, 0)[label[0] == 0]
    for row in memory.pixel_queue[0, :2]:
        assert any(torch.allclose(row, v) for v in class0_image0)
    assert torch.allclose(memory.pixel_queue[0, 2], feats[1, :, 0, 0])


def test_pool_to_stride_averages_blocks() -> None:
    f = rand(12, 1, 2, 4, 6)
    pooled = pool_to_stride(f, reduction=4, stride=8)
    assert pooled.shape == (1, 2, 2, 3)
    assert pooled[0, 1, 1, 2].item() == pytest.approx(f[0, 1, 2:4, 4:6].mean().item(), rel=1e-12)
    assert pool_to_stride(f, reduction=8, stride=8) is f


def test_method_terms_match_loops_with_the_queue_before_the_call() -> None:
    torch.manual_seed(1)
    # contrast sizes large enough that every queue slot is sampled; KL is column-order free
    method = CIRKD(
        STUDENT, TEACHER, stride=4, pixel_contrast=30, region_contrast=30, **SMALL
    ).double()
    memory = method.memories[0]
    pixel_before, region_before = memory.pixel_queue.clone(), memory.region_queue.clone()
    s, t = outputs(STUDENT, 20), outputs(TEACHER, 30)
    label = labels(13)
    out = method(s, t, batch(label))
    small = label[:, 2::4, 2::4]  # nearest-exact 16x16 -> 4x4: the pixel under each centre
    valid = small != IGNORE_INDEX
    fs, ft = s.decoder.detach(), t.decoder.detach()
    assert out["cirkd_pair"].item() == pytest.approx(pair_loop(fs, ft, 0.1), rel=1e-10)
    projected = torch.nn.functional.normalize(method.projectors[0](fs), dim=1).detach()
    s_anchor = projected.permute(0, 2, 3, 1)[valid].tolist()
    t_anchor = torch.nn.functional.normalize(ft, dim=1).permute(0, 2, 3, 1)[valid].tolist()
    for key, queue in (
        ("cirkd_pixel_memory", pixel_before),
        ("cirkd_region_memory", region_before),
    ):
        expected = memory_loop(s_anchor, t_anchor, queue.flatten(0, 1).tolist(), 0.1)
        assert out[key].item() == pytest.approx(0.1 * expected, rel=1e-9)
    assert not torch.equal(memory.pixel_queue, pixel_before)  # enqueued after the loss


def test_downsampling_to_stride_before_the_pair_term() -> None:
    s, t = outputs(STUDENT, 21), outputs(TEACHER, 31)
    out = CIRKD(STUDENT, TEACHER, **SMALL).double()(s, t, batch(labels(14)))  # stride 8: pool 2x2
    fs = torch.nn.functional.avg_pool2d(s.decoder.detach(), 2)
    ft = torch.nn.functional.avg_pool2d(t.decoder.detach(), 2)
    assert out["cirkd_pair"].item() == pytest.approx(pair_loop(fs, ft, 0.1), rel=1e-10)


def test_eval_mode_and_ignored_batches_do_not_enqueue() -> None:
    s, t = outputs(STUDENT, 22), outputs(TEACHER, 32)
    method = CIRKD(STUDENT, TEACHER, **SMALL).double()
    before = copy.deepcopy(method.state_dict())
    method.eval()
    method(s, t, batch(labels(15)))
    method.train()
    out = method(s, t, batch(torch.full((2, 16, 16), IGNORE_INDEX)))
    after = method.state_dict()
    for key in ("pixel_queue", "pixel_ptr", "region_queue", "region_ptr"):
        assert torch.equal(before[f"memories.0.{key}"], after[f"memories.0.{key}"])
    assert out["cirkd_pixel_memory"].item() == 0.0 and out["cirkd_region_memory"].item() == 0.0
    sum(out.values()).backward()
    assert bool(torch.isfinite(s.decoder.grad).all()) and bool(s.decoder.grad.abs().sum() > 0)


def build(seed: int) -> CIRKD:
    """A small float64 CIRKD whose random queues are drawn under ``seed``."""
    torch.manual_seed(seed)
    return CIRKD(STUDENT, TEACHER, pixel_contrast=3, region_contrast=3, **SMALL).double()


def step(method: CIRKD, i: int) -> float:
    """Training call number ``i`` on its own data and sampling seed: the total loss."""
    torch.manual_seed(100 + i)
    s, t = outputs(STUDENT, 40 + i), outputs(TEACHER, 50 + i)
    return sum(v.item() for v in method(s, t, batch(labels(60 + i))).values())


def test_deterministic_under_seed() -> None:
    a, b = build(0), build(0)
    assert [step(a, 0), step(a, 1)] == [step(b, 0), step(b, 1)]
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), key
    assert step(build(1), 0) != step(build(0), 0)  # another seed draws other queues


def test_state_dict_round_trip_resumes_exactly() -> None:
    trained = build(0)
    step(trained, 0)
    state = copy.deepcopy(trained.state_dict())
    keys = {"memories.0.pixel_queue", "memories.0.region_ptr", "projectors.0.1.running_mean"}
    assert keys <= set(state)
    expected = step(trained, 1)
    fresh = build(7)  # other random queues, replaced by the loaded state
    fresh.load_state_dict(state)
    assert step(fresh, 1) == expected
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_gradients_reach_student_and_projector_and_stage_option() -> None:
    torch.manual_seed(2)
    method = CIRKD(STUDENT, TEACHER, feature="stages", stages=(0, 1), **SMALL).double()
    assert len(method.projectors) == 2 and len(method.memories) == 2
    s, t = outputs(STUDENT, 23), outputs(TEACHER, 33)
    out = method(s, t, batch(labels(16)))
    sum(out.values()).backward()
    assert bool(s.stages[0].grad.abs().sum() > 0)
    for name, p in method.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_finite_for_extreme_features() -> None:
    torch.manual_seed(3)
    s = outputs(STUDENT, 24, scale=1e4, dtype=torch.float32)
    t = outputs(TEACHER, 34, scale=1e4, dtype=torch.float32)
    s.decoder.data[0, :, 0, 0] = 0.0  # a zero embedding must stay finite too
    out = CIRKD(STUDENT, TEACHER, **SMALL)(s, t, batch(labels(17)))
    total = sum(out.values())
    total.backward()
    assert bool(torch.isfinite(total)) and bool(torch.isfinite(s.decoder.grad).all())


def test_options_and_errors() -> None:
    options = method_options(METHODS.get("cirkd"))
    assert options["tau"] == 0.1 and options["feature"] == "decoder"
    assert (options["pair_weight"], options["pixel_weight"], options["region_weight"]) == (
        1.0,
        0.1,
        0.1,
    )
    assert options["pair_group"] == 2
    with pytest.raises(KdbenchError, match="pixel_memory"):
        CIRKD(STUDENT, TEACHER, pixel_memory=0)
    with pytest.raises(KdbenchError, match="pair_group"):
        CIRKD(STUDENT, TEACHER, pair_group=0)
    with pytest.raises(KdbenchError, match="tau"):
        CIRKD(STUDENT, TEACHER, tau=0.0, **SMALL)
    with pytest.raises(KdbenchError, match="feature"):
        CIRKD(STUDENT, TEACHER, feature="logits", **SMALL)  # type: ignore[arg-type]
    with pytest.raises(KdbenchError, match="stages"):
        CIRKD(STUDENT, TEACHER, feature="stages", stages=(3,), **SMALL)
