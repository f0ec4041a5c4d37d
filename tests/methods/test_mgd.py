"""Tests of methods/mgd.py: the masked generative loss against a float64 loop (explicit 3x3
convolutions), its reduction to plain MSE, the random mask, determinism and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, Batch, method_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS
from methods.mgd import MGD, generator, mgd_loss, random_keep_mask
from tests.methods.fakes import rand

STUDENT = TapInfo((3, 4), (8, 16), 5, 3, 4)
TEACHER = TapInfo((6, 5), (8, 16), 7, 3, 4)


def outputs(
    info: TapInfo, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> Outputs:
    """Outputs for (2, 3, 32, 32) images; MGD reads only the stages."""
    stages = tuple(
        (scale * rand(seed + i, 2, c, 32 // r, 32 // r)).to(dtype).requires_grad_()
        for i, (c, r) in enumerate(zip(info.stage_channels, info.stage_reductions, strict=True))
    )
    zeros = torch.zeros(2, 3, 8, 8, dtype=dtype)
    return Outputs(logits=zeros, stages=stages, decoder=zeros)


def batch() -> Batch:
    return Batch(
        rgb=torch.zeros(2, 3, 32, 32),
        x=torch.zeros(2, 1, 32, 32),
        label=torch.full((2, 32, 32), IGNORE_INDEX),
    )


Nested = list[list[list[float]]]


def conv3x3_loop(x: Nested, weight: list[list[Nested]], bias: list[float]) -> Nested:
    """Zero-padded 3x3 convolution of one (C, H, W) nested list, plain Python."""
    c_in, h, w = len(x), len(x[0]), len(x[0][0])
    out = []
    for o in range(len(weight)):
        plane = []
        for i in range(h):
            row = []
            for j in range(w):
                acc = bias[o]
                for c in range(c_in):
                    for di in range(3):
                        for dj in range(3):
                            ii, jj = i + di - 1, j + dj - 1
                            if 0 <= ii < h and 0 <= jj < w:
                                acc += weight[o][c][di][dj] * x[c][ii][jj]
                row.append(acc)
            plane.append(row)
        out.append(plane)
    return out


def mgd_loop(
    aligned: torch.Tensor, ft: torch.Tensor, gen: nn.Sequential, mask: torch.Tensor
) -> float:
    """(1/N) Σ (conv(relu(conv(aligned ⊙ M))) − f_T)², image by image in float64 Python."""
    w1, b1 = gen[0].weight.tolist(), gen[0].bias.tolist()
    w2, b2 = gen[2].weight.tolist(), gen[2].bias.tolist()
    total = 0.0
    for n in range(aligned.shape[0]):
        x, m, t = aligned[n].tolist(), mask[n, 0].tolist(), ft[n].tolist()
        masked = [[[v * m[i][j] for j, v in enumerate(row)] for i, row in enumerate(p)] for p in x]
        hidden = [[[max(v, 0.0) for v in row] for row in p] for p in conv3x3_loop(masked, w1, b1)]
        out = conv3x3_loop(hidden, w2, b2)
        total += sum(
            (out[c][i][j] - t[c][i][j]) ** 2
            for c in range(len(t))
            for i in range(len(t[0]))
            for j in range(len(t[0][0]))
        )
    return total / aligned.shape[0]


def test_loss_matches_float64_loop() -> None:
    torch.manual_seed(0)
    gen = generator(2).double()
    aligned, ft = rand(1, 2, 2, 3, 4), rand(2, 2, 2, 3, 4)
    mask = (rand(3, 2, 1, 3, 4) > 0).double()
    got = mgd_loss(aligned, ft, gen, mask).item()
    assert got == pytest.approx(mgd_loop(aligned, ft, gen, mask), rel=1e-10)


def identity_generator(channels: int) -> nn.Sequential:
    """The generator with both convs set to the identity (centre tap 1, no bias)."""
    gen = generator(channels).double()
    with torch.no_grad():
        for conv in (gen[0], gen[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[range(channels), range(channels), 1, 1] = 1.0
    return gen


def test_no_mask_and_identity_generator_is_the_plain_squared_error() -> None:
    info = TapInfo((4,), (16,), 4, 3, 4)  # equal channels: the align is the identity
    method = MGD(info, info, alpha=0.5, lam=0.0).double()
    method.generators[0] = identity_generator(4)
    s, t = outputs(info, 4), outputs(info, 5)
    s.stages[0].data.abs_()  # non-negative, so the ReLU passes it unchanged
    loss = method(s, t, batch())["mgd"]
    expected = 0.5 * ((s.stages[0] - t.stages[0]) ** 2).sum().item() / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_mask_keeps_each_position_with_probability_one_minus_lambda() -> None:
    torch.manual_seed(1)
    like = torch.zeros(4, 7, 100, 100)
    mask = random_keep_mask(like, 0.75)
    assert mask.shape == (4, 1, 100, 100)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask.mean().item() == pytest.approx(0.25, abs=0.01)  # 40000 draws: sd 0.002
    assert bool((random_keep_mask(like, 0.0) == 1).all())
    assert bool((random_keep_mask(like, 1.0) == 0).all())


def test_deterministic_under_seed_and_random_across_seeds() -> None:
    torch.manual_seed(2)
    method = MGD(STUDENT, TEACHER).double()
    s, t = outputs(STUDENT, 6), outputs(TEACHER, 7)
    values = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        values.append(method(s, t, batch())["mgd"].item())
    assert values[0] == values[1] != values[2]


def test_gradients_reach_student_align_and_generator() -> None:
    torch.manual_seed(5)
    method = MGD(STUDENT, TEACHER, stages=(0, 1)).double()
    s, t = outputs(STUDENT, 8), outputs(TEACHER, 9)
    method(s, t, batch())["mgd"].backward()
    assert all(bool(f.grad.abs().sum() > 0) for f in s.stages)
    assert len(method.aligns) == 2 and len(method.generators) == 2
    for name, p in method.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_finite_for_extreme_features() -> None:
    torch.manual_seed(6)
    s = outputs(STUDENT, 10, scale=1e4, dtype=torch.float32)
    t = outputs(TEACHER, 11, scale=1e4, dtype=torch.float32)
    loss = MGD(STUDENT, TEACHER)(s, t, batch())["mgd"]
    loss.backward()
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(s.stages[-1].grad).all())


def test_options_and_errors() -> None:
    assert method_options(METHODS.get("mgd")) == {"alpha": 2e-5, "lam": 0.75, "stages": (-1,)}
    with pytest.raises(KdbenchError, match="lam"):
        MGD(STUDENT, TEACHER, lam=1.5)
    with pytest.raises(KdbenchError, match="stages"):
        MGD(STUDENT, TEACHER, stages=(2,))
