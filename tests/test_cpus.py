"""The CPUs a process may use and torch's thread pools (each case in a fresh interpreter, since
torch's inter-op pool can be sized only once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kdbench.cpus import _positive_int, available_cpus

PROBE = (
    "import json, os, sys\n"
    "os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')})\n"
    "from kdbench.cpus import configure_threads\n"
    "print(json.dumps(configure_threads()))\n"
)


def probe(cpus: str, **env: str) -> dict:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SLURM_CPUS_PER_TASK")
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, cpus],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


needs_two = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs a process allowed on 2 CPUs"
)


def test_slurm_cpus_per_task_caps_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    n = len(os.sched_getaffinity(0))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert available_cpus() == n
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(n + 5))  # never more than the affinity
    assert available_cpus() == n


def test_slurm_values_are_parsed_or_ignored() -> None:
    assert _positive_int("4") == 4
    assert _positive_int("2(x3)") == 2
    assert _positive_int("0") is None
    assert _positive_int("") is None
    assert _positive_int("many") is None


@pytest.mark.slow
@needs_two
def test_threads_follow_the_affinity_mask() -> None:
    assert probe("0") == {"cpus": 1, "threads": 1, "interop_threads": 1, "source": "affinity"}
    two = probe("0,1")
    assert (two["cpus"], two["threads"], two["interop_threads"]) == (2, 2, 2)


@pytest.mark.slow
@needs_two
def test_threads_follow_slurm_cpus_per_task_and_an_explicit_omp_setting() -> None:
    slurm = probe("0,1", SLURM_CPUS_PER_TASK="1")
    assert (slurm["threads"], slurm["interop_threads"], slurm["source"]) == (
        1,
        1,
        "SLURM_CPUS_PER_TASK",
    )
    omp = probe("0,1", OMP_NUM_THREADS="1")
    assert (omp["cpus"], omp["threads"], omp["source"]) == (2, 1, "OMP_NUM_THREADS")
