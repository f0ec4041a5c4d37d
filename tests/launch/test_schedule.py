"""The run graph: a new kind of run is added without editing any executor.

A stand-in "stage" run (as MasKD's token learning will be) sits between each teacher and the
students that read it: it needs its teacher, and each distilling student needs it. The quickstart
with these stages runs through the in-process executor and the SLURM plan as they are."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from kdbench.config import KINDS, RunSpec, load_suite, register_kind
from kdbench.errors import KdbenchError
from kdbench.launch.local import LocalExecutor
from kdbench.launch.schedule import Schedule
from kdbench.launch.slurm import SlurmExecutor
from kdbench.results.store import RunStore

QUICKSTART = Path(__file__).parents[2] / "suites" / "quickstart.yaml"


@pytest.fixture
def stage_kind() -> Iterator[None]:
    register_kind("stage", "teacher")  # trained with the teachers' launch resources
    yield
    del KINDS["stage"]


def staged_runs() -> list[RunSpec]:
    """The one-seed quickstart with a stage after each teacher, needed by its students."""
    suite = load_suite(QUICKSTART, ["seeds=[0]"])
    stages = {
        t.id: replace(t, kind="stage", method="stage", teacher_id=t.id, needs=(t.id,))
        for t in suite.teachers
    }
    students = [
        replace(s, needs=(*s.needs, stages[s.teacher_id].id)) if s.teacher_id else s
        for s in suite.students
    ]
    return [*students, *stages.values(), *suite.teachers]  # any order: the graph orders them


class StandInTraining:
    """A stand-in for ``train_run``: checks that every run it needs is complete, writes a
    record (failed for the kinds in ``fail``) and remembers the order of the calls."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def __call__(
        self, spec: Any, results_dir: str, progress: Any = None, wait: bool = False
    ) -> dict[str, Any]:
        store = RunStore(results_dir)
        assert all(store.status(need) == "complete" for need in spec.needs)
        self.calls.append(spec.id)
        failed = spec.kind in self.fail
        record = {"id": spec.id, "kind": spec.kind, "status": "failed" if failed else "complete",
                  "error": "stand-in failed" if failed else None, "metrics": {"miou": 1.0}}
        store.write(record)
        return record


def test_a_stage_runs_between_teacher_and_students_in_process(
    stage_kind: None, tmp_path: Path
) -> None:
    runs, train = staged_runs(), StandInTraining()
    records = LocalExecutor(stream=io.StringIO()).run(runs, tmp_path, train)
    assert [r["id"] for r in records] == [s.id for s in runs]
    assert all(r["status"] == "complete" for r in records)
    order = {run_id: i for i, run_id in enumerate(train.calls)}
    assert len(order) == len(runs)  # each run trained once
    for spec in runs:
        assert all(order[need] < order[spec.id] for need in spec.needs)
    distilling = [s for s in runs if s.kind == "student" and s.teacher_id]
    assert distilling and all(len(s.needs) == 2 for s in distilling)


def test_a_failed_stage_blocks_only_its_students_with_one_message(
    stage_kind: None, tmp_path: Path
) -> None:
    runs = staged_runs()
    records = {r["id"]: r for r in LocalExecutor(stream=io.StringIO()).run(
        runs, tmp_path, StandInTraining(fail=("stage",)))}
    [stage] = [s for s in runs if s.kind == "stage"]
    for spec in runs:
        record = records[spec.id]
        if spec.kind == "student" and stage.id in spec.needs:
            assert record["error"] == f"not started: stage run {stage.id} failed (stand-in failed)"
            assert RunStore(tmp_path).load(spec.id) == record
        else:  # the teacher and the baseline, which reads no teacher
            assert record["status"] == ("failed" if spec is stage else "complete")


def test_the_slurm_plan_derives_a_stage_array_and_its_dependencies(
    stage_kind: None, tmp_path: Path
) -> None:
    runs = staged_runs()
    executor = SlurmExecutor(tmp_path / "jobs", time_min=30, teacher={"time_min": 600})
    plan = executor.plan(runs, tmp_path / "results")
    [teacher] = [s for s in runs if s.kind == "teacher"]
    [stage] = [s for s in runs if s.kind == "stage"]
    by_name = {a.name: a for a in plan.arrays}
    names = ["teachers", f"stages-of-{teacher.id}", f"students-of-{teacher.id}-and-1-more"]
    assert sorted(by_name) == sorted([*names, "students"])
    assert [n for n in by_name if n in names] == names  # each array after those it waits for
    assert by_name[f"stages-of-{teacher.id}"].params["time"] == 600  # the teachers' resources
    assert by_name["students"].params["time"] == 30  # the baseline needs nothing
    text = executor.describe(plan)
    lines = {line.split("# ")[1].split(":")[0]: line for line in text.splitlines()}
    assert "--dependency" not in lines["teachers"] + lines["students"]
    assert " --dependency=afterok:<teachers>_0 " in lines[f"stages-of-{teacher.id}"]
    assert re.search(r" --dependency=afterok:<teachers>_0:<stages-of-\w+>_0 ", lines[names[2]])
    assert not plan.orphans and not (tmp_path / "results").exists()  # a dry run writes nothing
    assert stage.needs == (teacher.id,)


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    needs: tuple[str, ...] = ()


def test_a_cycle_is_refused_and_the_order_follows_the_edges(tmp_path: Path) -> None:
    a, b, c, x = (f"{n:012x}" for n in (10, 11, 12, 15))
    # content-hashed ids cannot form a cycle (a run's id hashes its needs); other specs can
    with pytest.raises(KdbenchError, match="need each other"):
        Schedule([Node(a, "stage", (b,)), Node(b, "stage", (a,))], RunStore(tmp_path))
    chain = [Node(c, "student", (b, x)), Node(b, "stage", (a,)), Node(a, "teacher")]
    schedule = Schedule(chain, RunStore(tmp_path))
    assert [n.id for n in schedule.order] == [a, b, c]
    assert [schedule.depth(n) for n in schedule.order] == [0, 1, 2]
    assert schedule.ready() == [chain[2]]
    [(spec, record)] = schedule.block()  # x is neither in the launch nor complete
    assert spec is chain[0] and record["error"] == (
        f"not started: the run {x} it needs has no complete record and is not part of this launch"
    )
    assert RunStore(tmp_path).load(c)["error"] == record["error"]  # written


def test_tuned_students_depend_on_their_trials_in_one_submission(tmp_path: Path) -> None:
    """``tune:`` needs no second pass: each student's array waits for its teacher and trials
    (the choice among them is made inside the student's job), so ``--detach`` submits it all."""
    suite = load_suite(QUICKSTART, ["seeds=[0]", "methods=[none, kd]", "tune.trials=2"])
    executor = SlurmExecutor(tmp_path / "jobs", time_min=30)
    plan = executor.plan(suite.runs, tmp_path / "results")
    [teacher], [kd] = suite.teachers, [s for s in suite.students if s.method == "kd"]
    trials = [t.id for t in suite.trials]
    assert kd.needs == (teacher.id, *trials) and len(trials) == 2
    [array] = [a for a in plan.arrays if kd in a.specs]
    assert array.after_runs == kd.needs
    assert array.dependency(lambda run: f"job-of-{run}") == "afterok:" + ":".join(
        f"job-of-{run}" for run in kd.needs
    )
    assert [a.name for a in plan.arrays].index(array.name) == len(plan.arrays) - 1
