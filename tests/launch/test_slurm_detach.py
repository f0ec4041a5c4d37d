"""Submit and walk away, on the real cluster: ``kdbench run --detach`` returns at once,
``kdbench status`` follows the runs (pending, running with a step, complete), a second ``run``
submits nothing twice, and ``kdbench cancel`` ends one suite's jobs only (about 1-2 minutes)."""

from __future__ import annotations

import contextlib
import io
import re
import time
from pathlib import Path

import pytest
import yaml

from kdbench.cli import main
from kdbench.launch.slurm_state import load_submissions, queue_states
from kdbench.results.store import RunStore
from tests.suites import tiny


def suite(tmp_path: Path, name: str, steps: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            tiny((8, 4), name=name, device="cpu",
                 train={"steps": steps, "batch_size": 4, "log_every": 1},
                 launch={"executor": "slurm", "time_min": 10})
        )
    )
    return path


def kdbench(*args: str) -> tuple[int, str]:
    """``kdbench ARGS`` in this process (torch is imported once): exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def status(path: Path, results: Path) -> dict[str, str]:
    """{method label: the status line} of ``kdbench status``."""
    code, out = kdbench("status", str(path), "--results", str(results))
    assert code == 0
    lines = {}
    for line in out.splitlines():
        label = line.split()[4]  # id, state, kind, dataset/student, method
        lines[label] = line
    return lines


def wait_for(check, timeout: float = 240.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError("timed out waiting")


@pytest.mark.slurm
def test_detach_status_resubmit_and_cancel(slurm_cluster: None, tmp_path: Path) -> None:
    short, long = suite(tmp_path, "short", 40), suite(tmp_path, "long", 5000)
    res_short, res_long = tmp_path / "res-short", tmp_path / "res-long"
    started = time.monotonic()
    code, out = kdbench("run", str(short), "--results", str(res_short), "--detach")
    assert code == 0
    assert time.monotonic() - started < 60  # returned after submission, not after training
    job_ids = re.findall(r"job (\d+(?:_\d+)?)", out)
    assert len(job_ids) == 3 and "submitted 3 run(s)" in out
    submitted = load_submissions(res_short / "slurm")
    assert sorted(e["job"] for e in submitted.values()) == sorted(job_ids)
    assert kdbench("run", str(long), "--results", str(res_long), "--detach")[0] == 0

    first = status(short, res_short)
    assert first["kd"].split()[1] == "pending", first["kd"]
    assert "job " in first["kd"] and ".err" in first["kd"]  # job id and log path
    assert re.search(r"(pending|running)", first["teacher"])
    running = wait_for(
        lambda: (
            (s := status(short, res_short))
            and re.search(r"running\s.*step \d+/40", s["teacher"])
            and s
        )
    )
    assert running["kd"].split()[1] == "pending" and "Dependency" in running["kd"], running["kd"]

    code, again = kdbench("run", str(short), "--results", str(res_short), "--detach")
    assert code == 0 and "submitted 0 run(s)" in again, again
    assert load_submissions(res_short / "slurm") == submitted  # nothing submitted twice

    long_jobs = [e["job"] for e in load_submissions(res_long / "slurm").values()]
    code, cancelled = kdbench("cancel", str(long), "--results", str(res_long))
    assert code == 0
    assert sorted(cancelled.split(":")[-1].split()) == sorted(long_jobs)
    wait_for(lambda: not set(long_jobs) & set(queue_states()), 60)
    short_jobs = {e["job"] for e in submitted.values()}
    assert short_jobs & set(queue_states())  # the other suite's jobs are untouched

    wait_for(lambda: all("complete" in line for line in status(short, res_short).values()))
    assert all(r["status"] == "complete" for r in RunStore(res_short))
    after = status(long, res_long)
    assert all(line.split()[1] in ("failed", "missing", "interrupted") for line in after.values())
    assert "CANCELLED" in after["teacher"], after["teacher"]
