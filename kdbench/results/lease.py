"""One writer per run: a lease file in the run's folder, kept alive by a heartbeat.

A process trains a run only while it holds ``<run folder>/lease.json``::

    {"host": "node7", "pid": 4242, "job": "123_4" | null, "token": "...", "heartbeat": 1.7e9}

A background thread rewrites ``heartbeat`` every :func:`expiry_s` / 4 seconds. Another process
finding a live lease leaves the run alone (or waits for it); it takes the lease over once the
holder is dead: at once when the holder is a process of the same host that no longer exists,
otherwise when the heartbeat is older than :func:`expiry_s` (``$KDBENCH_LEASE_EXPIRY_S``,
default 120 s; shorter in tests). Reading, checking and writing the lease happen under an
``flock`` of ``.lease.lock`` in the same folder, so two processes never both take a free lease.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.results.files import write_json_atomic

LEASE = "lease.json"
LOCK = ".lease.lock"
EXPIRY_ENV = "KDBENCH_LEASE_EXPIRY_S"
DEFAULT_EXPIRY_S = 120.0


def expiry_s() -> float:
    """Seconds without a heartbeat after which a lease is dead (``$KDBENCH_LEASE_EXPIRY_S``)."""
    try:
        return max(0.1, float(os.environ.get(EXPIRY_ENV, DEFAULT_EXPIRY_S)))
    except ValueError:
        return DEFAULT_EXPIRY_S


def slurm_job() -> str | None:
    """``<job>_<task>`` or ``<job>`` inside a SLURM job, else None."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def read_lease(run_dir: Path) -> dict[str, Any] | None:
    """The lease of a run folder, None when there is none or it cannot be read."""
    try:
        info = json.loads((run_dir / LEASE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def is_live(info: dict[str, Any] | None, now: float | None = None) -> bool:
    """Is the lease ``info`` held by a living process (see the module docstring)?"""
    if not info:
        return False
    heartbeat = info.get("heartbeat")
    if not isinstance(heartbeat, int | float):
        return False
    pid = info.get("pid")
    if info.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_exists(pid):
        return False
    return (time.time() if now is None else now) - heartbeat < expiry_s()


def describe(info: dict[str, Any]) -> str:
    """``host pid 4242 (SLURM job 123_4)``: who holds a lease."""
    job = f" (SLURM job {info['job']})" if info.get("job") else ""
    return f"{info.get('host')} pid {info.get('pid')}{job}"


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Lease:
    """The lease of one run folder; :meth:`acquire`, then use as a context manager (heartbeat
    while inside, release on exit, also on an exception)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "job": slurm_job(),
            "token": uuid.uuid4().hex,
        }
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> dict[str, Any] | None:
        """Take the lease unless a live process holds it; returns that holder's info, or None
        when the lease is now ours (a dead holder's lease is taken over)."""
        with _locked(self.run_dir):
            current = read_lease(self.run_dir)
            if is_live(current) and current.get("token") != self.info["token"]:  # type: ignore[union-attr]
                return current
            self._write()
        return None

    def _write(self) -> None:
        write_json_atomic(self.run_dir / LEASE, {**self.info, "heartbeat": time.time()})

    def beat(self) -> None:
        """Renew the heartbeat; sets ``lost`` if another process took the lease over."""
        with _locked(self.run_dir):
            current = read_lease(self.run_dir)
            if current is None or current.get("token") != self.info["token"]:
                self.lost = True
                return
            self._write()

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _locked(self.run_dir):
            current = read_lease(self.run_dir)
            if current is not None and current.get("token") == self.info["token"]:
                (self.run_dir / LEASE).unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(expiry_s() / 4):
            try:
                self.beat()
            except (OSError, KdbenchError):
                continue  # a full disk: keep trying; the run itself reports the error
            if self.lost:
                return

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._heartbeat, name="kdbench-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
