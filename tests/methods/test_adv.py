"""The adversarial term's discriminator and hinge losses: shapes, identities, small maps."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kdbench.distributed import SyncBatchNorm, convert_sync_batchnorm
from kdbench.errors import KdbenchError
from kdbench.method import Batch, build_method
from kdbench.models.outputs import Outputs, TapInfo
from methods.adv import (
    AdamState,
    Adv,
    Discriminator,
    SelfAttention,
    SGDState,
    discriminator_input,
    gradient_penalty,
    hinge_discriminator_loss,
    hinge_generator_loss,
    interpolation_weights,
    wgan_discriminator_loss,
    wgan_generator_loss,
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


# The official form: SKD's WGAN-GP.


def test_wgan_losses_of_a_zero_discriminator_are_zero() -> None:
    zero = torch.zeros(3, 1, 1, 5)
    assert wgan_discriminator_loss(zero, zero).item() == 0.0
    assert wgan_generator_loss(zero).item() == 0.0


def test_wgan_losses_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(10)
    real, fake = torch.randn(4, 1, 2, 3, generator=g), torch.randn(4, 1, 2, 3, generator=g) + 1
    want = sum(fake.flatten().tolist()) / fake.numel() - sum(real.flatten().tolist()) / 24
    assert wgan_discriminator_loss(real, fake).item() == pytest.approx(want, rel=1e-6)
    assert wgan_generator_loss(fake).item() == pytest.approx(-fake.mean().item(), rel=1e-6)


def linear_critic(w: torch.Tensor, scale: float = 1.0):  # noqa: ANN201
    """D(x)_n = scale·⟨w, x_n⟩: the gradient of Σ D with respect to each image is scale·w."""
    return lambda x: scale * (x * w).flatten(1).sum(1)


@pytest.mark.parametrize("scale", [1.0, -1.0, 3.0, 0.25])
def test_penalty_of_a_linear_critic_is_the_squared_excess_of_its_gradient_norm(
    scale: float,
) -> None:
    g = torch.Generator().manual_seed(11)
    w = torch.randn(5, 4, 6, generator=g, dtype=torch.float64)
    w /= w.norm()  # ‖∇‖ = |scale|
    real, fake = (torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64) for _ in range(2))
    penalty = gradient_penalty(linear_critic(w, scale), real, fake, torch.rand(3, generator=g))
    assert penalty.item() == pytest.approx((abs(scale) - 1) ** 2, abs=1e-12)


class BatchCoupledCritic(torch.nn.Module):
    """A small critic with a training-mode BatchNorm first, as D: the images are coupled."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(2)
        self.conv = torch.nn.Conv2d(2, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.tanh(self.conv(self.norm(x))).mean(dim=1, keepdim=True)


def reference_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                      alpha: torch.Tensor, eps: float = 1e-6) -> float:
    """Central differences of Σ D(x̂) in every element of x̂, then mean_n (‖grad_n‖ − 1)²."""
    a = alpha.view(-1, 1, 1, 1)
    mixed = (a * real + (1 - a) * fake).detach()
    grad = torch.zeros_like(mixed)
    with torch.no_grad():
        for i in range(mixed.numel()):
            step = torch.zeros_like(mixed).view(-1)
            step[i] = eps
            step = step.view_as(mixed)
            up, down = critic(mixed + step).sum(), critic(mixed - step).sum()
            grad.view(-1)[i] = (up - down) / (2 * eps)
    norms = [math.sqrt(sum(v * v for v in grad[n].flatten().tolist())) for n in range(len(grad))]
    return sum((v - 1) ** 2 for v in norms) / len(norms)


