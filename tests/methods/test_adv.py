"""The adversarial term's discriminator and hinge losses: shapes, identities, small maps."""

from __future__ import annotations

import copy

import pytest
import torch

from kdbench.distributed import SyncBatchNorm, convert_sync_batchnorm
from kdbench.method import Batch, build_method
from kdbench.models.outputs import Outputs, TapInfo
from methods.adv import (
    AdamState,
    Adv,
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


def test_adam_state_matches_torch_adam() -> None:
    torch.manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    state = AdamState(params, 4e-4, (0.9, 0.99))
    reference = torch.optim.Adam(twins, lr=4e-4, betas=(0.9, 0.99))
    for step in range(5):
        grads = [torch.randn_like(p) * (step + 1) for p in params]
        state.step(params, grads)
        for twin, g in zip(twins, grads, strict=True):
            twin.grad = g.clone()
        reference.step()
    for p, twin in zip(params, twins, strict=True):
        torch.testing.assert_close(p.detach(), twin.detach())
    assert int(state.steps) == 5 and "m0" in state.state_dict()


STUDENT = TapInfo((8,), (8,), 8, 5, 4)


def adv_case(seed: int) -> tuple[Outputs, Outputs, Batch]:
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(2, 5, 8, 16, generator=g, requires_grad=True)
    zt = torch.randn(2, 5, 8, 16, generator=g)
    label = torch.zeros(2, 32, 64, dtype=torch.long)
    batch = Batch(torch.zeros(2, 3, 32, 64), torch.zeros(2, 1, 32, 64), label)
    return Outputs(zs, (), zs), Outputs(zt, (), zt), batch


def test_the_student_term_trains_the_student_and_never_d() -> None:
    torch.manual_seed(4)
    method = build_method([("adv", {})], STUDENT, STUDENT)
    student, teacher, batch = adv_case(5)
    out = method(student, teacher, batch)
    assert set(out) == {"adv"} and method.extra_parameters() == 0
    assert not any(p.requires_grad for p in method.parameters())  # the run's optimizer skips D
    out["adv"].backward()
    assert student.logits.grad is not None and student.logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.parameters())


def test_the_hook_takes_one_adam_step_of_d_on_its_hinge_loss() -> None:
    torch.manual_seed(6)
    method = Adv(STUDENT, STUDENT, d_weight=0.5)
    twin = copy.deepcopy(method.discriminator).requires_grad_(True)
    reference = torch.optim.Adam(twin.parameters(), lr=4e-4, betas=(0.9, 0.99))
    student, teacher, batch = adv_case(7)
    method(student, teacher, batch)
    twin(discriminator_input(student.logits.detach()))  # the same BatchNorm and power-iteration
    method.before_optimizer_step()
    loss = 0.5 * hinge_discriminator_loss(twin(discriminator_input(teacher.logits)),
                                          twin(discriminator_input(student.logits.detach())))
    loss.backward()
    reference.step()
    for (name, p), q in zip(method.discriminator.named_parameters(), twin.parameters(),
                            strict=True):
        torch.testing.assert_close(p, q.detach(), msg=name)
    assert not any(p.requires_grad for p in method.discriminator.parameters())
    before = [p.clone() for p in method.discriminator.parameters()]
    method.before_optimizer_step()  # no forward since the last step: nothing to do
    assert all(torch.equal(a, b) for a, b in zip(before, method.discriminator.parameters(),
                                                 strict=True))


def test_synchronised_batch_norm_keeps_d_out_of_the_runs_optimizer() -> None:
    """The run converts a method's batch norm for data parallelism: D's stays frozen."""
    method = convert_sync_batchnorm(Adv(STUDENT, STUDENT))
    assert isinstance(method.discriminator[0], SyncBatchNorm)
    assert not any(p.requires_grad for p in method.parameters())
    student, teacher, batch = adv_case(8)
    method(student, teacher, batch)
    method.before_optimizer_step()
    assert int(method.optimizer.steps) == 1
