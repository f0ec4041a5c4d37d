"""FLOP counts of a training step against hand counts, and the step-time statistics."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kdbench.method import build_method
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.train.cost import count_step_flops, median_step_seconds, warmup_steps
from kdbench.train.loop import Models

N, H, W, K = 2, 32, 48, 5


def conv_flops(cin: int, cout: int, k: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """2 FLOPs per multiply-add: N·C_out·H_out·W_out outputs of (C_in/groups)·k² products."""
    return 2 * N * cout * h_out * w_out * (cin // groups) * k * k


class TinyNet(nn.Module):
    """conv3x3/2 (in->c1), BN, ReLU, depthwise conv3x3 (c1), conv3x3/2 (c1->c2), ReLU,
    conv1x1 (c2->K); no biases."""

    def __init__(self, cin: int, c1: int, c2: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c1, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c1)
        self.depthwise = nn.Conv2d(c1, c1, 3, padding=1, groups=c1, bias=False)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False)
        self.classifier = nn.Conv2d(c2, K, 1, bias=False)
        self.tap_info = TapInfo((c1, c2), (2, 4), c2, K, 4)
        self.cin = cin

    def forward(self, rgb: Tensor, x: Tensor | None = None) -> Outputs:
        inp = rgb if self.cin == 3 else torch.cat([rgb, x], 1)
        f1 = self.depthwise(torch.relu(self.bn(self.conv1(inp))))
        f2 = torch.relu(self.conv2(f1))
        return Outputs(logits=self.classifier(f2), stages=(f1, f2), decoder=f2)


def batch() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.randn(N, 3, H, W, generator=g),
        "x": torch.randn(N, 1, H, W, generator=g),
        "label": torch.randint(0, K, (N, H, W), generator=g),
    }


def tiny_models(method: str | None, **options: object) -> Models:
    torch.manual_seed(0)
    student = TinyNet(3, 8, 16)
    teacher = TinyNet(4, 12, 24).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    terms = [(method, options)] if method else []
    built = build_method(terms, student.tap_info, teacher.tap_info if method else None)
    return Models(student, built, teacher if method else None, uses_x=False)


def test_student_step_flops_equal_the_hand_count() -> None:
    f1 = conv_flops(3, 8, 3, H // 2, W // 2)
    dw = conv_flops(8, 8, 3, H // 2, W // 2, groups=8)
    f2 = conv_flops(8, 16, 3, H // 4, W // 4)
    f3 = conv_flops(16, K, 1, H // 4, W // 4)
    # backward: grad of weight for every conv, grad of input for all but the first (the image
    # needs no gradient): the first conv costs 2x its forward, the others 3x
    expected = 2 * f1 + 3 * dw + 3 * f2 + 3 * f3
    flops = count_step_flops(tiny_models(None), batch(), total_steps=10)
    assert flops.teacher_forward == 0 and flops.loss == 0
    assert abs(flops.student - expected) <= 0.01 * expected
    assert flops.total == flops.student


def test_teacher_and_learnable_loss_parts_are_counted_apart() -> None:
    teacher_fwd = (
        conv_flops(4, 12, 3, H // 2, W // 2)
        + conv_flops(12, 12, 3, H // 2, W // 2, groups=12)
        + conv_flops(12, 24, 3, H // 4, W // 4)
        + conv_flops(24, K, 1, H // 4, W // 4)
    )
    # FitNet's 1x1 adapter 16 -> 24 on the last stage: forward, grad of weight, grad of input
    adapter = 3 * conv_flops(16, 24, 1, H // 4, W // 4)
    plain = count_step_flops(tiny_models(None), batch(), 10)
    fitnet = count_step_flops(tiny_models("fitnet"), batch(), 10)
    assert fitnet.teacher_forward == teacher_fwd
    assert fitnet.loss == adapter
    assert fitnet.student == plain.student  # the hint's gradient adds no student FLOP
    kd = count_step_flops(tiny_models("kd"), batch(), 10)
    assert kd.loss == 0 and kd.teacher_forward == teacher_fwd  # KD's softmaxes are not FLOPs


def test_counting_changes_no_weight_buffer_gradient_or_random_stream() -> None:
    models = tiny_models("fitnet")
    before = {k: v.clone() for k, v in models.model.state_dict().items()}
    method_before = {k: v.clone() for k, v in models.method.state_dict().items()}
    torch.manual_seed(123)
    count_step_flops(models, batch(), 10)
    drawn = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(drawn, torch.rand(3))
    for key, value in models.model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics included
    for key, value in models.method.state_dict().items():
        assert torch.equal(value, method_before[key]), key
    assert all(p.grad is None for p in models.model.parameters())


def test_median_step_time_skips_each_sessions_warm_up() -> None:
    times = [9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 7.0, 2.0, 2.0, 2.0]
    # sessions [0, 12) and [12, 16): one warm-up step each (10% rounded down, at least 1)
    assert warmup_steps(12) == 1 and warmup_steps(4) == 1 and warmup_steps(1) == 0
    assert warmup_steps(1000) == 10
    kept = times[1:12] + times[13:]
    assert median_step_seconds(times, [12]) == pytest.approx(sorted(kept)[len(kept) // 2])
    assert median_step_seconds([], []) is None


def test_the_adversarial_terms_discriminator_step_is_counted() -> None:
    """adv's loss part: D's forward and backward on the student's logits (to the logits) plus
    its own step: forward on the teacher's and the student's logits and backward to its
    weights; against D alone counted the same way."""
    from torch.utils.flop_counter import FlopCounterMode

    from methods.adv import discriminator_input

    models = tiny_models("adv")
    flops = count_step_flops(models, batch(), 10)
    d = models.method.terms["adv"].discriminator
    logits = torch.randn(N, K, H // 4, W // 4, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        d(discriminator_input(logits)).mean().backward()
    one_pass = counter.get_total_flops()  # forward + backward to the input (D is frozen)
    assert flops.loss > 1.5 * one_pass  # the step's two forwards and weight gradients on top


def test_the_official_forms_penalty_is_counted() -> None:
    """``form: official`` adds the penalty: D's forward on the interpolates, its backward to
    them (with a graph) and that backward's own backward into D's weights: about three more
    forward-and-backward passes on top of the hinge form's step (measured: 7.0 against 4.0)."""
    from torch.utils.flop_counter import FlopCounterMode

    from methods.adv import discriminator_input

    hinge = count_step_flops(tiny_models("adv"), batch(), 10)
    official = count_step_flops(tiny_models("adv", form="official"), batch(), 10)
    d = tiny_models("adv").method.terms["adv"].discriminator
    logits = torch.randn(N, K, H // 4, W // 4, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        d(discriminator_input(logits)).mean().backward()
    one_pass = counter.get_total_flops()
    assert official.student == hinge.student and official.teacher_forward == hinge.teacher_forward
    assert official.loss > hinge.loss + 2 * one_pass
