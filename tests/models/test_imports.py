"""Importing published checkpoints: torchvision's and CIRKD's DeepLabV3 give the same logits in
kdbench."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.errors import KdbenchError
from kdbench.models.imports import FORMATS, import_checkpoint, rename
from kdbench.registry import TEACHERS

K = 5


def _randomise_batch_norm(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    segmentation = pytest.importorskip("torchvision.models.segmentation")
    torch.manual_seed(0)
    model = segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=K, aux_loss=True
    )
    _randomise_batch_norm(model, 1)
    path = tmp_path_factory.mktemp("tv") / "deeplabv3.pth"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def _kdbench_teacher(aux: float = 0.4) -> torch.nn.Module:
    return TEACHERS.get("rgb")(
        "resnet50",
        K,
        3,
        decoder_channels=256,
        head="deeplabv3",
        head_options={"output_stride": 8, "aux": aux},
    )


@pytest.mark.slow
def test_torchvision_deeplabv3_gives_the_same_logits(torchvision_file) -> None:
    """The architecture of deeplabv3_resnet101 with resnet50's depth, to keep the test small."""
    path, reference = torchvision_file
    teacher = _kdbench_teacher()
    import_checkpoint(teacher, path, "torchvision")
    teacher.eval()
    image = torch.randn(2, 3, 72, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = reference(image)["out"]
        logits = teacher(image).logits
        got = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    with torch.no_grad():  # the aux head reads layer3 as torchvision's aux classifier does
        aux_want = reference.aux_classifier(reference.backbone(image)["aux"])
        aux_got = teacher.aux(teacher.encoder(image)[teacher.aux_stage])
    assert (aux_got - aux_want).abs().max() <= 1e-5 * aux_want.abs().max()


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(torchvision_file) -> None:
    path, _ = torchvision_file
    with pytest.raises(KdbenchError, match=r"deeplabv3\.pth.*aux\.body"):
        import_checkpoint(_kdbench_teacher(aux=0.0), path, "torchvision")


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with pytest.raises(KdbenchError, match="unknown format.*kdbench, torchvision"):
        import_checkpoint(model, tmp_path / "x.pth", "mmseg")
    with pytest.raises(KdbenchError, match="x.pth.*no such file"):
        import_checkpoint(model, tmp_path / "x.pth", "kdbench")


def test_kdbench_format_round_trip_and_shape_check(tmp_path: Path) -> None:
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    import_checkpoint(target, tmp_path / "w.pth", "kdbench")
    assert torch.equal(target.weight, source.weight)
    with pytest.raises(KdbenchError, match=r"'weight' has shape \(2, 3\).*\(4, 3\)"):
        import_checkpoint(torch.nn.Linear(3, 4), tmp_path / "w.pth", "kdbench")


def test_rules_rename_the_first_matching_prefix() -> None:
    rules = FORMATS["torchvision"]
    assert rename("classifier.0.convs.4.1.weight", rules) == "decoder.pool.0.weight"
    assert rename("classifier.4.bias", rules) == "decoder.head.classifier.bias"
    assert rename("backbone.layer4.2.conv3.weight", rules) == "encoder.body.layer4.2.conv3.weight"
    assert rename("something.else", rules) is None


class _CirkdBlock(nn.Module):
    """A residual block with CIRKD's parameter names: BasicBlockV1b (conv1, bn1, conv2, bn2)
    or, with ``bottleneck``, BottleneckV1b (a 1x1 conv3/bn3 after, 4x expansion); ``downsample``
    = Sequential(1x1 conv, BN) where the shape changes."""

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, previous: int,
                 bottleneck: bool) -> None:
        super().__init__()
        self.bottleneck, cout = bottleneck, planes * (4 if bottleneck else 1)
        if bottleneck:  # 1x1, 3x3 (stride, dilation), 1x1
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
            self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
        else:  # 3x3 at ``dilation`` (stride), then 3x3 at the ``previous`` dilation
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, dilation, dilation, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, previous, previous, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.bottleneck:
            out = self.bn3(self.conv3(F.relu(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, 1, pad, dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class _CirkdDeepLabV3(nn.Module):
    """A DeepLabV3 with the parameter layout of CIRKD's (see the test's docstring)."""

    def __init__(self, layers: tuple[int, ...], bottleneck: bool, k: int, width: int) -> None:
        super().__init__()
        stem = nn.Module()
        for i, (cin, cout) in enumerate(((3, 64), (64, 64), (64, 128)), start=1):
            setattr(stem, f"conv{i}", nn.Conv2d(cin, cout, 3, 2 if i == 1 else 1, 1, bias=False))
            setattr(stem, f"bn{i}", nn.BatchNorm2d(cout))
        cin = 128
        # (planes, stride, dilation of the stage); the first block runs at the previous one
        for i, (planes, stride, dilation) in enumerate(((64, 1, 1), (128, 2, 1), (256, 1, 2),
                                                        (512, 1, 4)), start=1):
            first = {1: 1, 2: 1, 4: 2}[dilation]
            blocks = [_CirkdBlock(cin, planes, stride, first, dilation, bottleneck)]
            cin = planes * (4 if bottleneck else 1)
            blocks += [_CirkdBlock(cin, planes, 1, dilation, dilation, bottleneck)
                       for _ in range(layers[i - 1] - 1)]
            setattr(stem, f"layer{i}", nn.Sequential(*blocks))
        self.pretrained = stem
        self.head, aspp = nn.Module(), nn.Module()
        aspp.b0 = _conv_bn_relu(cin, width)
        for j, rate in enumerate((12, 24, 36), start=1):
            branch = nn.Module()
            branch.block = _conv_bn_relu(cin, width, 3, rate)
            setattr(aspp, f"b{j}", branch)
        aspp.b4 = nn.Module()
        aspp.b4.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, width))
        aspp.project = nn.Sequential(*_conv_bn_relu(5 * width, width), nn.Dropout(0.5))
        self.head.aspp = aspp
        self.head.block = nn.Sequential(*_conv_bn_relu(width, width, 3), nn.Dropout(0.1),
                                        nn.Conv2d(width, k, 1))
        self.auxlayer = nn.Module()
        aux_in = cin // 2
        self.auxlayer.block = nn.Sequential(*_conv_bn_relu(aux_in, aux_in // 4, 3),
                                            nn.Dropout(0.1), nn.Conv2d(aux_in // 4, k, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits at 1/8, aux logits on layer3), as CIRKD's forward returns them (no
        upsampling to the input)."""
        p = self.pretrained
        for i in (1, 2, 3):
            x = F.relu(getattr(p, f"bn{i}")(getattr(p, f"conv{i}")(x)))
        c3 = p.layer3(p.layer2(p.layer1(F.max_pool2d(x, 3, 2, 1))))
        c4 = p.layer4(c3)
        a = self.head.aspp
        pooled = a.b4.gap(c4).expand(-1, -1, *c4.shape[-2:])  # bilinear from 1x1 = broadcast
        parts = [a.b0(c4), a.b1.block(c4), a.b2.block(c4), a.b3.block(c4), pooled]
        z = self.head.block(a.project(torch.cat(parts, 1)))
        return z, self.auxlayer.block(c3)


@pytest.mark.parametrize(
    "backbone,layers,bottleneck",
    [("resnet18s", (2, 2, 2, 2), False),
     pytest.param("resnet50s", (3, 4, 6, 3), True, marks=pytest.mark.slow)],
)
def test_cirkd_deeplabv3_gives_the_same_logits(
    tmp_path: Path, backbone: str, layers: tuple[int, ...], bottleneck: bool
) -> None:
    """CIRKD's DeepLabV3 checkpoint layout, imported with format ``cirkd``, gives its logits.

    What we read in CIRKD (winycg/CIRKD, ``models/segbase.py``, ``models/deeplabv3.py``,
    ``models/base_models/resnetv1b.py``) and rebuilt here (``_CirkdDeepLabV3``, our code):
    its backbones ``resnet18``/``resnet50``/``resnet101`` are ResNet-v1s under the attribute
    ``pretrained``: a deep stem (``conv1`` 3x3 3→64 stride 2, ``conv2`` 64→64, ``conv3`` 64→128,
    each followed by ``bn{i}`` and ReLU, then a 3x3 max pool), ``layer1..4`` of BasicBlockV1b
    (R18) or BottleneckV1b (R50/101) blocks, dilated (``dilated=True``): layer3 and layer4 keep
    stride 1 at dilation 2 and 4, the first block of each at the previous dilation (1, then 2;
    a basic block's second conv at the stage's), the downsample a 1x1 conv and BN. The head
    ``head.aspp`` has ``b0`` (1x1), ``b1..b3.block`` (3x3 at rates 12, 24, 36), ``b4.gap``
    (pool, 1x1, BN, ReLU, bilinearly upsampled from 1x1, i.e. broadcast), ``project`` (1x1 over
    the 5 branches, BN, ReLU, Dropout 0.5), all 512 wide for R18 and R101 alike, then
    ``head.block`` (3x3, BN, ReLU, Dropout 0.1, 1x1 classifier); ``auxlayer.block`` is an FCN
    head on layer3 (3x3 to 1/4 of its channels, BN, ReLU, Dropout 0.1, 1x1). Its forward
    returns the logits at 1/8 of the input and the aux logits, not upsampled.

    R18 at CIRKD's widths; the R101 layout is tested with R50's depth (the same blocks, fewer
    of them in layer3) and a 128-wide head to keep the test small."""
    torch.manual_seed(3)
    width = 512 if backbone == "resnet18s" else 128
    reference = _CirkdDeepLabV3(layers, bottleneck, K, width)
    _randomise_batch_norm(reference, 4)
    path = tmp_path / "cirkd.pth"
    torch.save(reference.state_dict(), path)
    teacher = TEACHERS.get("rgb")(
        backbone, K, 3, decoder_channels=width, head="deeplabv3",
        head_options={"output_stride": 8, "aux": 0.4},
    )
    import_checkpoint(teacher, path, "cirkd")
    reference.eval(), teacher.eval()
    image = torch.randn(2, 3, 72, 88, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, aux_want = reference(image)
        got = teacher(image).logits
        aux_got = teacher.aux(teacher.encoder(image)[teacher.aux_stage])
    assert got.shape == want.shape == (2, K, 9, 11)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert (aux_got - aux_want).abs().max() <= 1e-5 * aux_want.abs().max()
