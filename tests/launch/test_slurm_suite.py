"""A real suite through the CLI on the real SLURM cluster: teachers, then students, as arrays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdbench.results.store import RunStore
from tests.suites import tiny

SUITE = tiny((8, 4), name="slurm-tiny", train={"steps": 2, "batch_size": 4, "log_every": 1},
             launch={"executor": "slurm", "time_min": 10, "cpus_per_task": 1})


@pytest.mark.slurm
def test_kdbench_run_through_slurm(slurm_cluster: None, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    results = tmp_path / "results"
    out = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(suite), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = {r["axes"]["method"]: r for r in RunStore(results)}
    assert set(records) == {"teacher", "none", "kd"}
    assert all(r["status"] == "complete" for r in records.values())
    assert records["kd"]["started"] >= records["teacher"]["finished"]  # afterok on the teacher
    assert list((results / "slurm").rglob("*.out")), "no SLURM job logs"
    again = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(suite), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "0 to run" in again.stderr


@pytest.mark.slurm
def test_a_run_of_two_slurm_tasks_trains_as_one_process_does(
    slurm_cluster: None, tmp_path: Path
) -> None:
    """``launch.tasks_per_node: 2``: each run is one job of 2 tasks (gloo ranks); its first
    loss agrees with the in-process run's within 1e-5 and its mIoU within 0.5."""
    import json

    import torch

    from kdbench.config import load_suite
    from kdbench.train.run import train_run

    launch = {**SUITE["launch"], "tasks_per_node": 2}
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(yaml.safe_dump({**SUITE, "methods": ["kd"], "launch": launch}))
    results = tmp_path / "results"
    dry = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(suite_path), "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )
    assert "--ntasks-per-node=2" in dry.stdout and "srun --kill-on-bad-exit=1" in dry.stdout
    out = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(suite_path), "--results", str(results)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    torch.set_num_threads(1)
    alone = tmp_path / "alone"
    for spec in load_suite(suite_path).runs:
        single = train_run(spec, alone)
        double = RunStore(results).load(spec.id)
        assert double["status"] == "complete" and double["env"]["processes"] == 2
        assert double["attempts"][0]["job"]  # trained in a SLURM job
        losses = [
            json.loads(RunStore(r).history_path(spec.id).read_text())[0]["loss"]
            for r in (alone, results)
        ]
        assert abs(losses[0] - losses[1]) < 1e-5
        assert abs(single["metrics"]["miou"] - double["metrics"]["miou"]) < 0.5
