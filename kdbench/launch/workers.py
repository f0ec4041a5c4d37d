"""The local parallel executor: several runs of a suite at once, in worker processes.

``WorkerExecutor(jobs=N)`` starts N worker processes (``spawn``: a fresh interpreter each, so
torch sizes its thread pools for that worker). Worker ``i`` is pinned
(``os.sched_setaffinity``) to its share of this process's CPUs, ``cpu_shares(cpus, N)[i]``,
and, where the runs train on CUDA, sees one GPU of those visible (``CUDA_VISIBLE_DEVICES``).
Inside, :func:`kdbench.cpus.configure_threads` then sizes torch to that share.

Scheduling: the runs are handed out in the order of the waves; a student is handed out only
once its teacher's record is complete (a student of a failed teacher is not started: its
record says so, as with the in-process executor). A worker that dies (killed, out of memory)
fails the run it held, and a new worker takes its CPUs.

Progress: each worker sends its run's progress to this process, which prints the same lines
as the in-process executor. Ctrl-C (SIGINT to the terminal's process group) asks every worker
to checkpoint its run at the next step boundary and exit (:mod:`kdbench.launch.context`); this
process waits for them (at most ``STOP_WAIT_S``, then kills them) and raises
KeyboardInterrupt, so ``kdbench run`` says, as before, that finished runs are kept and that
running it again resumes.

Metrics are those of one run at a time: a run's result depends on its spec and seed only
(every random draw is seeded from the run's seed and step), not on what else trains; the
thread count is recorded in the record's ``env``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from kdbench.errors import KdbenchError
from kdbench.launch.base import RunFn, fail_unless_complete, failed_record
from kdbench.launch.local import ProgressPrinter
from kdbench.launch.placement import STOP_WAIT_S, cpu_shares, own_cpus, visible_gpus
from kdbench.results.store import RunStore


def check_jobs(jobs: Any, where: str = "launch.jobs") -> int:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise KdbenchError(f"{where}: expected an integer >= 1, got {jobs!r}")
    return jobs


def check_local_options(options: dict[str, Any]) -> None:
    """Validate the local executors' ``launch:`` options: ``jobs``, and the processes per run
    (``tasks_per_node``, ``gpus_per_node``, also in ``teacher:``/``student:`` overrides)."""
    from kdbench.launch.slurm_options import PARALLEL, STAGES, check_value

    local = [k for k in PARALLEL if k != "nodes"]
    for key, value in options.items():
        if key == "jobs":
            check_jobs(value)
        elif key in local:
            check_value(key, value)
        elif key in STAGES and isinstance(value, dict):
            for name, inner in value.items():
                if name not in local:
                    raise KdbenchError(
                        f"launch.{key}.{name}: the local executor takes {' and '.join(local)} "
                        "per stage"
                    )
                check_value(name, inner, f"launch.{key}")
        else:
            raise KdbenchError(
                f"launch.{key}: the local executor takes jobs, {', '.join(local)} and teacher/"
                "student overrides of them"
            )


def _worker(
    cpus: set[int],
    gpu: str | None,
    tasks: Any,
    events: Any,
    fn: RunFn,
    results_dir: str,
) -> None:
    """A worker process: pin itself, then train the specs it is sent until it is sent None."""
    from kdbench.launch.context import Stopped, stop_on

    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere workers are not pinned
        os.sched_setaffinity(0, cpus)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    stop_on([signal.SIGINT, signal.SIGTERM])

    def progress(spec: Any, info: dict[str, Any]) -> None:
        events.put(("progress", spec.id, info))

    while (spec := tasks.get()) is not None:
        try:
            events.put(("done", spec.id, fn(spec, results_dir, progress=progress, wait=True)))
        except Stopped:
            events.put(("stopped", spec.id, None))
            return
        except BaseException:  # fn returns failed records; anything else is reported, not lost
            error = traceback.format_exc()
            events.put(("crashed", spec.id, error))
            return


class WorkerExecutor:
    """Trains up to ``jobs`` runs at once in pinned worker processes (see the module doc)."""

    def __init__(self, jobs: int, stream: TextIO = sys.stderr, poll_s: float = 1.0) -> None:
        self.jobs = check_jobs(jobs, "--jobs")
        self.stream = stream
        self.poll_s = poll_s
        self.shares = cpu_shares(sorted(own_cpus()), self.jobs)

    def run(
        self, waves: Sequence[Sequence[Any]], results_dir: Path, fn: RunFn
    ) -> list[dict[str, Any]]:
        specs = [spec for wave in waves for spec in wave]
        gpus = self._gpus(specs)
        store = RunStore(results_dir)
        n_workers = min(self.jobs, len(specs))
        printer = ProgressPrinter(specs, self.stream, parallel=n_workers)
        in_launch = {spec.id for spec in specs}
        ready = [s for s in specs if s.teacher_id not in in_launch]
        waiting = [s for s in specs if s.teacher_id in in_launch]
        records: dict[str, dict[str, Any]] = {}
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        workers: list[dict[str, Any]] = [{} for _ in range(n_workers)]
        by_id = {spec.id: spec for spec in specs}

        def start_worker(i: int) -> None:
            tasks = ctx.Queue()
            process = ctx.Process(
                target=_worker,
                args=(
                    self.shares[i],
                    gpus[i] if gpus else None,
                    tasks,
                    events,
                    fn,
                    str(results_dir),
                ),
                name=f"kdbench-worker-{i}",
            )
            process.start()
            workers[i] = {"process": process, "tasks": tasks, "run": None}

        def finish(spec: Any, record: dict[str, Any]) -> None:
            records[spec.id] = record
            printer.finish(spec, record)
            for student in [s for s in waiting if s.teacher_id == spec.id]:
                waiting.remove(student)
                if record["status"] == "complete":
                    ready.append(student)
                else:
                    reason = record.get("error", "failed")
                    blocked = failed_record(
                        student, f"not started: teacher run {spec.id} failed ({reason})"
                    )
                    store.write(blocked)
                    printer.start(student)
                    finish(student, blocked)

        try:
            for i in range(n_workers):
                start_worker(i)
            while ready or any(w["run"] for w in workers):
                for worker in workers:
                    if worker["run"] is None and ready:
                        spec = ready.pop(0)
                        worker["run"] = spec.id
                        printer.start(spec)
                        worker["tasks"].put(spec)
                self._handle(events, workers, by_id, printer, finish, store, start_worker)
        except BaseException:  # Ctrl-C included: checkpoint what trains, then re-raise
            self._stop(workers)
            raise
        for worker in workers:
            worker["tasks"].put(None)
        for worker in workers:
            worker["process"].join()
        return [records[spec.id] for spec in specs]

    def _gpus(self, specs: Sequence[Any]) -> list[str]:
        """One visible GPU per worker when the runs train on CUDA; [] for CPU runs."""
        if not specs or all(spec.device == "cpu" for spec in specs):
            return []
        gpus = visible_gpus()
        if not gpus:
            return []
        if self.jobs > len(gpus):
            raise KdbenchError(
                f"--jobs {self.jobs}: only {len(gpus)} GPU(s) visible; one run per GPU at a time"
            )
        return gpus[: self.jobs]

    def _handle(
        self,
        events: Any,
        workers: list[dict[str, Any]],
        by_id: dict[str, Any],
        printer: ProgressPrinter,
        finish: Any,
        store: RunStore,
        start_worker: Any,
    ) -> None:
        """Handle one message from the workers (or notice a dead worker after ``poll_s``)."""
        try:
            kind, run_id, payload = events.get(timeout=self.poll_s)
        except queue.Empty:
            for i, worker in enumerate(workers):
                process = worker["process"]
                if worker["run"] is not None and not process.is_alive():
                    spec = by_id[worker["run"]]
                    error = f"worker process died (exit code {process.exitcode}) during the run"
                    worker["run"] = None
                    finish(spec, fail_unless_complete(store, spec, error))
                    start_worker(i)
            return
        holders = [i for i, w in enumerate(workers) if w["run"] == run_id]
        if not holders:  # a late message of a run already given up on
            return
        worker_index, spec = holders[0], by_id[run_id]
        if kind == "progress":
            printer(spec, payload)
            return
        workers[worker_index]["run"] = None
        if kind == "done":
            finish(spec, payload)
        elif kind == "stopped":
            raise KeyboardInterrupt
        else:
            last = payload.rstrip().splitlines()[-1]
            finish(spec, fail_unless_complete(store, spec, f"worker crashed: {last}", payload))
            workers[worker_index]["process"].join()
            start_worker(worker_index)

    @staticmethod
    def _stop(workers: list[dict[str, Any]]) -> None:
        """Ask every worker to checkpoint and exit; kill those still alive after STOP_WAIT_S."""
        for worker in workers:
            process = worker.get("process")
            if process is not None and process.is_alive():
                worker["tasks"].put(None)  # an idle worker waits for a task, not for a signal
                os.kill(process.pid, signal.SIGTERM)
        for worker in workers:
            process = worker.get("process")
            if process is not None:
                process.join(STOP_WAIT_S)
                if process.is_alive():
                    process.kill()
                    process.join()
