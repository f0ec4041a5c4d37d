"""One writer per run: concurrent `kdbench run` processes, kills at random moments, leases."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.results.lease import LEASE, Lease, is_live
from kdbench.results.store import RunStore
from kdbench.train.run import train_run
from tests.suites import TRAIN, tiny

SUITE = tiny(name="writers", train={**TRAIN, "steps": 20, "log_every": 3, "checkpoint_every": 1})
SAME = ("id", "kind", "status", "axes", "config", "metrics", "best_val", "extra_params",
        "student_params")
"""Record fields that must not depend on how the run was scheduled, killed or resumed."""


def kdbench_cmd(suite: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "kdbench.cli", "run", str(suite), "--results", str(results)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The suite file and a results folder where one process trained it without interruption."""
    tmp = tmp_path_factory.mktemp("writers")
    suite = tmp / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    assert main(["run", str(suite), "--results", str(tmp / "reference")]) == 0
    return suite, tmp / "reference"


def assert_same_results(results: Path, reference: Path) -> None:
    """Records (scheduling-independent fields), weights and histories equal the reference's."""
    ours, theirs = RunStore(results), RunStore(reference)
    ids = sorted(r["id"] for r in theirs)
    assert sorted(r["id"] for r in ours) == ids
    for run_id in ids:
        a, b = ours.load(run_id), theirs.load(run_id)
        assert {k: a.get(k) for k in SAME} == {k: b.get(k) for k in SAME}
        assert ours.history(run_id) == theirs.history(run_id)
        wa = torch.load(ours.run_dir(run_id) / "model.pt", weights_only=True)["model"]
        wb = torch.load(theirs.run_dir(run_id) / "model.pt", weights_only=True)["model"]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert not ours.checkpoint_path(run_id).exists()
        assert not list(ours.run_dir(run_id).glob(".*.tmp")), "a temporary file was left"
        assert not (ours.run_dir(run_id) / LEASE).exists()
        mode = {(ours.run_dir(run_id) / f).stat().st_mode & 0o777
                for f in ("record.json", "history.json", "model.pt")}
        assert mode == {0o644}


@pytest.mark.slow
def test_four_processes_train_every_run_exactly_once(tmp_path: Path, reference) -> None:  # noqa: ANN001
    suite, ref = reference
    results = tmp_path / "shared"
    procs = [subprocess.Popen(kdbench_cmd(suite, results), cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    records = list(RunStore(results))
    pids = {p.pid for p in procs}
    for record in records:
        assert record["status"] == "complete"
        (session,) = record["sessions"]  # trained by one process, in one go
        assert session["pid"] in pids and session["step"] == 0
    assert_same_results(results, ref)
    assert all("| kd" in out for out, _ in outs)  # every process prints the whole table


def saved_at(run_dir: Path | None) -> int | None:
    try:
        return (run_dir / "checkpoint.pt").stat().st_mtime_ns if run_dir else None
    except FileNotFoundError:
        return None


def leased_run(results: Path, pid: int) -> Path | None:
    """The folder of the run whose lease process ``pid`` holds, if any."""
    for path in results.glob(f"runs/*/{LEASE}"):
        try:
            if json.loads(path.read_text())["pid"] == pid:
                return path.parent
        except (OSError, ValueError, KeyError):
            continue
    return None


@pytest.mark.slow
def test_random_kills_then_a_final_run_equal_an_uninterrupted_run(
    tmp_path: Path, reference  # noqa: ANN001
) -> None:
    suite, ref = reference
    results = tmp_path / "killed"
    rng = random.Random(8)
    for _ in range(5):
        proc = subprocess.Popen(kdbench_cmd(suite, results), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120  # a random moment once this process trains a run
        while (held := leased_run(results, proc.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        before = saved_at(held)
        while held and saved_at(held) == before and time.monotonic() < deadline:
            time.sleep(0.05)  # ... and has saved a checkpoint of its own
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(kdbench_cmd(suite, results), cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert_same_results(results, ref)
    sessions = sum(len(r["sessions"]) for r in RunStore(results))
    resumed = sum(len(r["resumed_from"]) for r in RunStore(results))
    print(f"{sessions} training sessions over 3 runs, {resumed} resumed from a checkpoint")
    assert resumed >= 1  # the kills fell after checkpoints, so runs did resume


def foreign_lease(run_dir: Path, age_s: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LEASE).write_text(json.dumps({
        "host": "elsewhere", "pid": 1, "job": "77_1", "token": "x",
        "heartbeat": time.time() - age_s}))


@pytest.mark.slow
def test_a_live_lease_is_left_alone_and_a_dead_one_taken_over(
    tmp_path: Path, reference, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    suite_path, ref = reference
    monkeypatch.setenv("KDBENCH_LEASE_EXPIRY_S", "2")
    (teacher,) = load_suite(suite_path).teachers
    store = RunStore(tmp_path)
    foreign_lease(store.run_dir(teacher.id), age_s=0)
    busy = train_run(teacher, tmp_path)
    assert busy["status"] == "running" and "elsewhere pid 1 (SLURM job 77_1)" in busy["error"]
    assert store.status(teacher.id) == "running"
    assert store.load(teacher.id) is None  # nothing written by the process that stood aside
    foreign_lease(store.run_dir(teacher.id), age_s=3)  # no heartbeat for longer than the expiry
    assert store.status(teacher.id) == "missing"
    record = train_run(teacher, tmp_path)
    assert record["status"] == "complete"
    assert record["metrics"] == RunStore(ref).load(teacher.id)["metrics"]


@pytest.mark.slow
def test_a_waiting_process_returns_the_holders_record(tmp_path: Path, reference,  # noqa: ANN001
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    suite_path, ref = reference
    monkeypatch.setenv("KDBENCH_LEASE_EXPIRY_S", "1")
    (teacher,) = load_suite(suite_path).teachers
    store = RunStore(tmp_path)
    foreign_lease(store.run_dir(teacher.id), age_s=0)
    started = time.monotonic()
    record = train_run(teacher, tmp_path, wait=True)  # the holder never beats: taken over
    assert time.monotonic() - started >= 0.9
    assert record["status"] == "complete"


def test_the_heartbeat_keeps_a_lease_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDBENCH_LEASE_EXPIRY_S", "0.4")
    lease = Lease(tmp_path)
    assert lease.acquire() is None
    with lease:
        time.sleep(1.0)
        info = json.loads((tmp_path / LEASE).read_text())
        assert is_live({**info, "host": "elsewhere"})
        assert Lease(tmp_path).acquire() is not None
    assert not (tmp_path / LEASE).exists()
    assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
