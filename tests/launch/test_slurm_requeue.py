"""A real run through the real cluster, given a time limit shorter than its training: SLURM's
warning signal makes it checkpoint and requeue itself until it completes, with the metrics and
training curve of an uninterrupted run (about 2-3 minutes on one loaded 2-core node).

SLURM holds a requeued job for about 2 minutes (its begin time); the test releases it at once
(``scontrol update StartTime=now``) to stay short: that is SLURM's scheduling delay, not the
run's behaviour.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from kdbench.config import load_suite
from kdbench.launch.slurm import SlurmExecutor
from kdbench.results.store import RunStore
from kdbench.train.run import train_run
from tests.suites import tiny

SUITE = tiny(
    name="requeue", methods=["none"], device="cpu",
    # about 50 s of steps on one idle core (33 ms a step measured on 2026-11-30), longer than
    # what a job gets: ~30-60 s (signal 30 s before a 1 min limit, checked by SLURM every
    # ~30 s) of which Python's start takes 10-20 s; so it is requeued at least once
    train={"steps": 1500, "batch_size": 4, "log_every": 10, "checkpoint_every": 100000},
)


def release_requeued_jobs(stop: threading.Event) -> None:
    """Start at once any of this user's jobs SLURM holds back after a requeue."""
    while not stop.wait(1.0):
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            job, state, reason = line.split("|")
            if state == "PENDING" and reason == "BeginTime":
                subprocess.run(
                    ["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True
                )


@pytest.mark.slurm
def test_a_run_past_its_time_limit_requeues_and_resumes_exactly(
    slurm_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the in-process reference uses the job's one CPU: the same threads, the same float order
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    (teacher,) = load_suite(path).teachers
    executor = SlurmExecutor(
        tmp_path / "jobs", time_min=1, signal_margin_s=30, max_requeues=8, poll_s=1.0
    )
    stop = threading.Event()
    threading.Thread(target=release_requeued_jobs, args=(stop,), daemon=True).start()
    out: dict = {}
    job = threading.Thread(
        target=lambda: out.update(
            record=executor.run([teacher], tmp_path / "slurm", train_run)[0]
        )
    )
    job.start()
    reference = train_run(teacher, tmp_path / "inprocess")  # meanwhile, uninterrupted
    job.join(timeout=600)
    stop.set()
    record = out["record"]
    assert record["status"] == "complete", record.get("error")
    attempts = record["attempts"]
    assert len(attempts) >= 2, attempts
    assert [a["outcome"] for a in attempts] == ["stopped"] * (len(attempts) - 1) + ["complete"]
    assert len({a["job"] for a in attempts}) == 1  # requeued: the same SLURM job
    assert [a["restart"] for a in attempts] == list(range(len(attempts)))
    assert record["resumed_from"] and record["resumed_from"][0] > 0
    assert record["metrics"] == reference["metrics"]
    assert RunStore(tmp_path / "slurm").history(teacher.id) == RunStore(
        tmp_path / "inprocess"
    ).history(teacher.id)
