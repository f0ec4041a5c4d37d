"""The SLURM executor against a real cluster (``bash ci/slurm.sh up``; skipped without one
unless CI is set).

The jobs run a stand-in for ``train_run``: this module is registered with cloudpickle *by
value*, because SLURM jobs cannot import a test module. One module-scoped launch covers most
properties (10-20 s on one 2-core node); the time limit (5-80 s: SLURM checks limits and sends
submitit's warning signal about every 30 s) and Ctrl-C have their own launches.
"""

from __future__ import annotations

import _thread
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from kdbench.errors import KdbenchError
from kdbench.launch.slurm import SlurmExecutor, from_options
from kdbench.results.store import RunStore

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class StandIn:
    """A run spec for the stand-in: ``behaviour`` is one of succeed (after ``seconds``), fail
    (return a failed record), raise, sleep (``seconds``, past any time limit), exit (die
    without a result) and complete_then_exit (write a complete record, then die)."""

    id: str
    kind: str
    teacher_id: str | None = None
    behaviour: str = "succeed"
    seconds: float = 0.0

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.teacher_id,) if self.teacher_id else ()


def stand_in_run(
    spec: StandIn, results_dir: str, progress: Any = None, wait: bool = False
) -> dict[str, Any]:
    """A stand-in for ``train_run``: writes and returns a record with its start/end times, the
    SLURM ids it ran under, and whether its teacher's record was complete when it started."""
    store = RunStore(results_dir)
    started = time.time()
    teacher_complete = spec.teacher_id is not None and store.status(spec.teacher_id) == "complete"
    if spec.behaviour == "raise":
        raise ValueError(f"stand-in {spec.id} raised on purpose")
    if spec.behaviour == "exit":
        os._exit(3)
    if spec.behaviour == "sleep":
        Path(results_dir).mkdir(parents=True, exist_ok=True)
        Path(results_dir, f"{spec.id}.started").touch()
    time.sleep(spec.seconds)
    record = {
        "id": spec.id,
        "kind": spec.kind,
        "status": "failed" if spec.behaviour == "fail" else "complete",
        "error": "stand-in failed on purpose" if spec.behaviour == "fail" else None,
        "metrics": {"miou": 0.0},
        "started": started,
        "ended": time.time(),
        "teacher_complete_at_start": teacher_complete,
        # a one-task "array" is submitted as a plain job
        "array_job": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"]),
    }
    store.write(record)
    if spec.behaviour == "complete_then_exit":
        os._exit(4)
    return record


def rid(n: int) -> str:
    return f"{n:012x}"


T_OK, T_FAIL, T_DONE = (
    StandIn(rid(1), "teacher", seconds=2.0),
    StandIn(rid(2), "teacher", behaviour="fail"),
    StandIn(rid(3), "teacher", behaviour="raise"),  # complete beforehand: must not run
)
S_OK = StandIn(rid(11), "student", T_OK.id)
S_RAISE = StandIn(rid(12), "student", T_OK.id, behaviour="raise")
S_EXIT = StandIn(rid(13), "student", T_OK.id, behaviour="exit")
S_WRITE_EXIT = StandIn(rid(14), "student", T_OK.id, behaviour="complete_then_exit")
S_DONE = StandIn(rid(15), "student", T_OK.id, behaviour="raise")  # complete beforehand
S_BLOCKED = (StandIn(rid(21), "student", T_FAIL.id), StandIn(rid(22), "student", T_FAIL.id))
S_OF_DONE = StandIn(rid(31), "student", T_DONE.id)
S_ORPHAN = StandIn(rid(41), "student", rid(99))  # its teacher is neither launched nor complete
RUNS = [
    T_OK, T_FAIL, T_DONE,
    S_OK, S_RAISE, S_EXIT, S_WRITE_EXIT, S_DONE, *S_BLOCKED, S_OF_DONE, S_ORPHAN,
]
PRE_COMPLETE = {
    spec.id: {"id": spec.id, "kind": spec.kind, "status": "complete", "mark": 7,
              "metrics": {"miou": 0.0}}
    for spec in (T_DONE, S_DONE)
}


