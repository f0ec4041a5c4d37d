r"""CMX: cross-modal feature rectification and fusion at every encoder stage.

Zhang, Liu, Yang, Hu, Stiefelhagen, "CMX: Cross-Modal Fusion for RGB-X Semantic Segmentation
with Transformers", IEEE T-ITS 2023 (arXiv 2203.04838). Two encoders, one per modality, run
stage by stage; after each stage a Feature Rectification Module (FRM) corrects each modality's
feature with the other's (channel-wise and spatial-wise), the rectified features feed the next
stage of their own stream, and a Feature Fusion Module (FFM) merges the pair into the stage
feature the decoder reads. This file writes the paper's definitions (its Sec. III-B and III-C);
where the paper leaves a constant open, the choice is stated where it is made.

With both backbones of one architecture the two streams have equal widths, which the FRM's
element-wise exchange needs: an ``x_backbone`` of other stage channels is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import KdbenchError
from kdbench.models.teacher import DuplexEncoderTeacher
from kdbench.registry import register_teacher

__all__ = ["CMXTeacher", "CrossAttention", "FeatureFusion", "FeatureRectification"]


class FeatureRectification(nn.Module):
    r"""FRM: rectify each modality's stage feature with the other's (CMX, Sec. III-B).

    With r, x (N, C, H, W):

        v   = [avg(r); avg(x); max(r); max(x)]                 global pools, (N, 4C)
        w_C = sigmoid(MLP(v))  split into  w_C^R, w_C^X        (N, C) each; MLP 4C -> 4C/k -> 2C
        w_S = sigmoid(conv(ReLU(conv([r; x]))))  -> w_S^R, w_S^X  (N, 1, H, W) each; 1x1 convs
                                                                2C -> 2C/k -> 2
        r' = r + λ_C · w_C^X ⊙ x + λ_S · w_S^X ⊙ x
        x' = x + λ_C · w_C^R ⊙ r + λ_S · w_S^R ⊙ r

    λ_C = λ_S = 0.5 and the reduction k = 1 as in the paper's experiments. With λ_C = λ_S = 0 the
    module is the identity (a test).
    """

    def __init__(
        self, channels: int, reduction: int = 1, lambda_c: float = 0.5, lambda_s: float = 0.5
    ) -> None:
        super().__init__()
        hidden = max(1, 4 * channels // reduction)
        self.channel_mlp = nn.Sequential(
            nn.Linear(4 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * channels)
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(2 * channels, max(1, 2 * channels // reduction), kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(max(1, 2 * channels // reduction), 2, kernel_size=1),
        )
        self.lambda_c, self.lambda_s = lambda_c, lambda_s

    def forward(self, r: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(r, x) each (N, C, H, W) -> the rectified (r', x') of the class docstring."""
        n, c = r.shape[:2]
        pooled = torch.cat([r.mean((2, 3)), x.mean((2, 3)), r.amax((2, 3)), x.amax((2, 3))], dim=1)
        w_c = torch.sigmoid(self.channel_mlp(pooled)).view(n, 2, c, 1, 1)
        w_s = torch.sigmoid(self.spatial(torch.cat([r, x], dim=1))).unsqueeze(2)
        r_out = r + self.lambda_c * w_c[:, 1] * x + self.lambda_s * w_s[:, 1] * x
        x_out = x + self.lambda_c * w_c[:, 0] * r + self.lambda_s * w_s[:, 0] * r
        return r_out, x_out


