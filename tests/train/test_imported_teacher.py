"""An imported teacher end to end: a tiny synthdrive suite whose teacher is the checkpoint of a
teacher trained by a first tiny run (format ``kdbench``). The imported-teacher run evaluates it
once, exactly as the trained teacher was scored; a kd student distils from it; running the suite
again trains nothing; a changed file is a new teacher; the SLURM plan has an array for it; the
report shows it as the teacher row; a missing file stops ``--dry-run`` in one line and a corrupt
one fails its run in one line. A CIRKD-layout checkpoint (format ``cirkd``) imports through a
suite too."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.config.imported import IMPORTED
from kdbench.config.spec import identity
from kdbench.launch.slurm import SlurmExecutor
from kdbench.report import load_results
from kdbench.results.store import RunStore
from kdbench.train.build import load_teacher
from kdbench.train.run import train_run
from tests.suites import tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A teacher trained by a first tiny run: its ``model.pt`` and its record."""
    folder = tmp_path_factory.mktemp("trained")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny(teacher={"backbone": "test_resnet"})))
    [teacher] = load_suite(path).teachers
    record = train_run(teacher, folder / "results")
    assert record["status"] == "complete"
    return RunStore(folder / "results").run_dir(teacher.id) / "model.pt", record


def _suite(folder: Path, checkpoint: str) -> Path:
    path = folder / "imported.yaml"
    teacher = {"backbone": "test_resnet", "checkpoint": checkpoint, "format": "kdbench"}
    path.write_text(yaml.safe_dump(tiny(name="imported", teacher=teacher)))
    return path


def _run(suite: Path, results: Path, *extra: str) -> int:
    return main(["run", str(suite), "--results", str(results), *extra])


