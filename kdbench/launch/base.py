"""The executor contract.

A launch is a list of run specs; each names the runs it needs (``spec.needs``: its teacher, its
tuning trials, a method's stage), and :mod:`kdbench.launch.schedule` decides from those edges
and the store's records what may start. An executor trains the runs that are not complete yet,
each once its needs are complete, through ``train_run(spec, results_dir)`` (in
:mod:`kdbench.train.run`), which writes the run's record to the store and returns it; a failed
run returns a record with ``status == "failed"`` instead of raising. A run that needs a failed
run is not started: its record names that run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from kdbench.errors import KdbenchError
from kdbench.results.store import RunStore

RunFn = Callable[..., dict[str, Any]]
"""``train_run(spec, results_dir, progress=None, wait=False) -> record``; picklable (it lives in
the installed package). ``progress`` is an optional callback for in-process progress lines;
``wait`` makes it wait for a run another live process holds instead of returning that run's
``status == "running"`` record (see :func:`kdbench.train.run.train_run`)."""


class Executor(Protocol):
    """Trains run specs, each after the runs it needs; returns one record per spec."""

    def run(self, runs: Sequence[Any], results_dir: Path, fn: RunFn) -> list[dict[str, Any]]: ...


def failed_record(spec: Any, error: str, traceback: str | None = None) -> dict[str, Any]:
    """A ``status == "failed"`` record for ``spec`` (schema in :mod:`kdbench.results.store`).

    ``config`` is ``spec.to_dict()`` (a RunSpec), else the spec as a dict when it is a
    dataclass; ``suite`` and ``axes`` are copied when the spec has them.
    """
    record: dict[str, Any] = {
        "id": spec.id,
        "kind": spec.kind,
        "status": "failed",
        "error": error,
        "traceback": traceback,
    }
    if hasattr(spec, "to_dict"):
        record["config"] = spec.to_dict()
    elif dataclasses.is_dataclass(spec):
        record["config"] = dataclasses.asdict(spec)
    for key in ("suite", "axes"):
        if hasattr(spec, key):
            record[key] = getattr(spec, key)
    return record


def fail_unless_complete(
    store: RunStore, spec: Any, error: str, traceback: str | None = None
) -> dict[str, Any]:
    """Write and return a failed record for ``spec``, unless the store holds a complete one:
    that one is returned untouched. The earlier starts (``attempts``) of a run are kept."""
    try:
        stored = store.load(spec.id)
    except KdbenchError:  # unreadable: the failed record replaces it
        stored = None
    if stored is not None and stored.get("status") == "complete":
        return stored
    record = failed_record(spec, error, traceback)
    if stored is not None and stored.get("attempts"):
        record["attempts"] = stored["attempts"]
    store.write(record)
    return record
