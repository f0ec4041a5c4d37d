"""A real suite through the CLI on the real SLURM cluster: teachers, then students, as arrays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdbench.results.store import RunStore

SUITE = {
    "name": "slurm-tiny",
    "seeds": [0],
    "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 8, "eval_samples": 4}},
    "students": ["test_resnet"],
    "methods": ["none", "kd"],
    "train": {"steps": 2, "batch_size": 4, "log_every": 1},
    "launch": {"executor": "slurm", "time_min": 10, "cpus_per_task": 1},
}


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
