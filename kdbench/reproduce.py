"""``kdbench reproduce RESULTS RUN_ID``: train one recorded run again from its record alone.

The record's ``config`` is the fully resolved run spec, so it rebuilds the run without the
suite file. A student run needs its teacher: the teacher is reproduced first from its own
record (in RESULTS) unless the output folder already holds it complete (the baseline, which
never runs its teacher, reproduces alone). Both train into the
output folder (never into RESULTS), and the reproduced metrics are compared with the recorded
ones: on the CPU the same code, config and seed give the same metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdbench.config import RunSpec
from kdbench.errors import KdbenchError
from kdbench.results.store import RUN_ID, RunStore


def command(results: str | Path, run_id: str) -> str:
    """The shell command that reproduces ``run_id`` of the results folder ``results``."""
    return f"kdbench reproduce {results} {run_id}"


def _record(store: RunStore, run_id: str) -> dict[str, Any]:
    if not RUN_ID.match(run_id):
        raise KdbenchError(f"run id {run_id!r}: expected 12 hex digits")
    record = store.load(run_id)
    if record is None or "config" not in record:
        raise KdbenchError(f"run {run_id}: no record with a config in {store.root}")
    return record


def reproduce(results: str | Path, run_id: str, out: str | Path) -> list[tuple[dict, dict]]:
    """Train ``run_id`` (and its teacher if needed) into ``out``; (recorded, reproduced) pairs."""
    from kdbench.train.run import train_run

    source = RunStore(results)
    if Path(out).resolve() == source.root.resolve():
        raise KdbenchError("--out: expected a folder other than the results folder")
    target = RunStore(out)
    record = _record(source, run_id)
    spec = RunSpec.from_dict(record["config"])
    pairs = []
    needs_teacher = bool(spec.method_terms) or "match" in (spec.train.get("budget") or {})
    if spec.teacher_id and needs_teacher and target.status(spec.teacher_id) != "complete":
        teacher = _record(source, spec.teacher_id)
        pairs.append((teacher, train_run(RunSpec.from_dict(teacher["config"]), out)))
    pairs.append((record, train_run(spec, out)))
    return pairs
