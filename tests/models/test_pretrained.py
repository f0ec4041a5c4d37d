"""Pretrained encoders: local state dicts and safetensors change the initial weights, the X
branch adapts the first convolution, and ``pretrained: true`` without a hub stops in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kdbench.errors import KdbenchError
from kdbench.models.backbone import adapt_first_conv, build_backbone
from kdbench.models.student import Segmenter
from kdbench.registry import TEACHERS


def saved_weights(tmp_path: Path, kind: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A test_resnet classifier's weights (other seed than the models below) as ``kind``."""
    import timm

    torch.manual_seed(123)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    path = tmp_path / f"weights.{kind}"
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path, state


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_a_local_file_loads_and_changes_the_initial_weights(tmp_path: Path, kind: str) -> None:
    path, state = saved_weights(tmp_path, kind)
    torch.manual_seed(0)
    fresh = Segmenter("test_resnet", 5).encoder.body.state_dict()
    torch.manual_seed(0)
    loaded = Segmenter("test_resnet", 5, pretrained=str(path)).encoder.body.state_dict()
    assert not torch.equal(fresh["layer1.0.conv1.weight"], loaded["layer1.0.conv1.weight"])
    for key in ("conv1.0.weight", "layer1.0.conv1.weight", "layer4.0.bn2.running_var"):
        assert torch.equal(loaded[key], state[key]), key


def test_the_x_branch_adapts_the_first_conv_even_at_three_channels(tmp_path: Path) -> None:
    """Normals have 3 channels like RGB, but an RGB filter's colour selectivity means nothing
    for them: the X branch takes the mean filter (the RGB branch the filter itself)."""
    path, state = saved_weights(tmp_path, "safetensors")
    teacher = TEACHERS.get("intermediate")("test_resnet", 5, 3, pretrained=str(path))
    w = state["conv1.0.weight"]
    rgb = teacher.rgb_encoder.body.state_dict()["conv1.0.weight"]
    x = teacher.x_encoder.body.state_dict()["conv1.0.weight"]
    assert torch.equal(rgb, w)
    torch.testing.assert_close(x, w.mean(1, keepdim=True).repeat(1, 3, 1, 1))
    deeper = teacher.x_encoder.body.state_dict()["layer2.0.conv1.weight"]
    assert torch.equal(deeper, state["layer2.0.conv1.weight"])


def test_adapt_first_conv_keeps_the_response_to_a_constant_input() -> None:
    w = torch.randn(8, 3, 3, 3)
    for channels in (1, 2, 3, 4):
        adapted = adapt_first_conv(w, channels)
        assert adapted.shape == (8, channels, 3, 3)
        torch.testing.assert_close(adapted.sum(1), w.sum(1))


def test_pretrained_true_without_a_hub_stops_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(KdbenchError) as err:
        build_backbone("resnet18", pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert "pretrained: true could not fetch timm's default weights" in message
    assert "pretrained: /path/to/weights.safetensors" in message


def test_a_run_with_pretrained_true_and_no_hub_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants
    import yaml

    from kdbench.config import load_suite
    from kdbench.results.store import RunStore
    from kdbench.train.run import train_run

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "hub", "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 4,
                                                   "eval_samples": 2}},
        "students": ["resnet18"], "methods": ["none"],
        "teacher": {"kind": "rgb", "pretrained": True}, "train": {"steps": 2, "batch_size": 2},
    }))
    (teacher,) = load_suite(path).teachers
    record = train_run(teacher, tmp_path / "results")
    assert record["status"] == "failed"
    assert "pretrained: /path/to/weights.safetensors" in record["error"]
    assert not RunStore(tmp_path / "results").history_path(teacher.id).exists()
    assert not RunStore(tmp_path / "results").checkpoint_path(teacher.id).exists()
