"""The SLURM plan without submitting: arrays, per-stage resources, dependencies, dry-run text."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.launch.slurm import from_options
from kdbench.results.store import RunStore

CITYSCAPES = Path(__file__).parents[2] / "suites" / "cityscapes.yaml"


def test_cityscapes_dry_run_prints_every_array_and_dependency(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "run",
                str(CITYSCAPES),
                "--executor",
                "slurm",
                "--dry-run",
                "--results",
                str(tmp_path / "res"),
                "--set",
                "launch.teacher={time_min: 2880, mem_gb: 64}",
            ]
        )
    assert code == 0
    sbatch = [line for line in out.getvalue().splitlines() if line.startswith("sbatch ")]
    suite = load_suite(CITYSCAPES)
    assert len(sbatch) == 1 + len(suite.teachers)  # the teachers, then one array per teacher
    teachers, *students = sbatch
    assert "--array=0-2%3" in teachers and "--dependency" not in teachers
    assert "--time=2880" in teachers and "--mem=65536M" in teachers  # the teacher override
    assert "--signal=USR2@120" in teachers and "--requeue" in teachers
    for i, line in enumerate(students):
        assert f"--dependency=afterok:<teachers>_{i}" in line
        assert "--array=0-11%12" in line and "--time=1440" in line and "--mem=49152M" in line
        assert "--gpus-per-node=1" in line and "--cpus-per-task=8" in line
    assert not (tmp_path / "res").exists()  # a dry run writes nothing


def test_plan_groups_students_by_the_state_of_their_teacher(tmp_path: Path) -> None:
    suite = load_suite(CITYSCAPES, ["seeds=[0, 1]"])
    results = tmp_path / "res"
    done, _ = suite.teachers
    RunStore(results).write({"id": done.id, "kind": "teacher", "status": "complete"})
    options = {k: v for k, v in suite.settings["launch"].items() if k != "executor"}
    executor = from_options({**options, "student": {"time_min": 30}}, results / "slurm")
    waves = [[t for t in suite.teachers if t.id != done.id], suite.students]
    plan = executor.plan(waves, results)
    names = [a.name for a in plan.arrays]
    assert names[0] == "teachers" and len(plan.arrays[0].specs) == 1
    after_done = next(a for a in plan.arrays if a.name == "students")  # teacher complete
    assert after_done.after_run is None and after_done.after_job is None
    assert {s.teacher_id for s in after_done.specs} == {done.id}
    waiting = next(a for a in plan.arrays if a.name.startswith("students-of-"))
    assert waiting.after_run == plan.arrays[0].specs[0].id
    assert all(a.params["time"] == 30 for a in plan.arrays[1:])
    assert plan.arrays[0].params["time"] == 1440  # teachers keep the suite's time_min
    assert not plan.orphans

    lost = executor.plan([[], suite.students], tmp_path / "empty")  # teachers nowhere
    assert not lost.arrays and len(lost.orphans) == len(suite.students)
    assert re.search(r"not submitted, its teacher \w+ is missing", executor.describe(lost))
