"""The RGB-X benchmark suites (nyudv2, mfnet, deliver, ade20k, voc): each validates under
``kdbench run --dry-run`` when its data exists (a tiny tree under $KDBENCH_DATA) and stops with
one line when it is missing; a SegFormer-style student (PVTv2-B0, MLP head) trains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.train.build import build_model
from tests.data.rgbx import train_teacher_and_kd
from tests.data.test_ade20k import write_ade20k
from tests.data.test_deliver import write_deliver
from tests.data.test_mfnet import write_mfnet
from tests.data.test_nyudv2 import TEST, write_nyudv2
from tests.data.test_voc import write_voc

SUITES = Path(__file__).parents[2] / "suites"
WRITERS: dict[str, Callable[[Path], object]] = {
    "nyudv2": write_nyudv2, "mfnet": write_mfnet, "deliver": write_deliver,
    "ade20k": write_ade20k, "voc": write_voc,
}


def dry_run(suite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["run", str(SUITES / f"{suite}.yaml"), "--dry-run",
                 "--results", str(tmp_path / "results")])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("suite", sorted(WRITERS))
def test_suite_validates_with_its_data_and_stops_in_one_line_without(
    suite: str, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    code, err = dry_run(suite, tmp_path, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"datasets.{suite}: {suite}: data root" in err and "expected the layout" in err
    WRITERS[suite](tmp_path / "data" / suite)
    code, err = dry_run(suite, tmp_path, capsys)
    assert code == 0, err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_pvt_v2_b0_student_with_the_mlp_head_trains(tmp_path: Path) -> None:
    """The nyudv2 suite's student (and its teacher kind) at small size: PVTv2-B0 + MLP head
    (images of at least 64 pixels: PVTv2-B0's first stage reduces its keys by 8 at stride 4)."""
    root = tmp_path / "nyudv2"
    written = write_nyudv2(root, sizes=((64, 80), (72, 64)))
    teacher, kd = train_teacher_and_kd(
        tmp_path, "nyudv2", {"root": str(root)}, students=["pvt_v2_b0"], head="mlp",
        teacher={"kind": "intermediate", "backbone": "pvt_v2_b0", "head": "mlp"},
        decoder_channels=16, train={"steps": 2, "batch_size": 2, "workers": 0, "crop": [64, 64]},
    )
    pixels = sum(int((written[s]["raw_label"] != 0).sum()) for s in TEST)
    assert kd["metrics"]["pixels"] == teacher["metrics"]["pixels"] == pixels


@pytest.mark.slow
@pytest.mark.parametrize("suite, x_channels", [("nyudv2", 1), ("mfnet", 1), ("deliver", 3)])
def test_the_rgbx_suites_build_a_pvt_teacher_and_student_that_run(
    suite: str, x_channels: int, tmp_path: Path, monkeypatch
) -> None:
    """Each RGB-X suite's teacher (duplex PVTv2-B2, MLP head) reads rgb and its data set's x,
    its student (PVTv2-B0, MLP head) rgb only; both give logits at their head's stride."""
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    WRITERS[suite](tmp_path / "data" / suite)
    loaded = load_suite(SUITES / f"{suite}.yaml")
    teacher, student = loaded.teachers[0], loaded.students[0]
    assert (teacher.model["backbone"], student.model["backbone"]) == ("pvt_v2_b2", "pvt_v2_b0")
    assert teacher.model["head"]["name"] == student.model["head"]["name"] == "mlp"
    rgb, x = torch.zeros(1, 3, 64, 64), torch.zeros(1, x_channels, 64, 64)
    with torch.no_grad():
        t = build_model(teacher, 9, x_channels, weights=False).eval()(rgb, x)
        s = build_model(student, 9, x_channels, weights=False).eval()(rgb)
    assert t.logits.shape == s.logits.shape == (1, 9, 16, 16)