def attention_heads(channels: int) -> int:
    """Heads of a stage's cross-attention: the most of 8, 4, 2 that leave ≥ 32 channels a head
    and divide the width (CMX's MiT stages use 1, 2, 5, 8 heads at 64 channels a head)."""
    return next((h for h in (8, 4, 2) if channels % h == 0 and channels // h >= 32), 1)


class CrossAttention(nn.Module):
    r"""Efficient cross-attention through global context matrices (CMX, Sec. III-C).

    For tokens u^R, u^X (N, L, C) and each of h heads of d = C / h channels, per modality m:
    Q_m = u^m W_Q^m, K_m = u^m W_K^m, V_m = u^m W_V^m (L, d), the context

        G_m = softmax_rows(K_mᵀ V_m / √d)                   (d, d), softmax over the K index

    and each modality queries the other's context: U^R = Q_R G_X, U^X = Q_X G_R (L, d), heads
    concatenated. The cost is O(L·d²), linear in the number of pixels L (no L×L matrix). The
    scale 1/√d is this project's choice (the paper leaves it open); it keeps the softmax out of
    saturation for wide stages.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.ModuleList(nn.Linear(channels, channels, bias=False) for _ in range(2))
        self.key_value = nn.ModuleList(
            nn.Linear(channels, 2 * channels, bias=False) for _ in range(2)
        )

    def _split(self, t: Tensor) -> Tensor:
        n, length, c = t.shape
        return t.view(n, length, self.heads, c // self.heads).transpose(1, 2)  # (N, h, L, d)

    def _context(self, m: int, u: Tensor) -> Tensor:
        k, v = (self._split(t) for t in self.key_value[m](u).chunk(2, dim=-1))
        return (k.transpose(-2, -1) @ v * k.shape[-1] ** -0.5).softmax(dim=-2)  # (N, h, d, d)

    def forward(self, u_r: Tensor, u_x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, L, C) tokens of both modalities -> (U^R, U^X), each (N, L, C)."""
        g_r, g_x = self._context(0, u_r), self._context(1, u_x)
        q_r, q_x = self._split(self.query[0](u_r)), self._split(self.query[1](u_x))
        n, length, c = u_r.shape
        merge = lambda t: t.transpose(1, 2).reshape(n, length, c)  # noqa: E731
        return merge(q_r @ g_x), merge(q_x @ g_r)


class FeatureFusion(nn.Module):
    r"""FFM: exchange information between the rectified pair, then merge it (CMX, Sec. III-C).

    Stage 1, information exchange, on the flattened tokens t^m (N, H·W, C) of each modality:

        [y^m; u^m] = ReLU(t^m W_E^m)                  residual and interaction vectors, C each
        (U^R, U^X) = CrossAttention(u^R, u^X)
        s^m        = LayerNorm(t^m + [y^m; U^m] W_O^m)   (N, H·W, C)

    Stage 2, fusion, on the maps s = [s^R; s^X] (N, 2C, H, W) (the channel embedding):

        f = BN(P s + W_3 ReLU(D_3x3(W_1 s)))          P, W_1: 1x1 2C -> C; D: depth-wise 3x3;
                                                       W_3: 1x1 C -> C
    """

    def __init__(self, channels: int, heads: int | None = None) -> None:
        super().__init__()
        c = channels
        self.embed = nn.ModuleList(nn.Linear(c, 2 * c) for _ in range(2))
        self.attention = CrossAttention(c, heads or attention_heads(c))
        self.out = nn.ModuleList(nn.Linear(2 * c, c) for _ in range(2))
        self.token_norm = nn.ModuleList(nn.LayerNorm(c) for _ in range(2))
        self.residual = nn.Conv2d(2 * c, c, kernel_size=1, bias=False)
        self.channel_embed = nn.Sequential(
            nn.Conv2d(2 * c, c, kernel_size=1, bias=False),
            nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, kernel_size=1, bias=False),
        )
        self.norm = nn.BatchNorm2d(c)

    def forward(self, r: Tensor, x: Tensor) -> Tensor:
        """(r, x) each (N, C, H, W) -> the fused stage feature f (N, C, H, W)."""
        n, c, h, w = r.shape
        tokens = [t.flatten(2).transpose(1, 2) for t in (r, x)]  # (N, H·W, C)
        pairs = [
            F.relu(embed(t)).chunk(2, dim=-1) for embed, t in zip(self.embed, tokens, strict=True)
        ]
        exchanged = self.attention(pairs[0][1], pairs[1][1])
        maps = [
            norm(t + out(torch.cat([y_u[0], u], dim=-1))).transpose(1, 2).reshape(n, c, h, w)
            for norm, out, t, y_u, u in zip(
                self.token_norm, self.out, tokens, pairs, exchanged, strict=True
            )
        ]
        s = torch.cat(maps, dim=1)
        return self.norm(self.residual(s) + self.channel_embed(s))


@register_teacher("cmx", "duplex RGB-X encoder with CMX's rectification and fusion at every stage")
class CMXTeacher(DuplexEncoderTeacher):
    r"""CMX: two encoders exchanging rectified features at every stage, decoder on the fusions.

    With E^R_i, E^X_i the i-th stages of the two encoders, FRM_i and FFM_i of stage i:

        r_0 = rgb, q_0 = x
        (r_i, q_i) = FRM_i(E^R_i(r_{i-1}), E^X_i(q_{i-1}))     rectified, fed to stage i + 1
        f_i        = FFM_i(r_i, q_i)                            the decoder's stage i

    as CMX runs its two streams. When a backbone cannot be run stage by stage (``feedback`` is
    False: timm's hook-based feature wrappers), the encoders run whole and each stage pair is
    rectified and fused without feeding the rectified features forward. ``Outputs.stages`` are
    the f_i (the teacher taps); the constructor, the head and the forward pass are
    :class:`~kdbench.models.teacher.DuplexEncoderTeacher`'s.
    """

    def build_fusion(self) -> None:
        """An FRM and an FFM per stage; both streams must have equal stage widths."""
        rgb, xe = self.rgb_encoder.channels, self.x_encoder.channels
        if rgb != xe:
            raise KdbenchError(
                f"teacher 'cmx': the X branch has stage channels {xe} but the RGB branch {rgb}; "
                "CMX exchanges features element-wise: use an x_backbone of the same widths"
            )
        self.rectify = nn.ModuleList(FeatureRectification(c) for c in rgb)
        self.fuse = nn.ModuleList(FeatureFusion(c) for c in rgb)

    def encode(self, rgb: Tensor, x: Tensor) -> tuple[Tensor, ...]:
        """The fused stage features f_i, shallow to deep (maths in the class docstring)."""
        if not self.feedback:
            pairs = zip(self.rgb_encoder(rgb), self.x_encoder(x), strict=True)
            return tuple(
                fuse(*rectify(r, q))
                for rectify, fuse, (r, q) in zip(self.rectify, self.fuse, pairs, strict=True)
            )
        fused: list[Tensor] = []
        r, q = rgb, x
        for i, (rectify, fuse) in enumerate(zip(self.rectify, self.fuse, strict=True)):
            r, q = rectify(self.rgb_encoder.step(i, r), self.x_encoder.step(i, q))
            fused.append(fuse(r, q))
        return tuple(fused)
