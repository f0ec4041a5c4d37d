"""What a training run knows about where it runs: its attempt, and requests to stop early.

A run may be started several times: resumed after Ctrl-C, or requeued by SLURM after its
pre-timeout signal or a pre-emption. Each start is an *attempt*, recorded in the run's record
(``attempts``: SLURM job id and restart count, host, pid, start and end time, outcome).

A stop request (a signal caught by :func:`stop_on`) is only a flag: the training loop looks at
it after every step, writes its checkpoint at that step boundary and raises :class:`Stopped`,
so the state saved is always a consistent one, never the middle of an optimiser step.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable
from typing import Any

_requested: str | None = None


class Stopped(Exception):
    """Raised by the training loop after it checkpointed because a stop was requested."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped at step {step} ({reason}); the checkpoint resumes it")
        self.reason = reason
        self.step = step


def request_stop(reason: str) -> None:
    """Ask the running training loop to checkpoint and stop after its current step."""
    global _requested
    _requested = reason


def stop_requested() -> str | None:
    """The reason of a pending stop request, or None."""
    return _requested


def clear_stop() -> None:
    global _requested
    _requested = None


def stop_on(signals: Iterable[signal.Signals]) -> None:
    """Turn each of ``signals`` into a stop request named after it (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        request_stop(signal.Signals(signum).name)

    for sig in signals:
        signal.signal(sig, handler)


def slurm_job_id() -> str | None:
    """This job's id as ``scontrol`` and ``squeue`` name it (``ARRAY_TASK`` for an array task)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def slurm_restarts() -> int:
    """How many times SLURM has requeued this job (``SLURM_RESTART_COUNT``; 0 outside SLURM)."""
    text = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(text) if text.isdigit() else 0


def current_attempt() -> dict[str, Any]:
    """The record entry of this attempt: ``job`` (None outside SLURM), ``restart``, ``host``,
    ``pid``, ``started`` (Unix time); :func:`end_attempt` adds ``ended`` and ``outcome``."""
    return {
        "job": slurm_job_id(),
        "restart": slurm_restarts(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
    }


def end_attempt(attempt: dict[str, Any], outcome: str) -> dict[str, Any]:
    return {**attempt, "ended": time.time(), "outcome": outcome}
