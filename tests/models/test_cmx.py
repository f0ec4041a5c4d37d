"""CMX teacher: FRM and FFM against their definitions, feedback, shapes, gradients, x-dependence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.models.cmx import (
    CMXTeacher,
    CrossAttention,
    FeatureFusion,
    FeatureRectification,
    attention_heads,
)
from kdbench.registry import TEACHERS

N, H, W, K, CX = 2, 32, 64, 4, 2


def _teacher(backbone: str = "test_resnet", **kwargs) -> CMXTeacher:
    torch.manual_seed(0)
    return TEACHERS.get("cmx")(backbone, K, CX, decoder_channels=16, **kwargs)


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 3, H, W, generator=g), torch.randn(N, CX, H, W, generator=g)


def _maps(c: int, h: int = 3, w: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (2, c, h, w)
    return (
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    )


def test_registered_and_listed() -> None:
    assert TEACHERS.get("cmx") is CMXTeacher
    assert "cmx" in TEACHERS.names()


def test_rectification_against_its_formula() -> None:
    """r' = r + λ_C w_C^X x + λ_S w_S^X x (and symmetrically), weights computed by hand."""
    torch.manual_seed(0)
    frm = FeatureRectification(3).double()
    r, x = _maps(3)
    got_r, got_x = frm(r, x)
    lin1, lin2 = frm.channel_mlp[0], frm.channel_mlp[2]
    conv1, conv2 = frm.spatial[0], frm.spatial[2]
    for i in range(2):
        v = torch.cat([r[i].mean((1, 2)), x[i].mean((1, 2)), r[i].amax((1, 2)), x[i].amax((1, 2))])
        wc = torch.sigmoid(lin2.weight @ torch.relu(lin1.weight @ v + lin1.bias) + lin2.bias)
        joint = torch.cat([r[i], x[i]]).flatten(1)  # (2C, H·W)
        hidden = torch.relu(conv1.weight[:, :, 0, 0] @ joint + conv1.bias[:, None])
        ws = torch.sigmoid(conv2.weight[:, :, 0, 0] @ hidden + conv2.bias[:, None]).view(2, 3, 5)
        want_r = r[i] + 0.5 * wc[3:, None, None] * x[i] + 0.5 * ws[1] * x[i]
        want_x = x[i] + 0.5 * wc[:3, None, None] * r[i] + 0.5 * ws[0] * r[i]
        torch.testing.assert_close(got_r[i], want_r, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_x[i], want_x, rtol=1e-12, atol=1e-12)


def test_rectification_without_exchange_is_the_identity() -> None:
    frm = FeatureRectification(4, lambda_c=0.0, lambda_s=0.0).double()
    r, x = _maps(4)
    out_r, out_x = frm(r, x)
    assert torch.equal(out_r, r) and torch.equal(out_x, x)


def test_cross_attention_equals_the_explicit_per_head_product() -> None:
    """U^R = Q_R softmax_rows(K_Xᵀ V_X / √d) per head, computed head by head."""
    torch.manual_seed(0)
    attention = CrossAttention(8, heads=2).double()
    g = torch.Generator().manual_seed(3)
    u_r = torch.randn(2, 7, 8, generator=g, dtype=torch.float64)
    u_x = torch.randn(2, 7, 8, generator=g, dtype=torch.float64)
    got_r, got_x = attention(u_r, u_x)
    for m, (u_own, u_other, got) in enumerate([(u_r, u_x, got_r), (u_x, u_r, got_x)]):
        q = u_own @ attention.query[m].weight.T
        k, v = (u_other @ attention.key_value[1 - m].weight.T).chunk(2, dim=-1)
        for head in range(2):
            cols = slice(4 * head, 4 * head + 4)
            context = torch.softmax(k[..., cols].transpose(1, 2) @ v[..., cols] / 2.0, dim=1)
            torch.testing.assert_close(got[..., cols], q[..., cols] @ context, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("channels", "heads"), [(16, 1), (64, 2), (96, 2), (256, 8), (320, 8)])
def test_heads_divide_the_width(channels: int, heads: int) -> None:
    assert attention_heads(channels) == heads and channels % heads == 0


def test_fusion_shape_and_symmetry_of_roles() -> None:
    torch.manual_seed(0)
    ffm = FeatureFusion(8).double().eval()
    r, x = _maps(8, 4, 6)
    f = ffm(r, x)
    assert f.shape == r.shape
    assert not torch.allclose(f, ffm(r, torch.zeros_like(x)))  # the fusion reads both sides


@pytest.mark.parametrize("backbone", ["test_resnet", "mobilenetv3_small_050", "test_vit"])
def test_output_shapes_match_tap_info(backbone: str) -> None:
    model = _teacher(backbone)
    info = model.tap_info
    out = model(*_inputs())
    r = info.logit_reduction
    assert out.logits.shape == (N, K, H // r, W // r)
    assert out.decoder.shape == (N, info.decoder_channels, H // r, W // r)
    for f, c, s in zip(out.stages, info.stage_channels, info.stage_reductions, strict=True):
        assert f.shape == (N, c, H // s, W // s)


def test_rectified_features_feed_both_streams() -> None:
    model = _teacher().eval()
    assert model.feedback
    rgb, x = _inputs()
    with torch.no_grad():
        stages = model.encode(rgb, x)
        r0, q0 = model.rectify[0](model.rgb_encoder.step(0, rgb), model.x_encoder.step(0, x))
        r1, q1 = model.rectify[1](model.rgb_encoder.step(1, r0), model.x_encoder.step(1, q0))
    torch.testing.assert_close(stages[0], model.fuse[0](r0, q0))
    torch.testing.assert_close(stages[1], model.fuse[1](r1, q1))


def test_logits_depend_on_x_and_gradients_reach_every_module() -> None:
    model = _teacher()
    rgb, x = _inputs()
    model.eval()
    with torch.no_grad():
        a = model(rgb, x).logits
        b = model(rgb, x + torch.randn_like(x)).logits
    assert not torch.allclose(a, b)
    model.train()
    model(rgb, x).logits.square().mean().backward()
    for name, part in [("rgb", model.rgb_encoder), ("x", model.x_encoder)]:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), name
    # every FRM feeds the next stage; the FFMs of the stages the decoder reads (the deepest
    # always) get a gradient, as the fused maps are the decoder's input
    for i, part in [*enumerate(model.rectify), (len(model.fuse) - 1, model.fuse[-1])]:
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), i
        assert sum(float(g.abs().sum()) for g in grads) > 0, i


def test_branches_of_unequal_width_are_refused() -> None:
    with pytest.raises(KdbenchError, match="cmx.*same widths"):
        _teacher(x_backbone="test_efficientnet")


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cmx_adds_parameters_to_the_same_encoders() -> None:
    cmx, gated = _teacher(), TEACHERS.get("intermediate")("test_resnet", K, CX, decoder_channels=16)
    encoders = _n_params(gated.rgb_encoder) + _n_params(gated.x_encoder)
    assert _n_params(cmx.rgb_encoder) + _n_params(cmx.x_encoder) == encoders
    assert _n_params(cmx) > _n_params(gated)
