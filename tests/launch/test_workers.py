"""The local parallel executor: pinned workers, teachers before students, metrics equal to one
run at a time, dead workers, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdbench.config import load_suite
from kdbench.errors import KdbenchError
from kdbench.launch.local import LocalExecutor
from kdbench.launch.placement import cpu_shares
from kdbench.launch.workers import WorkerExecutor
from kdbench.results.store import RunStore
from kdbench.train.run import train_run
from tests.suites import tiny

TINY = tiny(device="cpu")

needs_two = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs a process allowed on 2 CPUs"
)


def write_suite(tmp_path: Path, **train: Any) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], **train}}))
    return path


def test_cpu_shares_are_disjoint_contiguous_and_balanced() -> None:
    for n_cpus in range(1, 9):
        cpus = list(range(10, 10 + n_cpus))
        for jobs in range(1, n_cpus + 1):
            shares = cpu_shares(cpus, jobs)
            assert len(shares) == jobs
            assert sorted(c for s in shares for c in s) == cpus
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
            assert all(max(s) - min(s) == len(s) - 1 for s in shares)
    with pytest.raises(KdbenchError, match="--jobs 3: only 2 CPU"):
        cpu_shares([0, 1], 3)


@pytest.mark.slow
@needs_two
def test_two_workers_give_the_metrics_of_one_run_at_a_time(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path))
    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None: ...

    parallel = WorkerExecutor(2, stream=Lines(), poll_s=0.2).run(  # type: ignore[arg-type]
        suite.runs, tmp_path / "parallel", train_run
    )
    serial = LocalExecutor(stream=open(os.devnull, "w")).run(
        suite.runs, tmp_path / "serial", train_run
    )
    assert [r["status"] for r in parallel] == ["complete"] * 3
    assert [r["metrics"] for r in parallel] == [r["metrics"] for r in serial]
    (teacher, *students) = parallel
    distilling = [s for s in students if s["axes"]["teacher"] is not None]  # not the baseline
    assert distilling
    for student in distilling:  # started after its teacher's record was complete
        assert student["attempts"][0]["started"] >= teacher["finished"]
    # each worker is pinned to one of the 2 CPUs and sized torch to it
    assert {r["env"]["cpu_threads"]["cpus"] for r in parallel} == {1}
    assert {r["attempts"][0]["pid"] for r in parallel} != {os.getpid()}
    text = "".join(lines)
    assert "[3/3]" in text and "step 6/6" in text and "suite ETA" in text


@dataclass(frozen=True)
class StandIn:
    id: str
    kind: str
    teacher_id: str | None = None
    die: bool = False
    device: str = "cpu"
    seed: int = 0

    def describe(self) -> str:
        return f"stand-in {self.id}"

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.teacher_id,) if self.teacher_id else ()


def stand_in(
    spec: StandIn, results_dir: str, progress: Any = None, wait: bool = False
) -> dict[str, Any]:
    """Dies without a word when asked to; otherwise writes and returns a complete record."""
    if spec.die:
        os._exit(9)
    record = {
        "id": spec.id,
        "kind": spec.kind,
        "status": "complete",
        "metrics": {"miou": 50.0},
        "pid": os.getpid(),
    }
    RunStore(results_dir).write(record)
    return record


@pytest.mark.slow
def test_a_dead_worker_fails_its_run_only_and_students_of_a_failed_teacher_wait(
    tmp_path: Path,
) -> None:
    rid = "{:012x}".format
    teachers = [StandIn(rid(1), "teacher", die=True), StandIn(rid(2), "teacher")]
    students = [StandIn(rid(3), "student", rid(1)), StandIn(rid(4), "student", rid(2))]
    records = WorkerExecutor(1, stream=open(os.devnull, "w"), poll_s=0.2).run(
        teachers + students, tmp_path, stand_in
    )
    status = {r["id"]: r["status"] for r in records}
    assert status == {rid(1): "failed", rid(2): "complete", rid(3): "failed", rid(4): "complete"}
    by_id = {r["id"]: r for r in records}
    assert "worker process died (exit code 9)" in by_id[rid(1)]["error"]
    assert f"teacher run {rid(1)} failed" in by_id[rid(3)]["error"]
    assert RunStore(tmp_path).status(rid(1)) == "failed"


@pytest.mark.slow
@needs_two
def test_ctrl_c_checkpoints_the_running_runs_and_a_second_run_resumes(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, steps=400, log_every=1, checkpoint_every=1000)
    results = tmp_path / "res"
    cmd = [
        sys.executable,
        "-m",
        "kdbench.cli",
        "run",
        str(suite),
        "--results",
        str(results),
        "--jobs",
        "2",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen = ""
    deadline = time.monotonic() + 240
    while "step 3/400" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, rest = proc.communicate(timeout=240)
    assert proc.returncode == 130, seen + rest
    assert "run again to resume" in rest
    (teacher,) = load_suite(suite).teachers
    store = RunStore(results)
    record = store.load(teacher.id)
    assert record["status"] == "running" and "stopped at step" in record["stopped"]
    assert store.checkpoint_path(teacher.id).exists()  # written at the step it stopped at

    resumed = train_run(teacher, results)  # resumes from the stop's checkpoint
    assert resumed["status"] == "complete"
    stopped_at = int(re.search(r"stopped at step (\d+)", record["stopped"]).group(1))
    assert resumed["resumed_from"] == [stopped_at] and stopped_at >= 1
    assert [a["outcome"] for a in resumed["attempts"]] == ["stopped", "complete"]
