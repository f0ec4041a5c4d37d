"""The executor contract.

A suite expands into *waves* of run specs: wave 0 holds the teachers, wave 1 the students, and
every student names its teacher's run id (``spec.teacher_id``). An executor trains the runs that
are not complete yet, each through ``train_run(spec, results_dir)`` (in
:mod:`kdbench.train.run`), which writes the run's record to the store and returns it; a failed
run returns a record with ``status == "failed"`` instead of raising. A student whose teacher
failed is not started: its record says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

RunFn = Callable[[Any, str], dict[str, Any]]
"""``train_run(spec, results_dir) -> record``; picklable (it lives in the installed package)."""


class Executor(Protocol):
    """Trains waves of run specs in order; returns one record per spec."""

    def run(
        self, waves: Sequence[Sequence[Any]], results_dir: Path, fn: RunFn
    ) -> list[dict[str, Any]]: ...
