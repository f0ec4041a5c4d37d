"""RGB-X teachers: shapes against ``tap_info``, fusion maths, gradients, x-dependence, weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.models.backbone import build_backbone
from kdbench.models.teacher import (
    GatedFusion,
    IntermediateFusionTeacher,
    LateFusionTeacher,
    RGBTeacher,
)
from kdbench.registry import TEACHERS

N, H, W, K, CX = 2, 32, 64, 4, 2


def _teacher(kind: str, backbone: str = "test_resnet", seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return TEACHERS.get(kind)(backbone, K, CX, decoder_channels=16, **kwargs)


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 3, H, W, generator=g), torch.randn(N, CX, H, W, generator=g)


def _grad_norm(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_registered_teachers() -> None:
    assert TEACHERS.get("intermediate") is IntermediateFusionTeacher
    assert TEACHERS.get("late") is LateFusionTeacher
    assert TEACHERS.get("rgb") is RGBTeacher


@pytest.mark.parametrize(
    ("kind", "backbone"),
    [
        ("intermediate", "test_resnet"),
        ("intermediate", "test_convnext"),
        ("intermediate", "mobilenetv3_small_050"),
        ("late", "test_convnext"),
        ("rgb", "test_convnext"),
    ],
)
def test_output_shapes_match_tap_info(kind: str, backbone: str) -> None:
    model = _teacher(kind, backbone)
    info = model.tap_info
    out = model(*_inputs())
    r = info.logit_reduction
    assert out.logits.shape == (N, K, H // r, W // r)
    assert out.decoder.shape == (N, info.decoder_channels, H // r, W // r)
    assert len(out.stages) == len(info.stage_channels)
    for f, c, s in zip(out.stages, info.stage_channels, info.stage_reductions, strict=True):
        assert f.shape == (N, c, H // s, W // s)


def test_gated_fusion_formula() -> None:
    """f = r + sigmoid(W_g [r; p] + b_g) * p with p = BN(W_p x), against a per-pixel loop."""
    torch.manual_seed(0)
    fusion = GatedFusion(rgb_channels=2, x_channels=3).double().eval().requires_grad_(False)
    bn = fusion.project[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    r = torch.randn(1, 2, 2, 3, dtype=torch.float64)
    x = torch.randn(1, 3, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        f = fusion(r, x)
    wp = fusion.project[0].weight[:, :, 0, 0]
    wg, bg = fusion.gate.weight[:, :, 0, 0], fusion.gate.bias
    for i in range(2):
        for j in range(3):
            p = []
            for o in range(2):
                lin = sum(float(wp[o, c]) * float(x[0, c, i, j]) for c in range(3))
                scale = float(bn.weight[o]) / (float(bn.running_var[o]) + bn.eps) ** 0.5
                p.append((lin - float(bn.running_mean[o])) * scale + float(bn.bias[o]))
            joint = [float(r[0, c, i, j]) for c in range(2)] + p
            for o in range(2):
                a = sum(float(wg[o, c]) * joint[c] for c in range(4)) + float(bg[o])
                gate = 1.0 / (1.0 + math.exp(-a))
                assert float(f[0, o, i, j]) == pytest.approx(joint[o] + gate * p[o], rel=1e-9)


def test_intermediate_feeds_the_fused_feature_back_into_the_rgb_stream() -> None:
    model = _teacher("intermediate").eval()
    rgb, x = _inputs()
    assert model.feedback
    with torch.no_grad():
        stages = model.encode(rgb, x)
        r0, q0 = model.rgb_encoder.step(0, rgb), model.x_encoder.step(0, x)
        f0 = model.fusions[0](r0, q0)
        f1 = model.fusions[1](model.rgb_encoder.step(1, f0), model.x_encoder.step(1, q0))
        without_feedback = model.fusions[1](
            model.rgb_encoder.step(1, r0), model.x_encoder.step(1, q0)
        )
    assert torch.allclose(stages[0], f0) and torch.allclose(stages[1], f1)
    assert not torch.allclose(stages[1], without_feedback)


def test_intermediate_without_stepping_fuses_without_feedback() -> None:
    model = _teacher("intermediate", "test_vit")  # a hook-based wrapper: no stepping
    assert not model.feedback
    rgb, x = _inputs()
    model.eval()
    with torch.no_grad():
        stages = model.encode(rgb, x)
        expected = [
            fuse(r, q)
            for fuse, r, q in zip(
                model.fusions, model.rgb_encoder(rgb), model.x_encoder(x), strict=True
            )
        ]
    for a, b in zip(stages, expected, strict=True):
        assert torch.allclose(a, b)


@pytest.mark.parametrize(
    ("kind", "depends"), [("intermediate", True), ("late", True), ("rgb", False)]
)
def test_logits_depend_on_x_exactly_when_the_teacher_reads_it(kind: str, depends: bool) -> None:
    model = _teacher(kind).eval()
    rgb, x = _inputs()
    with torch.no_grad():
        a = model(rgb, x).logits
        b = model(rgb, x + torch.randn_like(x)).logits
    assert (not torch.allclose(a, b)) is depends


def test_intermediate_gradients_reach_both_branches_and_every_fusion() -> None:
    model = _teacher("intermediate", x_backbone="test_efficientnet")  # branches of unequal width
    model(*_inputs()).logits.square().mean().backward()
    assert _grad_norm(model.rgb_encoder) > 0 and _grad_norm(model.x_encoder) > 0
    for i, fusion in enumerate(model.fusions):
        for key, p in fusion.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (i, key)


def test_late_gradients_reach_both_branches_and_the_fusion() -> None:
    model = _teacher("late")
    model(*_inputs()).logits.square().mean().backward()
    assert _grad_norm(model.rgb_branch) > 0 and _grad_norm(model.x_branch) > 0
    assert model.fuse.weight.grad.abs().sum() > 0 and model.fuse.bias.grad.abs().sum() > 0


def test_late_fusion_starts_as_the_sum_of_the_branch_logits() -> None:
    model = _teacher("late").eval()
    rgb, x = _inputs()
    with torch.no_grad():
        out = model(rgb, x)
        a, b = model.rgb_branch(rgb), model.x_branch(x)
    assert torch.allclose(out.logits, a.logits + b.logits, atol=1e-6)
    assert torch.equal(out.stages[-1], torch.cat([a.stages[-1], b.stages[-1]], dim=1))
    assert torch.equal(out.decoder, torch.cat([a.decoder, b.decoder], dim=1))


@pytest.mark.parametrize("kind", ["intermediate", "late"])
def test_same_seed_same_init(kind: str) -> None:
    a, b = _teacher(kind, seed=5).state_dict(), _teacher(kind, seed=5).state_dict()
    c = _teacher(kind, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_construction_errors_are_user_errors() -> None:
    with pytest.raises(KdbenchError, match="x_backbone 'test_convnext' has stage reductions"):
        _teacher("intermediate", x_backbone="test_convnext")
    with pytest.raises(KdbenchError, match="x_backbone 'test_convnext' has stage reductions"):
        _teacher("late", x_backbone="test_convnext")
    with pytest.raises(KdbenchError, match="teacher 'rgb' has no X branch"):
        _teacher("rgb", x_backbone="test_resnet")
    with pytest.raises(KdbenchError, match="unknown backbone 'nope'"):
        _teacher("intermediate", x_backbone="nope")


def test_pretrained_weights_load_into_both_branches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = build_backbone("test_resnet").state_dict()
    path = tmp_path / "rgb.pt"
    torch.save(saved, path)
    model = _teacher("intermediate", seed=1, pretrained=str(path))
    rgb_sd, x_sd = model.rgb_encoder.body.state_dict(), model.x_encoder.body.state_dict()
    assert all(torch.equal(rgb_sd[k], saved[k]) for k in saved)
    w = saved["conv1.0.weight"]  # (O, 3, k, k) -> (O, C_x, k, k): the RGB mean, times 3 / C_x
    expected = (w[:, 0] + w[:, 1] + w[:, 2])[:, None].repeat(1, CX, 1, 1) / CX
    assert torch.allclose(x_sd["conv1.0.weight"], expected)
    assert torch.allclose(x_sd["conv1.0.weight"].sum(1), w.sum(1))  # same response to a constant
    assert torch.equal(x_sd["layer3.0.conv2.weight"], saved["layer3.0.conv2.weight"])
    other = _teacher("intermediate", seed=1, pretrained=str(path), x_backbone="test_efficientnet")
    fresh = _teacher("intermediate", seed=1, x_backbone="test_efficientnet")
    x_other, x_fresh = other.x_encoder.state_dict(), fresh.x_encoder.state_dict()
    assert all(torch.equal(x_other[k], x_fresh[k]) for k in x_fresh)  # not loaded


@pytest.mark.parametrize("kind", ["intermediate", "late"])
def test_channels_last_and_bfloat16_autocast(kind: str) -> None:
    model = _teacher(kind).eval()
    rgb, x = _inputs()
    with torch.no_grad():
        ref = model(rgb, x).logits
        model = model.to(memory_format=torch.channels_last)
        cl = (t.contiguous(memory_format=torch.channels_last) for t in (rgb, x))
        out = model(*cl).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(rgb, x).logits
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low.float()).all()
