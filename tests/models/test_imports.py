"""Importing published checkpoints: torchvision's DeepLabV3 gives the same logits in kdbench."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

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
