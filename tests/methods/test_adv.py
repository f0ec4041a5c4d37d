"""The adversarial term's discriminator and hinge losses: shapes, identities, small maps."""

from __future__ import annotations

import pytest
import torch

from methods.adv import (
    Discriminator,
    SelfAttention,
    discriminator_input,
    hinge_discriminator_loss,
    hinge_generator_loss,
)


def test_hinge_losses_of_a_zero_discriminator_are_two_and_zero() -> None:
    zero = torch.zeros(3, 1, 1, 5)
    assert hinge_discriminator_loss(zero, zero).item() == 2.0
    assert hinge_generator_loss(zero).item() == 0.0


def test_hinge_losses_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(4, 1, 2, 3, generator=g) * 2, torch.randn(4, 1, 2, 3, generator=g) * 2
    want = sum(max(0.0, 1 - v) for v in real.flatten().tolist()) / real.numel()
    want += sum(max(0.0, 1 + v) for v in fake.flatten().tolist()) / fake.numel()
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(want, rel=1e-6)
    assert hinge_generator_loss(fake).item() == pytest.approx(-fake.mean().item(), rel=1e-6)


def test_discriminator_output_shape_and_layers() -> None:
    torch.manual_seed(0)
    d = Discriminator(19)
    assert d(torch.randn(2, 19, 64, 128)).shape == (2, 1, 1, 5)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (4, 4)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert sum(hasattr(c, "parametrizations") for c in convs) == 4  # the last conv is plain
    assert sum(isinstance(m, SelfAttention) for m in d.modules()) == 2


def test_self_attention_starts_as_the_identity_and_learns_gamma() -> None:
    attention = SelfAttention(16)
    x = torch.randn(2, 16, 4, 5)
    assert torch.equal(attention(x), x)
    attention(x).square().sum().backward()
    assert attention.gamma.grad is not None


def test_self_attention_matches_a_loop() -> None:
    torch.manual_seed(1)
    attention = SelfAttention(8).double()
    with torch.no_grad():
        attention.gamma.fill_(0.7)
    x = torch.randn(1, 8, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        q, k, v = (m(x).flatten(2)[0] for m in (attention.query, attention.key, attention.value))
    out = x.flatten(2)[0].clone()
    for i in range(6):
        scores = torch.tensor([float(q[:, i] @ k[:, j]) for j in range(6)], dtype=torch.float64)
        weights = torch.softmax(scores, 0)
        out[:, i] += 0.7 * sum(weights[j] * v[:, j] for j in range(6))
    torch.testing.assert_close(attention(x).flatten(2)[0], out)


@pytest.mark.parametrize(("size", "want"), [((8, 16), (64, 64)), ((32, 128), (64, 128)),
                                            ((64, 64), (64, 64)), ((100, 70), (100, 70))])
def test_small_maps_are_resized_up_to_64(size: tuple[int, int], want: tuple[int, int]) -> None:
    logits = torch.randn(2, 5, *size)
    resized = discriminator_input(logits)
    assert resized.shape[-2:] == want
    if size == want:
        assert resized is logits
    assert torch.isfinite(Discriminator(5)(resized)).all()


def test_generator_gradient_reaches_the_student_only_through_its_logits() -> None:
    torch.manual_seed(2)
    d = Discriminator(5)
    zs = torch.randn(2, 5, 8, 16, requires_grad=True)
    zt = torch.randn(2, 5, 8, 16)
    hinge_generator_loss(d(discriminator_input(zs))).backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all() and zs.grad.abs().sum() > 0
    d.zero_grad()
    loss = hinge_discriminator_loss(d(discriminator_input(zt)), d(discriminator_input(zs.detach())))
    loss.backward()
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad)
