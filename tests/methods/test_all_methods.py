"""Properties every registered method must have, whatever its maths.

Each method is called on random student/teacher outputs whose channels differ (so adapters are
exercised) and must give finite losses and finite gradients for ordinary logits, for logits of
magnitude 1e4, for a batch where a class is absent, and for a batch where every pixel is ignored.
"""

from __future__ import annotations

import pytest
import torch

from kdbench.data.base import IGNORE_INDEX
from kdbench.method import Batch, build_method, method_options
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS

K = 5
H, W = 32, 64
STUDENT = TapInfo((8, 16, 24, 32), (4, 8, 16, 32), 16, K, 4)
TEACHER = TapInfo((12, 20, 28, 40), (4, 8, 16, 32), 24, K, 4)


def outputs(info: TapInfo, scale: float, generator: torch.Generator, grad: bool) -> Outputs:
    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * scale).requires_grad_(grad)

    n = 2
    stages = tuple(
        rand(n, c, H // r, W // r)
        for c, r in zip(info.stage_channels, info.stage_reductions, strict=True)
    )
    return Outputs(
        logits=rand(n, K, H // 4, W // 4),
        stages=stages,
        decoder=rand(n, info.decoder_channels, H // 4, W // 4),
    )


def labels(kind: str, generator: torch.Generator) -> torch.Tensor:
    label = torch.randint(0, K, (2, H, W), generator=generator)
    if kind == "absent":
        label[label == 2] = 1
    if kind == "ignored":
        label[:] = IGNORE_INDEX
    return label


@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize(
    ("scale", "label_kind"),
    [(1.0, "normal"), (1e4, "normal"), (1.0, "absent"), (1.0, "ignored"), (1e4, "ignored")],
)
def test_losses_and_gradients_are_finite(name: str, scale: float, label_kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    method = build_method([(name, {})] if name != "none" else [], STUDENT, TEACHER)
    student = outputs(STUDENT, scale, g, grad=True)
    teacher = outputs(TEACHER, scale, g, grad=False)
    batch = Batch(
        rgb=torch.zeros(2, 3, H, W),
        x=torch.zeros(2, 1, H, W),
        label=labels(label_kind, g),
        step=50,
        total_steps=100,
    )
    for _ in range(2):  # a second call sees initialised state (queues, bandwidths)
        losses = method(student, teacher, batch)
    assert all(v.dim() == 0 for v in losses.values())
    if not losses:
        assert name == "none"
        return
    total = sum(losses.values())
    assert torch.isfinite(total), {k: float(v) for k, v in losses.items()}
    total.backward()
    tensors = [student.logits, student.decoder, *student.stages, *method.parameters()]
    for t in tensors:
        if t.grad is not None:
            assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_documents_itself(name: str) -> None:
    cls = METHODS.get(name)
    assert cls.__doc__ and len(cls.__doc__.strip()) > 20
    module_doc = __import__(cls.__module__, fromlist=["_"]).__doc__ or ""
    assert name == "none" or any(ch.isdigit() for ch in module_doc), "cite the paper (with year)"
    assert isinstance(method_options(cls), dict)


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n != "none"])
def test_learnable_parts_are_in_the_state_dict(name: str) -> None:
    method = build_method([(name, {})], STUDENT, TEACHER)
    state = method.state_dict()
    for key, param in method.named_parameters():
        assert key in state and state[key].shape == param.shape
    assert method.extra_parameters() == sum(
        p.numel() for p in method.parameters() if p.requires_grad
    )
