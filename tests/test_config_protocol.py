"""Suite keys of the paper-grade protocol: head, eval, train.crop/jitter/workers, pretrained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdbench.config import load_suite
from kdbench.errors import KdbenchError

BASE = {
    "name": "protocol",
    "datasets": {"synthdrive": {"size": [32, 64]}},
    "students": ["test_resnet"],
    "methods": ["none"],
}


def suite(tmp_path: Path, **changes: object):  # noqa: ANN201
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, **changes}))
    return load_suite(path)


def test_heads_resolve_with_every_default_and_the_teacher_inherits_the_students(
    tmp_path: Path,
) -> None:
    s = suite(tmp_path, head={"deeplabv3": {"output_stride": 8, "aux": 0.4}})
    (student,), (teacher,) = s.students, s.teachers
    assert student.model["head"] == {
        "name": "deeplabv3",
        "options": {
            "output_stride": 8, "aux": 0.4, "aux_stage": -2, "rates": None, "dropout": 0.1
        },
    }
    assert teacher.model["head"] == student.model["head"]
    s = suite(tmp_path, head="mlp", teacher={"head": "pspnet"})
    assert s.students[0].model["head"]["name"] == "mlp"
    assert s.teachers[0].model["head"]["name"] == "pspnet"
    assert suite(tmp_path).students[0].model["head"]["name"] == "fpn"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"head": "unet"}, "head: unknown head 'unet'; known: deeplabv3, fpn, mlp, pspnet"),
        ({"head": {"fpn": {"rates": [1]}}}, "head.fpn: unknown option 'rates'"),
        ({"head": {"deeplabv3": {"output_stride": 4}}},
         "output_stride: expected one of 8, 16, 32 or null, got 4"),
        ({"teacher": {"head": {"mlp": {"aux": -0.1}}}},
         "teacher.head.mlp.aux: expected a number >= 0, got -0.1"),
        ({"eval": {"mode": "slide"}}, "eval.window: required with mode: slide"),
        ({"eval": {"window": [8, 8]}}, "eval.window: only used with mode: slide"),
        ({"eval": {"size": [8, 8], "scale": 0.5}}, "eval: give size or scale, not both"),
        ({"eval": {"size": [8]}}, r"eval.size: expected \[height, width\]"),
        ({"train": {"crop": [0, 8]}}, r"train.crop: expected \[height, width\]"),
        ({"train": {"jitter": 1.5}}, r"train.jitter: expected a value in \[0, 1\)"),
        ({"train": {"workers": -1}}, "train.workers: expected an integer >= 0 or null, got -1"),
        ({"students": [{"test_resnet": {"pretrained": 3}}]}, "pretrained: expected true"),
    ],
)
def test_protocol_mistakes_name_the_key(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(KdbenchError, match=message):
        suite(tmp_path, **changes)


def test_eval_protocol_and_pretrained_resolve_into_the_specs(tmp_path: Path) -> None:
    s = suite(
        tmp_path,
        eval={"mode": "slide", "window": [16, 32], "stride": [8, 16]},
        students=[{"test_resnet": {"pretrained": True}}],
        teacher={"pretrained": False},
    )
    (student,), (teacher,) = s.students, s.teachers
    assert student.eval == teacher.eval == {
        "mode": "slide", "size": None, "scale": None, "window": [16, 32], "stride": [8, 16],
        "batch_size": None, "scales": None, "flip": False,
    }
    assert student.model["pretrained"] is True and teacher.model["pretrained"] is None
    other = suite(tmp_path, eval={"mode": "whole"}).students[0]
    assert other.id != student.id


SUITES = Path(__file__).resolve().parents[1] / "suites"


@pytest.mark.usefixtures("shipped_data_roots")
def test_the_cityscapes_suite_is_cirkds_recipe() -> None:
    from kdbench.train.build import build_model

    s = load_suite(SUITES / "cityscapes.yaml")
    student = next(r for r in s.students if r.method == "cirkd")
    (teacher, *_) = s.teachers
    train = student.train
    assert (train["steps"], train["batch_size"], train["optimizer"], train["lr"]) == (
        40000, 16, "sgd", 0.02)
    assert (train["momentum"], train["weight_decay"], train["schedule"]) == (0.9, 1e-4, "poly")
    assert train["scale"] == [0.5, 2.0] and train["crop"] == [512, 1024] and train["flip"]
    assert student.dataset_options["size"] is None  # native images, native labels
    assert student.eval["mode"] == "whole" and student.eval["size"] is None
    assert student.model["pretrained"] is True and teacher.model["pretrained"] is True
    assert student.model["head"]["name"] == teacher.model["head"]["name"] == "deeplabv3"
    assert student.model["head"]["options"]["aux"] == 0.4
    assert (teacher.model["kind"], teacher.model["backbone"]) == ("rgb", "resnet101")
    model = build_model(student, 19, 1, weights=False)
    assert model.tap_info.logit_reduction == 8 and model.aux is not None
    assert model.aux.body[0].in_channels == 256  # ResNet-18's layer3


@pytest.mark.parametrize("name", ["cityscapes_rgbx", "kitti", "vkitti2"])
@pytest.mark.usefixtures("shipped_data_roots")
def test_the_real_data_suites_train_on_native_crops_and_score_native_labels(name: str) -> None:
    s = load_suite(SUITES / f"{name}.yaml")
    for spec in s.runs:
        assert spec.dataset_options["size"] is None and spec.train["crop"] is not None
        assert spec.train["scale"] == [0.5, 2.0] and spec.eval["mode"] == "whole"
        assert spec.model["pretrained"] is True and spec.model["head"]["name"] == "deeplabv3"