@dataclass
class Launch:
    executor: SlurmExecutor
    records: dict[str, dict[str, Any]]
    store: RunStore
    results: Path


@pytest.fixture(scope="module")
def launch(slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Launch:
    """One launch of RUNS, with PRE_COMPLETE already in the store."""
    root = tmp_path_factory.mktemp("slurm")
    store = RunStore(root / "results")
    for record in PRE_COMPLETE.values():
        store.write(record)
    executor = SlurmExecutor(root / "jobs", time_min=5, poll_s=0.3)
    returned = executor.run(RUNS, root / "results", stand_in_run)
    assert [r["id"] for r in returned] == [spec.id for spec in RUNS]
    return Launch(executor, {r["id"]: r for r in returned}, store, root / "results")


@pytest.mark.slurm
def test_runs_complete_as_job_arrays(launch: Launch) -> None:
    for spec in (T_OK, S_OK, S_OF_DONE):
        assert launch.records[spec.id]["status"] == "complete"
        assert launch.store.load(spec.id) == launch.records[spec.id]
    # one array for the teachers, one per launched teacher, one for students of complete ones
    assert len(launch.executor.submitted) == 4
    assert launch.records[T_OK.id]["array_job"] == launch.executor.submitted[0]
    assert launch.records[S_OK.id]["array_job"] == launch.store.load(S_WRITE_EXIT.id)["array_job"]
    assert launch.records[S_OK.id]["array_job"] != launch.records[T_OK.id]["array_job"]


@pytest.mark.slurm
def test_student_starts_after_its_teacher_completed(launch: Launch) -> None:
    teacher, student = launch.records[T_OK.id], launch.records[S_OK.id]
    assert student["started"] >= teacher["ended"]
    assert student["teacher_complete_at_start"]
    assert launch.records[S_OF_DONE.id]["teacher_complete_at_start"]


@pytest.mark.slurm
def test_failed_teacher_blocks_only_its_students(launch: Launch) -> None:
    assert launch.records[T_FAIL.id]["status"] == "failed"
    assert launch.records[T_FAIL.id]["error"] == "stand-in failed on purpose"
    for spec in S_BLOCKED:
        record = launch.records[spec.id]
        assert record["status"] == "failed"
        assert "started" not in record  # the job never ran
        assert record["error"].startswith(f"not started: teacher run {T_FAIL.id} failed")
        assert launch.store.load(spec.id) == record
    assert launch.records[S_OK.id]["status"] == "complete"
    orphan = launch.records[S_ORPHAN.id]
    assert orphan["status"] == "failed" and rid(99) in orphan["error"]
    assert launch.store.load(S_ORPHAN.id) == orphan


@pytest.mark.slurm
def test_exception_comes_back_with_its_traceback(launch: Launch) -> None:
    record = launch.records[S_RAISE.id]
    assert record["status"] == "failed"
    assert record["error"] == f"ValueError: stand-in {S_RAISE.id} raised on purpose"
    assert "Traceback" in record["traceback"] and "stand_in_run" in record["traceback"]
    assert record["config"]["behaviour"] == "raise"
    assert launch.store.load(S_RAISE.id) == record


@pytest.mark.slurm
def test_killed_job_gets_a_failed_record_with_the_slurm_state(launch: Launch) -> None:
    record = launch.records[S_EXIT.id]
    assert record["status"] == "failed"
    assert "FAILED" in record["error"] and "without a result" in record["error"]
    assert launch.store.load(S_EXIT.id) == record


@pytest.mark.slurm
def test_complete_record_is_never_overwritten(launch: Launch) -> None:
    for run_id, record in PRE_COMPLETE.items():  # not launched again
        assert launch.records[run_id] == record
        assert json.loads(launch.store.record_path(run_id).read_text()) == record
    written = launch.store.load(S_WRITE_EXIT.id)  # the job wrote it, then died
    assert written["status"] == "complete"
    assert launch.records[S_WRITE_EXIT.id] == written


@pytest.mark.slurm
def test_time_limit_gives_a_failed_record(slurm_cluster: None, tmp_path: Path) -> None:
    spec = StandIn(rid(1), "teacher", behaviour="sleep", seconds=600)
    # submitit signals the job 90 s before its limit, i.e. at once for 1 min: the job stops
    # itself ("timed-out"); were it killed at the limit instead, SLURM would say TIMEOUT
    executor = SlurmExecutor(tmp_path / "jobs", time_min=1, poll_s=0.5)
    [record] = executor.run([spec], tmp_path / "results", stand_in_run)
    assert record["status"] == "failed"
    assert "timed-out" in record["error"] or "TIMEOUT" in record["error"], record["error"]
    assert RunStore(tmp_path / "results").load(spec.id) == record


def _sacct_states(job_ids: list[str]) -> list[str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", *[f"-j{j}" for j in job_ids]],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\n")[:-1]


@pytest.mark.slurm
def test_ctrl_c_cancels_the_submitted_jobs(slurm_cluster: None, tmp_path: Path) -> None:
    teacher = StandIn(rid(1), "teacher", behaviour="sleep", seconds=600)
    student = StandIn(rid(2), "student", teacher.id)
    marker = tmp_path / "results" / f"{teacher.id}.started"

    executor = SlurmExecutor(tmp_path / "jobs", time_min=5, poll_s=0.2)

    def interrupt_once_running() -> None:  # both arrays submitted, the teacher running
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(executor.submitted) == 2 and marker.exists():
                break
            time.sleep(0.1)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        executor.run([teacher, student], tmp_path / "results", stand_in_run)
    assert marker.exists() and len(executor.submitted) == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # slurmdbd learns of a cancelled job a little later
        states = _sacct_states(executor.submitted)
        if len(states) == 2 and all(s.startswith("CANCELLED") for s in states):
            break
        time.sleep(0.5)
    assert len(states) == 2 and all(s.startswith("CANCELLED") for s in states), states
    assert RunStore(tmp_path / "results").load(student.id) is None


def test_from_options_builds_and_validates(tmp_path: Path) -> None:
    ex = from_options(
        {"partition": "gpu", "time_min": 240, "gpus_per_node": 1, "mem_gb": 7.5}, tmp_path
    )
    assert (ex.partition, ex.time_min, ex.gpus_per_node, ex.mem_gb) == ("gpu", 240, 1, 7.5)
    assert ex.folder == tmp_path and ex.cpus_per_task == 1
    with pytest.raises(KdbenchError, match=r"^launch: unknown option 'gpus'"):
        from_options({"gpus": 1}, tmp_path)
    assert from_options({"gpus_per_node": 2}, tmp_path).gpus_per_node == 2
    with pytest.raises(KdbenchError, match=r"^launch\.tasks_per_node: 3 with gpus_per_node: 2;"):
        from_options({"gpus_per_node": 2, "tasks_per_node": 3}, tmp_path)
    with pytest.raises(KdbenchError, match=r"^launch\.teacher\.tasks_per_node: 1 with gpus_per"):
        from_options({"teacher": {"gpus_per_node": 2, "tasks_per_node": 1}}, tmp_path)
    with pytest.raises(KdbenchError, match=r"^launch\.teacher\.mem_gb: expected"):
        from_options({"teacher": {"mem_gb": 0}}, tmp_path)
    with pytest.raises(KdbenchError, match=r"^launch\.student: unknown option 'seeds'"):
        from_options({"student": {"seeds": 1}}, tmp_path)
    for key, bad in (
        ("time_min", 0),
        ("time_min", "1h"),
        ("cpus_per_task", True),
        ("mem_gb", -1),
        ("partition", ""),
        ("poll_s", 0),
        ("signal_margin_s", -1),
        ("max_requeues", 1.5),
        ("gpus_per_node", -1),
        ("tasks_per_node", 0),
        ("nodes", 0),
    ):
        with pytest.raises(KdbenchError, match=rf"^launch\.{key}: expected"):
            from_options({key: bad}, tmp_path)
