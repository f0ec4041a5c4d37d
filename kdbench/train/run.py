"""One run from spec to record: its lease and record life cycle around a training session.

``train_run(spec, results_dir)`` is what every executor calls, in this process or in a SLURM
job. It never loses a finished result: a complete record is returned as it is, and a failure
writes a ``failed`` record (one-line error plus traceback) instead of raising. The training
itself is :func:`kdbench.train.session.train`, or the executor a kind of run registered
(:func:`executor`).
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdbench.config import RunSpec, executor_of
from kdbench.distributed import Decision, current, leader_decides
from kdbench.provenance import provenance
from kdbench.registry import load_plugin_files
from kdbench.results.files import StorageError, remove_temp_files
from kdbench.results.lease import Lease, describe, read_lease
from kdbench.results.store import RunStore
from kdbench.train.context import Stopped, current_attempt, end_attempt
from kdbench.train.fit import Progress
from kdbench.train.session import train


def train_run(
    spec: RunSpec,
    results_dir: str | Path,
    progress: Progress | None = None,
    wait: bool = False,
) -> dict[str, Any]:
    """Train and evaluate ``spec`` unless its record is complete; return its record.

    One writer per run: training happens under the run's lease (:mod:`kdbench.results.lease`).
    When another live process holds it, the run is left to that process: the returned record
    has ``status == "running"`` and ``holder`` (nothing is written), or, with ``wait``, this
    waits until that process is done and returns its record (taking the run over if it died).
    A distilling student first waits for its teacher while a live process trains it. An
    unreadable record is moved aside and the run trained again. A storage problem (full disk,
    no permission) raises :class:`~kdbench.results.files.StorageError`; any other failure
    becomes a ``failed`` record, which never replaces a complete one. A stop request
    (:mod:`kdbench.train.context`) checkpoints the run at a step boundary, records the attempt
    as ``stopped`` (the record stays ``running``: the checkpoint resumes it) and raises
    :class:`Stopped` to the caller.

    When several processes train the run (:mod:`kdbench.distributed`), every rank calls
    this: rank 0 does all of the above and tells the others whether it trains; they train
    beside it, write nothing, and return ``{"status": "follower"}``.
    """
    store = RunStore(results_dir)
    if not current().writer:
        return _follow(spec, store)
    decision = Decision()
    try:
        return _lead(spec, store, progress, wait, decision)
    finally:
        decision.tell(False)  # the run did not train here: the other ranks return too


Executor = Callable[[RunSpec, RunStore, "Progress | None"], dict[str, Any]]


def executor(kind: str) -> Executor:
    """What executes a run of ``kind``: :func:`~kdbench.train.session.train`, or the function
    its :func:`~kdbench.config.register_kind` named (imported here, in the process that runs)."""
    target = executor_of(kind)
    if target is None:
        return train
    module, _, name = target.partition(":")
    function: Executor = getattr(importlib.import_module(module), name)
    return function


def _follow(spec: RunSpec, store: RunStore) -> dict[str, Any]:
    """A rank other than 0 of a data-parallel run: train beside rank 0 when it does, write
    nothing. Its return value only says so; rank 0's is the run's record."""
    if leader_decides():
        executor(spec.kind)(spec, store, None)
    return {"id": spec.id, "status": "follower", "rank": current().rank}


def _lead(
    spec: RunSpec, store: RunStore, progress: Progress | None, wait: bool, decision: Decision
) -> dict[str, Any]:
    """:func:`train_run` in rank 0 (or the only process)."""
    existing = _usable_record(store, spec.id)
    if existing is not None and existing.get("status") == "complete":
        return existing
    if spec.teacher_id is not None:
        wait_for(store, spec.teacher_id)
    lease = Lease(store.run_dir(spec.id))
    while (holder := lease.acquire()) is not None:
        if not wait:
            return busy_record(spec, holder)
        wait_for(store, spec.id)
    with lease:
        existing = _usable_record(store, spec.id)
        if existing is not None and existing.get("status") == "complete":
            return existing  # finished by the previous holder
        remove_temp_files(store.run_dir(spec.id))
        return _train_under_lease(spec, store, progress, lease, decision)


def _usable_record(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """The run's record; an unreadable one is moved aside (and the run counts as missing)."""
    record, problem = store.inspect(run_id)
    if problem is not None:
        aside = store.quarantine(run_id)
        print(f"kdbench: run {run_id}: {problem}; moved to {aside}, training again",
              file=sys.stderr)
    return record


def wait_for(store: RunStore, run_id: str, poll_s: float = 0.5) -> None:
    """Return once ``run_id`` is complete or no live process holds its lease."""
    while store.status(run_id) == "running":
        time.sleep(poll_s)


def busy_record(spec: RunSpec, holder: dict[str, Any]) -> dict[str, Any]:
    """The (unwritten) record of a run another live process is training."""
    return {
        "id": spec.id,
        "suite": spec.suite,
        "kind": spec.kind,
        "status": "running",
        "axes": spec.axes,
        "holder": describe(holder),
        "error": f"being trained by {describe(holder)}",
    }


def _train_under_lease(
    spec: RunSpec, store: RunStore, progress: Progress | None, lease: Lease, decision: Decision
) -> dict[str, Any]:
    existing = store.inspect(spec.id)[0]
    attempts = list((existing or {}).get("attempts", []))
    attempt = current_attempt()
    record: dict[str, Any] = {
        "id": spec.id,
        "suite": spec.suite,
        "kind": spec.kind,
        "status": "running",
        "axes": spec.axes,
        "config": spec.to_dict(),
        "provenance": provenance(),
        "started": time.time(),
        "attempts": [*attempts, attempt],
    }
    store.write(record)
    try:
        load_plugin_files(spec.plugins)
        decision.tell(True)
        record.update(executor(spec.kind)(spec, store, progress))
        record["status"] = "complete"
    except StorageError:
        raise  # the results folder cannot be written: no record can say so
    except Stopped as exc:  # still "running" for tables: it resumes from its checkpoint
        record["stopped"] = str(exc)
        record["attempts"] = [*attempts, end_attempt(attempt, "stopped")]
        store.write(record)
        raise
    except Exception as exc:  # a failed run is a record, never a lost suite
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        record.update(
            status="failed",
            error=f"{type(exc).__name__}: {message}",
            traceback=traceback.format_exc(),
        )
    record["finished"] = time.time()
    record["attempts"] = [*attempts, end_attempt(attempt, record["status"])]
    if lease.lost:  # another process took the run over (our heartbeat stalled): it writes
        return busy_record(spec, read_lease(store.run_dir(spec.id)) or {})
    store.write(record)
    return record
