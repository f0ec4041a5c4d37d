"""The RGB student: output shapes against ``tap_info``, x ignored, seeds, memory formats, AMP."""

from __future__ import annotations

import re

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.models.decoder import FPNDecoder
from kdbench.models.student import Segmenter

BACKBONES = ["test_resnet", "test_convnext", "mobilenetv3_small_050"]
N, H, W, K = 2, 32, 64, 5


def _student(name: str, seed: int = 0) -> Segmenter:
    torch.manual_seed(seed)
    return Segmenter(name, K, decoder_channels=16)


@pytest.mark.parametrize("name", BACKBONES)
def test_output_shapes_match_tap_info(name: str) -> None:
    model = _student(name)
    info = model.tap_info
    out = model(torch.randn(N, 3, H, W))
    r = info.logit_reduction
    assert r == 4 and info.num_classes == K and info.decoder_channels == 16
    assert out.logits.shape == (N, K, H // r, W // r)
    assert out.decoder.shape == (N, 16, H // r, W // r)
    assert len(out.stages) == len(info.stage_channels) == len(info.stage_reductions)
    for f, c, s in zip(out.stages, info.stage_channels, info.stage_reductions, strict=True):
        assert f.shape == (N, c, H // s, W // s)


@pytest.mark.parametrize("name", BACKBONES[:2])
def test_gradients_reach_every_parameter(name: str) -> None:
    model = _student(name)
    model(torch.randn(N, 3, H, W)).logits.square().mean().backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
    # timm zero-initialises the last BN of residual branches, so some encoder grads are exactly
    # 0 at init; the stem (first encoder parameter) and the whole decoder must move.
    stem = next(model.encoder.parameters())
    assert stem.grad.abs().sum() > 0
    for key, p in model.decoder.named_parameters():
        assert p.grad.abs().sum() > 0, key


def test_student_ignores_x() -> None:
    model = _student("test_resnet").eval()
    rgb = torch.randn(N, 3, H, W)
    with torch.no_grad():
        a = model(rgb).logits
        b = model(rgb, torch.randn(N, 2, H, W)).logits
        c = model(rgb + 0.5).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # but it does read the image


def test_same_seed_same_init_and_other_seed_differs() -> None:
    a, b, c = (
        _student("test_convnext", 3),
        _student("test_convnext", 3),
        _student("test_convnext", 4),
    )
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_unknown_backbone_is_a_user_error() -> None:
    with pytest.raises(KdbenchError, match=re.escape("unknown backbone 'resnet_9000'")):
        Segmenter("resnet_9000", K)


@pytest.mark.parametrize("name", BACKBONES[:2])
def test_channels_last_gives_the_same_logits(name: str) -> None:
    model = _student(name).eval()
    rgb = torch.randn(N, 3, H, W)
    with torch.no_grad():
        ref = model(rgb).logits
        model = model.to(memory_format=torch.channels_last)
        out = model(rgb.contiguous(memory_format=torch.channels_last)).logits
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_bfloat16_autocast_runs_and_backpropagates() -> None:
    model = _student("test_resnet")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(N, 3, H, W))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
    out.logits.float().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_decoder_reads_only_stages_at_reduction_four_and_deeper() -> None:
    torch.manual_seed(0)
    decoder = FPNDecoder((3, 4, 5), (2, 4, 8), channels=6, num_classes=2).eval()
    assert decoder.used == (1, 2) and decoder.reduction == 4
    stages = [torch.randn(1, 3, 16, 16), torch.randn(1, 4, 8, 8), torch.randn(1, 5, 4, 4)]
    with torch.no_grad():
        d, z = decoder(stages)
        d0, _ = decoder([stages[0] + 1.0, stages[1], stages[2]])
        d2, _ = decoder([stages[0], stages[1], stages[2] + 1.0])
    assert d.shape == (1, 6, 8, 8) and z.shape == (1, 2, 8, 8)
    assert torch.equal(d, d0)  # the stride-2 stage is not read
    assert not torch.allclose(d, d2)  # the deepest stage is


def test_decoder_with_no_stage_at_reduction_four_reads_all() -> None:
    decoder = FPNDecoder((8, 8), (16, 16), channels=4, num_classes=3)
    assert decoder.used == (0, 1) and decoder.reduction == 16


def test_decoder_matches_a_float64_loop() -> None:
    """z = W_cls ReLU(BN(conv3x3(W_1 f_1 + up(W_2 f_2)))), checked pixel by pixel.

    f_2 is spatially constant, so its bilinear upsampling is that constant everywhere.
    """
    torch.manual_seed(0)
    decoder = FPNDecoder((2, 3), (4, 8), channels=3, num_classes=2).double().eval()
    decoder.requires_grad_(False)
    bn = decoder.smooth[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    f1 = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    deep = torch.randn(3, dtype=torch.float64)
    f2 = deep[None, :, None, None].expand(1, 3, 2, 2)
    with torch.no_grad():
        d, z = decoder([f1, f2])
    w1, b1 = decoder.lateral[0].weight[:, :, 0, 0], decoder.lateral[0].bias
    w2, b2 = decoder.lateral[1].weight[:, :, 0, 0], decoder.lateral[1].bias
    conv_w = decoder.smooth[0].weight
    cls_w, cls_b = decoder.classifier.weight[:, :, 0, 0], decoder.classifier.bias
    hh, ww = f1.shape[-2:]
    top = [float(sum(w2[o, c] * deep[c] for c in range(3)) + b2[o]) for o in range(3)]
    y = [
        [
            [
                float(sum(w1[o, c] * f1[0, c, i, j] for c in range(2)) + b1[o]) + top[o]
                for j in range(ww)
            ]
            for i in range(hh)
        ]
        for o in range(3)
    ]
    for i in range(hh):
        for j in range(ww):
            feat = []
            for o in range(3):
                acc = 0.0
                for c in range(3):
                    for di in (-1, 0, 1):
                        for dj in (-1, 0, 1):
                            if 0 <= i + di < hh and 0 <= j + dj < ww:
                                acc += float(conv_w[o, c, di + 1, dj + 1]) * y[c][i + di][j + dj]
                scale = float(bn.weight[o]) / (float(bn.running_var[o]) + bn.eps) ** 0.5
                feat.append(max(0.0, (acc - float(bn.running_mean[o])) * scale + float(bn.bias[o])))
            logits = [
                sum(float(cls_w[k, o]) * feat[o] for o in range(3)) + float(cls_b[k])
                for k in range(2)
            ]
            assert d[0, :, i, j].tolist() == pytest.approx(feat, rel=1e-9, abs=1e-12)
            assert z[0, :, i, j].tolist() == pytest.approx(logits, rel=1e-9, abs=1e-12)