def penalty_case(seed: int) -> tuple[BatchCoupledCritic, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    critic = BatchCoupledCritic().double().train()
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(3, 2, 5, 4, generator=g, dtype=torch.float64) * 2
    fake = torch.randn(3, 2, 5, 4, generator=g, dtype=torch.float64)
    return critic, real, fake, torch.rand(3, generator=g, dtype=torch.float64)


def test_penalty_matches_finite_differences_through_a_batch_norm() -> None:
    critic, real, fake, alpha = penalty_case(12)
    want = reference_penalty(critic, real, fake, alpha)
    assert gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(want, rel=1e-6)


def test_penalty_is_differentiable_in_the_critics_parameters() -> None:
    """The double backward: gradcheck of the penalty as a function of the conv's weights."""
    critic, real, fake, alpha = penalty_case(13)
    weight = critic.conv.weight.detach().clone().requires_grad_(True)

    def penalty(w: torch.Tensor) -> torch.Tensor:
        return gradient_penalty(
            lambda x: torch.func.functional_call(critic, {"conv.weight": w}, (x,)),
            real, fake, alpha,
        )

    assert torch.autograd.gradcheck(penalty, (weight,))


def test_interpolation_weights_of_one_process_are_the_generators_draw() -> None:
    torch.manual_seed(14)
    alpha = interpolation_weights(5, torch.device("cpu"))
    torch.manual_seed(14)
    assert torch.equal(alpha, torch.rand(5))


def test_sgd_state_matches_torch_sgd() -> None:
    torch.manual_seed(15)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    state = SGDState(params, momentum=0.9, weight_decay=5e-4)
    reference = torch.optim.SGD(twins, lr=1.0, momentum=0.9, weight_decay=5e-4)
    for step in range(4):
        lr = 0.1 * (1 - step / 4) ** 0.9
        grads = [torch.randn_like(p) for p in params]
        state.step(params, grads, lr)
        reference.param_groups[0]["lr"] = lr
        for twin, g in zip(twins, grads, strict=True):
            twin.grad = g.clone()
        reference.step()
    for p, twin in zip(params, twins, strict=True):
        torch.testing.assert_close(p.detach(), twin.detach())
    assert int(state.steps) == 4 and "b1" in state.state_dict()


def official_reference_steps(method: Adv, cases: list[tuple[Outputs, Outputs, Batch]],
                             seed: int) -> torch.nn.Module:
    """A twin of D trained by torch.optim.SGD on λ_d·(critic loss + 10·penalty), with the
    method's poly learning rate, the same interpolation weights and the same order of D's
    forwards (spectral-norm power iterations and BatchNorm statistics alike)."""
    twin = copy.deepcopy(method.discriminator).requires_grad_(True)
    sgd = torch.optim.SGD(twin.parameters(), lr=4e-4, momentum=0.9, weight_decay=5e-4)
    for i, (student, teacher, batch) in enumerate(cases):
        twin(discriminator_input(student.logits.detach()))  # the student term's forward
        real, fake = discriminator_input(teacher.logits), discriminator_input(student.logits)
        critic = wgan_discriminator_loss(twin(real), twin(fake.detach()))
        torch.manual_seed(seed + i)
        penalty = gradient_penalty(twin, real, fake, torch.rand(real.shape[0]))
        sgd.zero_grad()
        (0.1 * (critic + 10 * penalty)).backward()
        sgd.param_groups[0]["lr"] = 4e-4 * (1 - batch.progress) ** 0.9
        sgd.step()
    return twin


def test_the_official_hook_takes_sgd_steps_of_d_on_the_penalised_critic_loss() -> None:
    """In float64, D's parameter changes over two steps (momentum and poly decay at work) are
    those of the reference to 1e-6 relative."""
    torch.manual_seed(16)
    method = Adv(STUDENT, STUDENT, form="official").double()
    assert method.weight == 0.1 and isinstance(method.optimizer, SGDState)
    cases = []
    for i, seed in enumerate((17, 18)):
        student, teacher, batch = adv_case(seed)
        batch.step, batch.total_steps = 3 + i, 10
        zs = student.logits.detach().double().requires_grad_(True)
        cases.append((Outputs(zs, (), zs), Outputs(teacher.logits.double(), (), zs), batch))
    start = [p.detach().clone() for p in method.discriminator.parameters()]
    twin = official_reference_steps(copy.deepcopy(method), cases, seed=100)
    for i, (student, teacher, batch) in enumerate(cases):
        score = copy.deepcopy(method.discriminator)(discriminator_input(student.logits.detach()))
        out = method(student, teacher, batch)
        torch.testing.assert_close(out["adv"].detach(), -0.1 * score.mean())
        torch.manual_seed(100 + i)
        method.before_optimizer_step()
    for (name, p), q, p0 in zip(method.discriminator.named_parameters(), twin.parameters(),
                                start, strict=True):
        torch.testing.assert_close(p - p0, q.detach() - p0, rtol=1e-6, atol=1e-12, msg=name)
    assert int(method.optimizer.steps) == 2
    assert not any(p.requires_grad for p in method.parameters())


@pytest.mark.parametrize("form", ["cirkd", "official"])
def test_d_steps_in_float32_whatever_autocast_surrounds_them(form: str) -> None:
    """Forward and D step called under bf16 autocast (as a training step's forward is) give
    bit-for-bit the D of a step without autocast: the losses turn it off inside."""
    discriminators = []
    for precision in (None, torch.bfloat16):
        torch.manual_seed(19)
        method = Adv(STUDENT, STUDENT, form=form)
        student, teacher, batch = adv_case(20)
        with torch.autocast("cpu", dtype=precision or torch.bfloat16, enabled=bool(precision)):
            out = method(student, teacher, batch)
            method.before_optimizer_step()
        assert out["adv"].dtype == torch.float32 and torch.isfinite(out["adv"])
        discriminators.append(method.discriminator.state_dict())
    for key, value in discriminators[0].items():
        assert torch.equal(value, discriminators[1][key]), key


def test_a_bad_form_is_a_user_error() -> None:
    with pytest.raises(KdbenchError, match="form"):
        build_method([("adv", {"form": "wgan"})], STUDENT, STUDENT)


@pytest.mark.parametrize("form", ["cirkd", "official"])
def test_logits_of_magnitude_1e4_give_finite_terms_gradients_and_steps(form: str) -> None:
    torch.manual_seed(21)
    method = Adv(STUDENT, STUDENT, form=form)
    student, teacher, batch = adv_case(22)
    zs = (student.logits.detach() * 1e4).requires_grad_(True)
    out = method(Outputs(zs, (), zs), Outputs(teacher.logits * 1e4, (), zs), batch)
    out["adv"].backward()
    method.before_optimizer_step()
    assert torch.isfinite(out["adv"]) and torch.isfinite(zs.grad).all()
    assert all(torch.isfinite(v).all() for v in method.state_dict().values())
