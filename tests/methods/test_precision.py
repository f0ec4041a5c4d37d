"""Every loss computes in float32 (or wider) with autocast disabled inside, whatever the caller.

Decoder-sized maps (logits and decoder feature 128 x 256, stages down to 1/8 of that) with
feature magnitudes up to 10: the loss under bf16 autocast on the CPU (and fp16 autocast on CUDA,
where there is one) equals the float32 loss of the same inputs within 1e-4 relative; with
float64 inputs and a float64 method every loss computes, finite, in float64.
"""

from __future__ import annotations

import pytest
import torch

from kdbench.method import Batch, build_method
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS

K = 19
H, W = 128, 256
STUDENT = TapInfo((16, 24, 40, 48), (1, 2, 4, 8), 32, K, 1)
TEACHER = TapInfo((24, 32, 64, 96), (1, 2, 4, 8), 48, K, 1)
"""Maps are described relative to the 128 x 256 logits: stages at 1, 1/2, 1/4, 1/8 of it."""


def outputs(info: TapInfo, g: torch.Generator, dtype: torch.dtype, device: str) -> Outputs:
    """Features of magnitude up to ~10 (uniform scale per map in [1, 10]), logits up to ~10."""

    def rand(c: int, r: int) -> torch.Tensor:
        scale = 1 + 9 * torch.rand((), generator=g)
        x = torch.randn(2, c, H // r, W // r, generator=g) * scale
        return x.to(device=device, dtype=dtype).requires_grad_(True)

    return Outputs(
        logits=rand(K, 1),
        stages=tuple(
            rand(c, r) for c, r in zip(info.stage_channels, info.stage_reductions, strict=True)
        ),
        decoder=rand(info.decoder_channels, 1),
    )


def case(name: str, dtype: torch.dtype, device: str = "cpu"):  # noqa: ANN201
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    method = build_method([(name, {})], STUDENT, TEACHER).to(device=device, dtype=dtype)
    student, teacher = outputs(STUDENT, g, dtype, device), outputs(TEACHER, g, dtype, device)
    label = torch.randint(0, K, (2, H, W), generator=g).to(device)
    label[:, :8] = 255
    batch = Batch(torch.zeros(2, 3, H, W), torch.zeros(2, 1, H, W), label, 50, 100)
    return method, student, teacher, batch


def losses_with_and_without_autocast(
    name: str, device: str, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    method, student, teacher, batch = case(name, torch.float32, device)
    method(student, teacher, batch)  # first call initialises state (anchors, queues)
    state = {k: v.clone() for k, v in method.state_dict().items()}
    torch.manual_seed(1)
    plain = method(student, teacher, batch)
    method.load_state_dict(state)
    torch.manual_seed(1)
    with torch.autocast(device, dtype=dtype):
        mixed = method(student, teacher, batch)
    return plain, mixed


METHOD_NAMES = [n for n in METHODS.names() if n != "none"]


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_bf16_autocast_on_the_cpu_gives_the_float32_loss(name: str) -> None:
    plain, mixed = losses_with_and_without_autocast(name, "cpu", torch.bfloat16)
    assert plain.keys() == mixed.keys()
    for key, value in plain.items():
        assert mixed[key].dtype == torch.float32, key
        assert torch.isfinite(mixed[key]), key
        torch.testing.assert_close(mixed[key], value, rtol=1e-4, atol=1e-7, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_fp16_autocast_on_cuda_gives_the_float32_loss(name: str) -> None:
    plain, mixed = losses_with_and_without_autocast(name, "cuda", torch.float16)
    for key, value in plain.items():
        assert torch.isfinite(mixed[key]), key
        torch.testing.assert_close(mixed[key], value, rtol=1e-4, atol=1e-7, msg=key)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_half_precision_inputs_are_computed_in_float32(name: str) -> None:
    """bf16 model outputs (as autocast produces them) give a float32 loss and bf16 gradients."""
    method, student, teacher, batch = case(name, torch.float32)
    half = Outputs(
        student.logits.detach().bfloat16().requires_grad_(True),
        tuple(s.detach().bfloat16().requires_grad_(True) for s in student.stages),
        student.decoder.detach().bfloat16().requires_grad_(True),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(half, teacher, batch)
    total = sum(out.values())
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    for t in (half.logits, half.decoder, *half.stages):
        assert t.grad is None or (t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad).all())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_float64_inputs_compute_in_float64(name: str) -> None:
    method, student, teacher, batch = case(name, torch.float64)
    for _ in range(2):
        out = method(student, teacher, batch)
    for key, value in out.items():
        assert value.dtype == torch.float64 and torch.isfinite(value), key
    sum(out.values()).backward()
    for p in method.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
