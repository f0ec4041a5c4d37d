"""The suite side of imported teachers (:mod:`kdbench.config.imported`): the keys checked in one
line, one imported teacher for every seed, the checkpoint's hash in its id (also through the
resolved-suite cache), and the deep-stem backbones CIRKD's checkpoints need."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from kdbench.config import KINDS, is_teacher, load_suite
from kdbench.config.imported import IMPORTED
from kdbench.errors import KdbenchError
from kdbench.models.backbone import build_backbone
from kdbench.suite_cache import load_suite_cached
from kdbench.train.run import executor
from tests.suites import tiny


def _write(folder: Path, seeds: list[int] | None = None, **teacher: Any) -> Path:
    path = folder / "suite.yaml"
    teacher = {"backbone": "test_resnet", "checkpoint": "w.pt", **teacher}
    path.write_text(yaml.safe_dump(tiny(name="imp", seeds=seeds or [0], teacher=teacher)))
    return path


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    torch.save({"w": torch.arange(4.0)}, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def test_the_kind_is_a_teacher_with_its_own_executor() -> None:
    assert KINDS[IMPORTED] == "teacher" and is_teacher(IMPORTED) and is_teacher("teacher")
    assert not is_teacher("student") and not is_teacher("trial")
    assert executor(IMPORTED).__name__ == "evaluate_imported"


def test_one_imported_teacher_for_every_seed_with_the_files_hash(
    weights: Path, tmp_path: Path
) -> None:
    suite = load_suite(_write(tmp_path, seeds=[0, 1, 2]))
    [teacher] = suite.teachers
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert teacher.model["checkpoint"] == {"path": str(weights.resolve()), "format": "kdbench",
                                           "sha256": sha}
    assert teacher.seed == 0 and teacher.train == {
        "steps": 0, "batch_size": 4, "amp": "off", "channels_last": None, "workers": None}
    kd = [s for s in suite.students if s.method == "kd"]
    assert sorted(s.seed for s in kd) == [0, 1, 2]
    assert {s.teacher_id for s in kd} == {teacher.id}
    recipe = load_suite(_write(tmp_path, train={"steps": 50}))  # the teacher recipe: no move
    assert recipe.teachers[0].id == teacher.id


@pytest.mark.parametrize("keys,message", [
    ({"format": "mmseg"}, r"teacher\.format: unknown format 'mmseg'; expected one of kdbench, "
                          r"torchvision, cirkd"),
    ({"backbone": None}, r"teacher\.checkpoint: expected teacher\.backbone too"),
    ({"pretrained": "x.pt"}, r"teacher\.pretrained: not used with teacher\.checkpoint"),
    ({"checkpoint": "nope.pt"}, r"teacher\.checkpoint: no such file '.*nope\.pt'; expected a "
                                r"teacher checkpoint"),
])
def test_a_wrong_teacher_section_is_one_line(
    weights: Path, tmp_path: Path, keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(KdbenchError, match=message) as caught:
        load_suite(_write(tmp_path, **keys))
    assert "\n" not in str(caught.value)


def test_a_changed_file_misses_the_resolved_suite_cache(weights: Path, tmp_path: Path) -> None:
    path = _write(tmp_path)
    first = load_suite_cached(path).teachers[0].id
    assert load_suite_cached(path).teachers[0].id == first
    torch.save({"w": torch.arange(5.0)}, weights)
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime
    assert load_suite_cached(path).teachers[0].id != first


def test_the_deep_stem_resnets_are_64_64_128_and_have_no_hub_weights() -> None:
    body = build_backbone("resnet18s")
    shapes = [tuple(body.state_dict()[f"conv1.{i}.weight"].shape) for i in (0, 3, 6)]
    assert shapes == [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3)]
    assert body.feature_info.channels() == [128, 64, 128, 256, 512]
    with pytest.raises(KdbenchError, match="'resnet34s': timm has no default weights"):
        build_backbone("resnet34s", pretrained=True)
