"""``suites/cirkd_published.yaml``: ``kdbench run --dry-run`` on a tiny Cityscapes tree lists
every published row with its composite (each term and its options that differ from the
defaults), and stops with one line when the data is missing; its CWD composite trains end to
end on the tiny tree at reduced size."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.results.store import RunStore
from kdbench.train.run import train_run
from tests.data.test_cityscapes import FRAMES
from tests.data.trees import write_cityscapes

SUITE = Path(__file__).parents[2] / "suites" / "cirkd_published.yaml"
ROWS = {
    "none": "none",
    "kd": "kd",
    "kd+adv+skd": "kd + adv + skd(feature=decoder, pixel_weight=0.0)",
    "kd+adv+ifvd": "kd + adv + ifvd(feature=decoder, reduction=all)",
    "kd+adv+cwd": "kd + adv + cwd(channels=student, feature=decoder, weight=50.0) + cwd",
    "kd+at": "kd + at(feature=decoder)",
    "kd+fitnet": "kd + fitnet(feature=decoder)",
    "kd+cirkd": "kd + cirkd",
}
"""Row label -> the composite the dry run prints (written by hand from the suite's comments:
pair weight 10, τ 4, cwd's weight 3, at's 1e4 and fitnet's 10 are the methods' defaults)."""
LINE = re.compile(r"^[0-9a-f]{12}  (\w+)\s+cityscapes/(\S+) (\S+) seed=(\d)(?:  = (.*))?$")


def dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["run", str(SUITE), "--dry-run", "--results", str(tmp_path / "results")])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_lists_every_published_row_with_its_composite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    code, _, err = dry_run(tmp_path, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "datasets.cityscapes: cityscapes: data root" in err
    write_cityscapes(tmp_path / "data" / "cityscapes", FRAMES)
    code, out, err = dry_run(tmp_path, capsys)
    assert code == 0, err
    runs = [m.groups() for m in map(LINE.match, out.splitlines()) if m]
    teachers = [r for r in runs if r[0] == "teacher"]
    assert [(r[1], r[4]) for r in teachers] == [("resnet101", None)] * 3
    students = {(label, int(seed)): terms for kind, _, label, seed, terms in runs
                if kind == "student"}
    assert students == {(label, seed): terms for label, terms in ROWS.items() for seed in (0, 1, 2)}
    assert not (tmp_path / "results").exists()


def test_a_row_reading_aspp_without_a_deeplabv3_head_stops_the_dry_run_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    write_cityscapes(tmp_path / "data" / "cityscapes", FRAMES)
    capsys.readouterr()
    code = main(["run", str(SUITE), "--dry-run", "--set", "head={fpn: {}}", "--set",
                 "methods=[{kd+at: [kd, {at: {feature: aspp}}]}]"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "methods.kd+at: method 'at': feature: aspp" in err
    assert "student's head 'fpn'" in err and "heads with it: deeplabv3" in err


@pytest.mark.slow
def test_the_cwd_composite_trains_end_to_end_on_the_aspp_tap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's CWD row with its feature terms moved to the aspp tap, its teacher first, at
    test size (test_resnet models, 2 steps of 2 crops of 32x32, one seed)."""
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    write_cityscapes(tmp_path / "data" / "cityscapes", FRAMES)
    cwd = ("[kd, adv, {cwd: {feature: aspp, weight: 50.0, tau: 4.0, channels: student}}, "
           "{cwd: {weight: 3.0, tau: 4.0}}]")
    suite = load_suite(SUITE, [
        "seeds=[0]", "students=[test_resnet]", "teacher.backbone=test_resnet",
        "teacher.pretrained=false", "decoder_channels=8", "teacher.decoder_channels=16",
        f"methods=[{{kd+adv+cwd: {cwd}}}]", "eval.batch_size=1", "launch={executor: local}",
        "train={steps: 2, batch_size: 2, workers: 0, crop: [32, 32], eval_every: 0}",
    ])
    (teacher,) = suite.teachers
    (student,) = suite.students
    assert [o.get("feature") for _, o in student.method_terms] == [None, None, "aspp", "logits"]
    for spec in (teacher, student):
        record = train_run(spec, tmp_path / "results")
        assert record["status"] == "complete", record.get("traceback")
    history = json.loads(RunStore(tmp_path / "results").history_path(student.id).read_text())
    losses = [e for e in history if "losses" in e][-1]["losses"]
    assert {"ce", "aux", "kd/kd", "adv/adv", "cwd/cwd", "cwd3/cwd"} <= set(losses), losses
    assert all(math.isfinite(v) for v in losses.values()) and losses["cwd/cwd"] > 0
