"""The in-process executor: trains the runs of a launch one after the other in this process.

On a CPU machine this is the fastest choice (torch already uses every core inside one run).
It prints one progress line per log interval: runs done, the current run, its step and epoch,
and estimated times left for the run and the suite. A run that several processes train
(``launch.tasks_per_node`` or ``gpus_per_node`` > 1) is handed to its ranks on this machine
(:mod:`kdbench.launch.spawn`), one run after the other as well.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from kdbench.config import stage_of
from kdbench.launch.base import RunFn
from kdbench.launch.schedule import Schedule
from kdbench.launch.spawn import train_spawned
from kdbench.results.store import RunStore


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressPrinter:
    """Progress lines for a sequence of runs; the suite ETA is the mean time of finished runs of
    each kind times the runs of that kind still to do, divided by the ``parallel`` runs that
    train at once. Several runs may be in flight: each line names its run."""

    def __init__(self, runs: Sequence[Any], stream: TextIO = sys.stderr, parallel: int = 1) -> None:
        self.total = len(runs)
        kinds = dict.fromkeys(("teacher", "student", *(r.kind for r in runs)))  # + "trial"
        self.todo = {kind: sum(1 for r in runs if r.kind == kind) for kind in kinds}
        self.durations: dict[str, list[float]] = {kind: [] for kind in kinds}
        self.done = 0
        self.stream = stream
        self.parallel = parallel
        self.started: dict[str, float] = {}

    def start(self, spec: Any) -> None:
        self.started[spec.id] = time.perf_counter()

    def finish(self, spec: Any, record: dict[str, Any]) -> None:
        self.done += 1
        self.todo[spec.kind] -= 1
        started = self.started.pop(spec.id, time.perf_counter())
        self.durations[spec.kind].append(time.perf_counter() - started)
        miou = (record.get("metrics") or {}).get("miou")
        result = f"mIoU {miou:.2f}" if miou is not None else record.get("error", record["status"])
        print(
            f"[{self.done}/{self.total}] {spec.describe()}  {record['status']}: {result}",
            file=self.stream,
            flush=True,
        )

    def suite_eta(self, run_eta: float) -> float | None:
        others = 0.0
        for kind, count in self.todo.items():
            remaining = count - 1 if count else 0
            if remaining and not self.durations[kind]:
                return None
            if remaining:
                others += remaining * sum(self.durations[kind]) / len(self.durations[kind])
        return run_eta + others / self.parallel

    def __call__(self, spec: Any, info: dict[str, Any]) -> None:
        print(
            f"[{self.done}/{self.total} done] {spec.describe()}"
            f"  step {info['step']}/{info['total']} epoch {info['epoch']}  loss {info['loss']:.4f}"
            f"  run ETA {format_seconds(info['eta_s'])}"
            f"  suite ETA {format_seconds(self.suite_eta(info['eta_s']))}",
            file=self.stream,
            flush=True,
        )


class LocalExecutor:
    """Trains every run in this process, each once the runs it needs are complete
    (:class:`~kdbench.launch.schedule.Schedule`); a run that needs a failed run is not started,
    and its failed record names that run.

    Runs another live process is training (it holds their lease) are passed over, then waited
    for once nothing else is ready, so that every process of a suite ends with every record.
    """

    def __init__(
        self, stream: TextIO = sys.stderr, processes: Mapping[str, int] | None = None
    ) -> None:
        self.stream = stream
        self.processes = dict(processes or {})
        """Processes per run by launch stage (``teacher``/``student``, see
        :func:`kdbench.config.stage_of`; 1 when absent): a run with several trains in that many
        local ranks (:mod:`kdbench.launch.spawn`)."""

    def run(self, runs: Sequence[Any], results_dir: Path, fn: RunFn) -> list[dict[str, Any]]:
        schedule = Schedule(runs, RunStore(results_dir))
        printer = ProgressPrinter([s for s in runs if s.id not in schedule.records], self.stream)
        report(printer, schedule.block())
        later: list[Any] = []  # runs another live process holds: waited for last
        while (ready := schedule.ready()) or later:
            spec, wait = (ready[0], False) if ready else (later.pop(0), True)
            printer.start(spec)
            record = self._train(spec, results_dir, fn, printer, wait)
            if record["status"] == "running":
                schedule.take(spec)
                later.append(spec)
                print(f"{spec.describe()}: {record['error']}; later", file=self.stream)
                continue
            printer.finish(spec, record)
            report(printer, schedule.finish(spec, record))
        return schedule.ordered_records(runs)

    def _train(
        self, spec: Any, results_dir: Path, fn: RunFn, printer: ProgressPrinter, wait: bool
    ) -> dict[str, Any]:
        """``fn`` on ``spec`` in this process, or in its stage's number of local ranks."""
        n = self.processes.get(stage_of(spec.kind), 1)
        if n > 1:
            return train_spawned(fn, spec, str(results_dir), n, printer, wait)
        return fn(spec, str(results_dir), progress=printer, wait=wait)


def report(printer: ProgressPrinter, blocked: list[tuple[Any, dict[str, Any]]]) -> None:
    """Print the runs a failure blocked (they count as done)."""
    for spec, record in blocked:
        printer.start(spec)
        printer.finish(spec, record)