def test_an_imported_teacher_is_evaluated_once_and_distilled_from(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    checkpoint, trained_record = trained
    (tmp_path / "weights").mkdir()
    copy = tmp_path / "weights" / "teacher.pt"
    copy.write_bytes(checkpoint.read_bytes())
    suite_path = _suite(tmp_path, "weights/teacher.pt")  # relative to the suite's folder
    suite, results = load_suite(suite_path), tmp_path / "results"
    [teacher] = suite.teachers
    kd = next(s for s in suite.students if s.method == "kd")
    assert teacher.kind == IMPORTED and kd.teacher_id == teacher.id and kd.needs == (teacher.id,)
    assert _run(suite_path, results) == 0
    store = RunStore(results)
    record = store.load(teacher.id)
    sha = hashlib.sha256(copy.read_bytes()).hexdigest()
    assert record["status"] == "complete" and record["kind"] == IMPORTED
    assert record["imported"] == {"path": str(copy.resolve()), "format": "kdbench", "sha256": sha}
    # the same weights under the same protocol: the trained teacher's own scores, per class too
    assert record["metrics"]["per_class_iou"] == trained_record["metrics"]["per_class_iou"]
    assert record["metrics"]["miou"] == trained_record["metrics"]["miou"]
    saved = torch.load(store.run_dir(teacher.id) / "model.pt", weights_only=True)["model"]
    source = torch.load(checkpoint, weights_only=True)["model"]
    assert saved.keys() == source.keys() and all(torch.equal(saved[k], source[k]) for k in saved)
    assert store.load(kd.id)["status"] == "complete"
    before = {spec.id: store.load(spec.id) for spec in suite.runs}
    assert _run(suite_path, results) == 0  # everything complete: nothing trains again
    assert {spec.id: store.load(spec.id) for spec in suite.runs} == before
    frame = load_results(results)
    [row] = frame[frame["method"] == "teacher"].to_dict("records")
    assert row["kind"] == "teacher" and row["miou"] == pytest.approx(record["metrics"]["miou"])


def test_a_changed_checkpoint_is_a_new_teacher_and_the_path_is_not_its_identity(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    checkpoint, _ = trained
    first = load_suite(_suite(tmp_path, str(checkpoint)))
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(checkpoint.read_bytes())
    assert load_suite(_suite(tmp_path, str(moved))).teachers[0].id == first.teachers[0].id
    state = torch.load(moved, weights_only=True)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, moved)
    changed = load_suite(_suite(tmp_path, str(moved)))
    [old], [new] = first.teachers, changed.teachers
    assert new.id != old.id
    assert identity(new)["model"]["checkpoint"] == {
        "format": "kdbench", "sha256": hashlib.sha256(moved.read_bytes()).hexdigest()}
    ids = {s.method: s.id for s in first.students}
    assert {s.method: s.id for s in changed.students}["none"] == ids["none"]  # reads no teacher
    assert {s.method: s.id for s in changed.students}["kd"] != ids["kd"]


def test_the_slurm_plan_has_an_imported_teacher_array(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, _ = trained
    suite_path = _suite(tmp_path, str(checkpoint))
    suite = load_suite(suite_path)
    [teacher] = suite.teachers
    executor = SlurmExecutor(tmp_path / "jobs", time_min=30, teacher={"time_min": 600})
    plan = executor.plan(suite.runs, tmp_path / "results")
    by_name = {a.name: a for a in plan.arrays}
    kd_array = f"students-of-{teacher.id}"
    assert set(by_name) == {"imported_teachers", kd_array, "students"}
    assert by_name["imported_teachers"].params["time"] == 600  # the teachers' resources
    assert by_name[kd_array].after_runs == (teacher.id,)
    assert _run(suite_path, tmp_path / "results", "--dry-run", "--executor", "slurm") == 0
    out = capsys.readouterr().out
    [line] = [row for row in out.splitlines() if row.startswith(f"{teacher.id}  ")]
    assert IMPORTED in line and " = " not in line  # a teacher row has no method terms
    assert re.search(rf" --dependency=afterok:<imported_teachers>_0 .*# {kd_array}:", out)


def test_a_missing_file_stops_the_dry_run_and_a_corrupt_one_fails_its_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite_path = _suite(tmp_path, "missing.pt")
    assert _run(suite_path, tmp_path / "results", "--dry-run") != 0
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"no such file '{tmp_path / 'missing.pt'}'" in line and "expected a teacher" in line
    (tmp_path / "missing.pt").write_bytes(b"not a checkpoint")
    [teacher] = load_suite(suite_path).teachers
    record = train_run(teacher, tmp_path / "results")
    assert record["status"] == "failed"
    assert re.fullmatch(r"KdbenchError: teacher checkpoint '.*missing\.pt': not a readable .*",
                        record["error"])


def test_a_cirkd_checkpoint_imports_through_a_suite_and_students_read_it(tmp_path: Path) -> None:
    """Format ``cirkd`` end to end: the imported run's ``model.pt``, loaded as students load
    their teacher, gives the CIRKD-layout network's logits."""
    from tests.models.test_imports import _CirkdDeepLabV3, _randomise_batch_norm

    torch.manual_seed(6)
    reference = _CirkdDeepLabV3((2, 2, 2, 2), False, 7, 64)  # synthdrive's 7 classes
    _randomise_batch_norm(reference, 7)
    torch.save(reference.state_dict(), tmp_path / "cirkd.pth")
    teacher = {"kind": "rgb", "backbone": "resnet18s", "decoder_channels": 64,
               "head": {"deeplabv3": {"output_stride": 8, "aux": 0.4}},
               "checkpoint": "cirkd.pth", "format": "cirkd"}
    path = tmp_path / "cirkd.yaml"
    path.write_text(yaml.safe_dump(tiny(name="cirkd", teacher=teacher)))
    [spec] = load_suite(path).teachers
    record = train_run(spec, tmp_path / "results")
    assert record["status"] == "complete" and 0 <= record["metrics"]["miou"] <= 100
    model = load_teacher(RunStore(tmp_path / "results"), spec, 7, 1)
    image = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        want, _ = reference.eval()(image)
        got = model(image, torch.zeros(1, 1, 32, 64)).logits
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
