"""Fixtures for the executor tests: a real SLURM cluster, started by ``bash ci/slurm.sh up``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")


def _cluster_problem() -> str | None:
    """Why the SLURM cluster cannot run jobs, or None when ``sinfo`` shows a usable node."""
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    states = out.stdout.split()
    if not any(state in USABLE_NODE_STATES for state in states):  # "idle*": not responding
        return f"no usable node (sinfo states: {states})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip (locally) or fail (when the environment variable CI is set) without a cluster."""
    problem = _cluster_problem()
    if problem is not None:
        message = f"no SLURM cluster ({problem}); start one with `bash ci/slurm.sh up`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
