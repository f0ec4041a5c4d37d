"""Stop requests and attempts: a run stopped between two checkpoints and two log entries
resumes to the same metrics and the same training curve as an uninterrupted one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

import kdbench.train.fit as fit_module
from kdbench.config import load_suite
from kdbench.results.store import RunStore
from kdbench.train import context
from kdbench.train.run import train_run
from tests.suites import TRAIN, tiny

TINY = tiny(methods=["kd"], train={**TRAIN, "steps": 8, "log_every": 4, "checkpoint_every": 6})


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    path = tmp_path_factory.mktemp("suite") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return load_suite(path)


def stop_at(step: int):  # noqa: ANN201
    """A stand-in for ``stop_requested`` that asks for a stop after ``step`` steps."""
    calls = {"n": 0}

    def requested() -> str | None:
        calls["n"] += 1
        return "TEST" if calls["n"] == step else None

    return requested


@pytest.mark.slow
def test_a_stopped_run_resumes_exactly(
    suite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    (teacher,) = suite.teachers
    (kd,) = suite.students
    reference_dir, stopped_dir = tmp_path / "reference", tmp_path / "stopped"
    assert train_run(teacher, reference_dir)["status"] == "complete"
    reference = train_run(kd, reference_dir)
    (stopped_dir / "runs").mkdir(parents=True)
    store = RunStore(stopped_dir)
    os.symlink(RunStore(reference_dir).run_dir(teacher.id), store.run_dir(teacher.id))

    monkeypatch.setattr(fit_module, "stop_requested", stop_at(5))
    with pytest.raises(context.Stopped) as stopped:
        train_run(kd, stopped_dir)
    assert stopped.value.step == 5  # neither a log step (4, 8) nor a checkpoint step (6)
    record = store.load(kd.id)
    assert record["status"] == "running" and "stopped at step" in record["stopped"]
    assert [a["outcome"] for a in record["attempts"]] == ["stopped"]
    assert store.checkpoint_path(kd.id).exists()

    monkeypatch.setattr(fit_module, "stop_requested", lambda: None)
    resumed = train_run(kd, stopped_dir)
    assert resumed["resumed_from"] == [5]
    assert resumed["metrics"] == reference["metrics"]
    assert store.history(kd.id) == RunStore(reference_dir).history(kd.id)
    assert [a["outcome"] for a in resumed["attempts"]] == ["stopped", "complete"]
    assert resumed["env"]["cpu_threads"]["threads"] >= 1


def test_a_signal_becomes_a_stop_request() -> None:
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        context.clear_stop()
        context.stop_on([signal.SIGUSR1])
        os.kill(os.getpid(), signal.SIGUSR1)
        assert context.stop_requested() == "SIGUSR1"
    finally:
        signal.signal(signal.SIGUSR1, previous)
        context.clear_stop()


def test_attempt_names_the_slurm_array_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    attempt = context.current_attempt()
    assert (attempt["job"], attempt["restart"]) == ("40_1", 2)
    assert context.end_attempt(attempt, "complete")["outcome"] == "complete"
