"""Backbones: names, stepping stage by stage, local weights files and their errors."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import kdbench.models
from kdbench.errors import KdbenchError
from kdbench.models.backbone import Encoder, build_backbone, describe_backbones


def _seeded(name: str, seed: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone(name, **kwargs)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_unknown_backbone_message() -> None:
    expected = (
        "unknown backbone 'no_such_net': not a timm model name (see `kdbench list backbones`)"
    )
    with pytest.raises(KdbenchError, match=f"^{re.escape(expected)}$"):
        build_backbone("no_such_net")


@pytest.mark.parametrize(
    "name", ["test_resnet", "test_convnext", "mobilenetv3_small_050", "test_efficientnet"]
)
def test_features_match_feature_info_and_stepping_reproduces_forward(name: str) -> None:
    torch.manual_seed(0)
    encoder = Encoder(name, in_chans=2).eval()
    x = torch.randn(2, 2, 64, 96)
    with torch.no_grad():
        features = encoder(x)
        h, stepped = x, []
        for i in range(len(encoder.channels)):
            h = encoder.step(i, h)
            stepped.append(h)
    assert encoder.steppable
    assert len(features) == len(encoder.channels) == len(encoder.reductions)
    for f, g, c, r in zip(features, stepped, encoder.channels, encoder.reductions, strict=True):
        assert f.shape == (2, c, 64 // r, 96 // r)
        assert torch.equal(f, g)


def test_hook_based_backbone_is_not_steppable() -> None:
    encoder = Encoder("test_vit")
    assert not encoder.steppable
    with pytest.raises(RuntimeError):
        encoder.step(0, torch.randn(1, 3, 32, 32))


def test_weights_round_trip_plain_and_wrapped(tmp_path: Path) -> None:
    saved = _seeded("test_resnet", 0).state_dict()
    fresh = _seeded("test_resnet", 1).state_dict()
    assert not all(torch.equal(saved[k], fresh[k]) for k in saved)  # the test can fail
    for i, payload in enumerate([saved, {"state_dict": saved}, {"model": saved, "epoch": 3}]):
        path = tmp_path / f"w{i}.pt"
        torch.save(payload, path)
        loaded = _seeded("test_resnet", 1, pretrained=str(path)).state_dict()
        _assert_same_weights(loaded, saved)


def test_weights_of_the_full_classifier_load_into_the_features_model(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    full = timm.create_model("test_convnext", pretrained=False)  # keys stem.0.*, stages.0.*, head
    path = tmp_path / "full.pt"
    torch.save(full.state_dict(), path)
    features = _seeded("test_convnext", 1, pretrained=str(path))
    assert torch.equal(features.stem_0.weight, full.stem[0].weight)
    assert torch.equal(features.stem_1.weight, full.stem[1].weight)
    for i in range(4):
        stage = getattr(features, f"stages_{i}")
        for (k, a), b in zip(
            stage.state_dict().items(), full.stages[i].state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), (i, k)


def test_rgb_weights_into_a_one_channel_model_sum_the_input_conv(tmp_path: Path) -> None:
    saved = _seeded("test_resnet", 0).state_dict()
    path = tmp_path / "rgb.pt"
    torch.save(saved, path)
    one = _seeded("test_resnet", 1, in_chans=1, pretrained=str(path)).state_dict()
    expected = saved["conv1.0.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(one["conv1.0.weight"], expected)
    assert torch.equal(one["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])


def _expect_file_error(path: Path, pattern: str) -> None:
    with pytest.raises(KdbenchError, match=re.escape(str(path)) + ".*" + pattern):
        build_backbone("test_resnet", pretrained=str(path))


def test_weights_file_errors_name_the_file(tmp_path: Path) -> None:
    _expect_file_error(tmp_path / "missing.pt", "no such file")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    _expect_file_error(corrupt, "not a readable")

    truncated = tmp_path / "truncated.pt"
    torch.save(build_backbone("test_resnet").state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    _expect_file_error(truncated, "not a readable")

    unrelated = tmp_path / "unrelated.pt"
    torch.save({"foo.weight": torch.zeros(3)}, unrelated)
    _expect_file_error(unrelated, "no key matches backbone 'test_resnet'")

    not_a_dict = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), not_a_dict)
    _expect_file_error(not_a_dict, "expected a state dict")

    wrong_shapes = tmp_path / "resnet10t.pt"
    torch.save(build_backbone("resnet10t").state_dict(), wrong_shapes)
    _expect_file_error(wrong_shapes, "has shape .* expects")


def test_curated_backbones_build_with_the_listed_parameter_counts() -> None:
    listed = describe_backbones()
    assert len({name for name, _ in listed}) == len(listed)
    for name, text in listed:
        millions = float(re.search(r"\(([\d.]+) M params\)$", text).group(1))
        params = sum(p.numel() for p in build_backbone(name).parameters())
        assert abs(params / 1e6 - millions) <= 0.005, name


def test_no_model_module_imports_timm_at_import_time() -> None:
    """timm is imported inside functions only, so ``kdbench --help`` stays fast."""
    folder = Path(kdbench.models.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module-level statements only
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "timm" for n in names), path.name
