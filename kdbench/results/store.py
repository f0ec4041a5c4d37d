"""The run store: one folder per run under ``<results>/runs/<run id>/``.

Each run folder holds ``record.json`` (the record below, written atomically by a temp file and a
rename, so a reader never sees half a record), ``history.json`` (the training curves, kept apart
so that tables never parse them), ``model.pt`` (the final weights) and, while the run trains,
``checkpoint.pt``.

A record is a JSON object:

- ``id``: the run id (12 hex digits, a hash of the resolved config), ``suite``: the suite name;
- ``kind``: ``"teacher"`` or ``"student"``;
- ``status``: ``"complete"``, ``"failed"`` or ``"running"``;
- ``axes``: the grid coordinates used by tables: ``dataset``, ``student`` (backbone name; for a
  teacher, its RGB backbone), ``method`` (row label, e.g. ``"kd"``, ``"kd+cwd"``; ``"teacher"``
  for teachers), ``seed``, ``teacher`` (the teacher's run id; null for a teacher);
- ``config``: the fully resolved run config (the run spec as a dict);
- ``metrics`` (complete runs): ``miou``, ``mfsc``, ``pixel_acc`` in percent, ``per_class_iou``
  {class name: percent or null when the class never occurs}, on the evaluation split, for the
  final model; ``best_val`` the best periodic evaluation (logged, never the headline);
- ``timing``: ``wall_time_s``, ``step_time_s`` (mean seconds per training step), ``peak_memory_mb``;
- ``cost``: ``flops_per_step`` {``teacher_forward``, ``student`` (forward + backward with the
  task loss), ``loss`` (distillation terms forward + backward), ``total``}, counted on the
  first batch (:mod:`kdbench.train.cost`); ``steps`` trained, ``flops`` (= total × steps),
  ``step_s_median`` (after warm-up), ``peak_memory_mb`` and its source, ``device_hours``;
  ``budget`` (the budget and how the step count was derived, :mod:`kdbench.train.budget`);
- ``extra_params``: trainable parameters the method adds; ``student_params``;
- ``env``: library versions, device, host; ``error`` (failed runs): one line; ``traceback``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError

RUN_ID = re.compile(r"^[0-9a-f]{12}$")
STATUSES = ("complete", "failed", "running", "missing")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        path = self.record_path(record["id"])
        write_json_atomic(path, record)
        return path

    def load(self, run_id: str) -> dict[str, Any] | None:
        """The record of ``run_id``, or None if it has none; a corrupt file is a KdbenchError."""
        path = self.record_path(run_id)
        if not path.exists():
            return None
        return read_record(path)

    def status(self, run_id: str) -> str:
        record = self.load(run_id)
        return "missing" if record is None else str(record.get("status", "failed"))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every record under the folder, in run-id order."""
        runs = self.root / "runs"
        if not runs.is_dir():
            return
        for path in sorted(runs.glob("*/record.json")):
            yield read_record(path)


def read_record(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise KdbenchError(f"{path}: not a readable run record ({exc})") from None
    if not isinstance(record, dict) or "id" not in record:
        raise KdbenchError(f"{path}: not a run record (expected a JSON object with an 'id')")
    return record
