"""The run store: one folder per run under ``<results>/runs/<run id>/``.

Each run folder holds ``record.json`` (the record below, written atomically by a temp file and a
rename, so a reader never sees half a record, see :mod:`kdbench.results.files`),
``history.json`` (the training curves, kept apart so that tables never parse them), ``model.pt``
(the final weights) and, while the run trains, ``checkpoint.pt`` and ``lease.json`` (the one
process allowed to write the run, see :mod:`kdbench.results.lease`; ``.lease.lock`` serialises
taking it). A record that cannot be read or lacks a required field is *corrupt*
(:class:`CorruptRecord`, with the reason); :meth:`RunStore.quarantine` moves it aside.

A record is a JSON object:

- ``id``: the run id (12 hex digits, a hash of the resolved config), ``suite``: the suite name;
- ``kind``: ``"teacher"`` or ``"student"``;
- ``status``: ``"complete"``, ``"failed"`` or ``"running"`` (:meth:`RunStore.status` adds
  ``"interrupted"``: running, but no live process holds the lease; ``"corrupt"``; ``"missing"``);
- ``axes``: the grid coordinates used by tables: ``dataset``, ``student`` (backbone name; for a
  teacher, its RGB backbone), ``method`` (row label, e.g. ``"kd"``, ``"kd+cwd"``; ``"teacher"``
  for teachers), ``seed``, ``teacher`` (the teacher's run id; null for a teacher);
- ``config``: the fully resolved run config (the run spec as a dict);
- ``metrics`` (complete runs): ``miou``, ``mfsc``, ``pixel_acc`` in percent, ``per_class_iou``
  {class name: percent or null when the class never occurs}, on the evaluation split, for the
  final model;
- ``best_val`` (runs with ``train.eval_every``): the best periodic evaluation by mIoU, ``step``,
  ``miou``, ``mfsc``, ``pixel_acc``, ``per_class_iou``, ``per_class_fsc`` (never the headline;
  its weights are ``model_best.pt``); null without periodic evaluation;
- ``timing``: ``wall_time_s``, ``step_time_s`` (mean seconds per training step), ``peak_memory_mb``;
- ``cost``: ``flops_per_step`` {``teacher_forward``, ``student`` (forward + backward with the
  task loss), ``loss`` (distillation terms forward + backward), ``total``}, counted on the
  first batch (:mod:`kdbench.train.cost`); ``steps`` trained, ``flops`` (= total × steps),
  ``step_s_median`` (after warm-up), ``peak_memory_mb`` and its source, ``device_hours``;
  ``budget`` (the budget and how the step count was derived, :mod:`kdbench.train.budget`);
- ``extra_params``: trainable parameters the method adds; ``student_params``;
- ``env``: library versions, device, host; ``error`` (failed runs): one line; ``traceback``;
- ``provenance``: ``kdbench`` version, ``package_hash`` (all package source), ``git`` (commit and
  dirty flag, or null); ``sessions``: who trained the run (host, pid, SLURM job, start step);
  ``resumed_from``: the steps it resumed at.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.results.files import storage_error, write_json_atomic
from kdbench.results.lease import is_live, read_lease

RUN_ID = re.compile(r"^[0-9a-f]{12}$")
STATUSES = ("complete", "failed", "running")
"""The ``status`` of a stored record (a run stopped on request stays ``running``, with a
``stopped`` field: its checkpoint resumes it)."""


class RunStore:
    """The records and checkpoints of the runs under one results folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        if not RUN_ID.match(run_id):
            raise KdbenchError(f"run id {run_id!r}: expected 12 lowercase hex digits")
        return self.root / "runs" / run_id

    def record_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "record.json"

    def checkpoint_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoint.pt"

    def history_path(self, run_id: str) -> Path:
        """The training curves: a JSON list of ``{"step", "epoch", "loss", "losses": {term:
        value}, "lr"}`` entries and periodic ``{"step", "eval": {metrics}}`` entries."""
        return self.run_dir(run_id) / "history.json"

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The training curves of ``run_id`` (empty if it has none yet)."""
        path = self.history_path(run_id)
        if not path.exists():
            return []
        try:
            return list(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise KdbenchError(f"{path}: not a readable training history ({exc})") from None

    def write(self, record: dict[str, Any]) -> Path:
        """Write ``record`` atomically; a record that is not complete never replaces a complete
        one (the complete one stays and its path is returned)."""
        path = self.record_path(record["id"])
        if record.get("status") != "complete":
            current, _ = self.inspect(record["id"])
            if current is not None and current.get("status") == "complete":
                return path
        write_json_atomic(path, record)
        return path

    def load(self, run_id: str) -> dict[str, Any] | None:
        """The record of ``run_id``, or None if it has none; a corrupt file is a
        :class:`CorruptRecord` error naming the file and the reason."""
        path = self.record_path(run_id)
        if not path.exists():
            return None
        return read_record(path)

    def inspect(self, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """``(record, None)``, ``(None, None)`` when there is none, ``(None, reason)`` when the
        record cannot be read or lacks a required field."""
        try:
            return self.load(run_id), None
        except CorruptRecord as exc:
            return None, exc.reason

    def quarantine(self, run_id: str) -> Path:
        """Move the run's unreadable record aside (``record.json.corrupt-<n>``); returns the new
        path. The run then counts as missing and is trained again."""
        path = self.record_path(run_id)
        n = 0
        while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
            n += 1
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            pass  # another process moved it first
        except OSError as exc:
            raise storage_error(path, exc) from None
        return aside

    def status(self, run_id: str) -> str:
        """``complete``, ``failed``, ``running`` (a live lease holds it), ``interrupted`` (its
        record says running but no live process holds it), ``corrupt`` or ``missing``."""
        record, problem = self.inspect(run_id)
        if problem is not None:
            return "corrupt"
        state = "missing" if record is None else str(record.get("status"))
        if state in ("running", "missing") and self.root.joinpath("runs", run_id).is_dir():
            live = is_live(read_lease(self.run_dir(run_id)))
            if live:
                return "running"
            if state == "running":
                return "interrupted"
        return state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every readable record under the folder, in run-id order (see :meth:`scan`)."""
        for _, record, _ in self.scan():
            if record is not None:
                yield record

    def scan(self) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
        """``(run id, record, None)`` or ``(run id, None, reason)`` for every record file."""
        runs = self.root / "runs"
        if not runs.is_dir():
            return
        for path in sorted(runs.glob("*/record.json")):
            try:
                yield path.parent.name, read_record(path), None
            except CorruptRecord as exc:
                yield path.parent.name, None, exc.reason


class CorruptRecord(KdbenchError):
    """A record file that cannot be read or lacks a required field; ``reason`` says which."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


REQUIRED = ("id", "kind", "status")
"""Fields every record has; a complete record also has ``metrics`` with a numeric ``miou``."""


def problem(record: Any) -> str | None:
    """Why ``record`` is not a usable run record, or None."""
    if not isinstance(record, dict):
        return "not a run record (expected a JSON object)"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"incomplete record: no {', '.join(missing)}"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r}"
    if record["status"] == "complete":
        metrics = record.get("metrics")
        miou = metrics.get("miou") if isinstance(metrics, dict) else None
        if isinstance(miou, bool) or not isinstance(miou, int | float):
            return "incomplete record: complete without metrics.miou"
    return None


def read_record(path: Path) -> dict[str, Any]:
    """The record in ``path``; a :class:`CorruptRecord` error if it is unreadable."""
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise CorruptRecord(path, f"not a readable run record ({exc})") from None
    reason = problem(record)
    if reason is not None:
        raise CorruptRecord(path, reason)
    return record
