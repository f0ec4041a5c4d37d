"""The SLURM plan without submitting: arrays, per-stage resources, dependencies, dry-run text."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.launch.slurm import from_options
from kdbench.results.store import RunStore

CITYSCAPES = Path(__file__).parents[2] / "suites" / "cityscapes.yaml"
pytestmark = pytest.mark.usefixtures("shipped_data_roots")  # the suite checks its data folder


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
                "launch.teacher={time_min: 4000, mem_gb: 96}",
            ]
        )
    assert code == 0
    sbatch = [line for line in out.getvalue().splitlines() if line.startswith("sbatch ")]
    suite = load_suite(CITYSCAPES)
    # the teachers, the baselines (they read no teacher), then one array per teacher
    assert len(sbatch) == 2 + len(suite.teachers)
    teachers, baselines, *students = sbatch
    assert "--array=0-2%3" in teachers and "--dependency" not in teachers
    assert "--time=4000" in teachers and "--mem=98304M" in teachers  # the teacher override
    assert "--signal=USR2@120" in teachers and "--requeue" in teachers
    launch = suite.settings["launch"]
    own = f"--time={launch['time_min']}", f"--mem={launch['mem_gb'] * 1024}M"
    assert "--array=0-2%3" in baselines and "--dependency" not in baselines
    assert all(flag in baselines for flag in own)
    methods = len({s.method for s in suite.students}) - 1
    for i, line in enumerate(students):
        assert f"--dependency=afterok:<teachers>_{i}" in line
        assert f"--array=0-{methods - 1}%{methods}" in line and all(f in line for f in own)
        assert "--gpus-per-node=8" in line and "--ntasks-per-node=8" in line  # DDP, 8 ranks
        assert "--cpus-per-task=4" in line and line.endswith("srun --kill-on-bad-exit=1")
    assert not (tmp_path / "res").exists()  # a dry run writes nothing


def test_plan_groups_students_by_the_state_of_their_teacher(tmp_path: Path) -> None:
    suite = load_suite(CITYSCAPES, ["seeds=[0, 1]"])
    results = tmp_path / "res"
    done, _ = suite.teachers
    RunStore(results).write(
        {"id": done.id, "kind": "teacher", "status": "complete", "metrics": {"miou": 70.0}}
    )
    options = {k: v for k, v in suite.settings["launch"].items() if k != "executor"}
    executor = from_options({**options, "student": {"time_min": 30}}, results / "slurm")
    runs = [t for t in suite.teachers if t.id != done.id] + suite.students
    plan = executor.plan(runs, results)
    names = [a.name for a in plan.arrays]
    assert names[0] == "teachers" and len(plan.arrays[0].specs) == 1
    after_done = next(a for a in plan.arrays if a.name == "students")  # teacher complete
    assert after_done.after_runs == () and after_done.after_jobs == ()
    assert {s.teacher_id for s in after_done.specs} == {done.id, None}  # None: the baselines
    waiting = next(a for a in plan.arrays if a.name.startswith("students-of-"))
    assert waiting.after_runs == (plan.arrays[0].specs[0].id,)
    assert all(a.params["time"] == 30 for a in plan.arrays[1:])
    assert plan.arrays[0].params["time"] == suite.settings["launch"]["time_min"]  # teachers
    assert not plan.orphans

    lost = executor.plan(suite.students, tmp_path / "empty")  # teachers nowhere
    distilling = [s for s in suite.students if s.teacher_id is not None]
    assert [a.name for a in lost.arrays] == ["students"]  # the baselines need no teacher
    assert len(lost.orphans) == len(distilling)
    assert re.search(r"not submitted; not started: the run \w+ it needs has no complete record",
                     executor.describe(lost))
