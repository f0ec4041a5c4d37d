"""The SLURM executor: a suite's waves as job arrays, through submitit.

Submission (all sbatch calls happen up front; Python never waits between the waves):

- the teachers that are not complete in the store: one job array;
- the students: one job array *per teacher*, submitted right away with
  ``--dependency=afterok:<teacher array job>_<task>`` and ``--kill-on-invalid-dep=yes``.
  A SLURM job array carries one dependency list for all of its tasks, and submitit's
  ``executor.batch()`` submits a single sbatch with one parameter set, so a per-student
  dependency on its own teacher's task takes one array per teacher. A failed teacher then
  blocks only its own students, whom SLURM cancels at once instead of leaving them pending
  forever. Students whose teacher is already complete form one array with no dependency; a
  student whose teacher neither runs nor is complete is not submitted (failed record).

Each job runs :func:`run_job`, which calls ``fn(spec, results_dir)`` and raises
:class:`RunFailed` when the returned record is not complete: the contract has ``fn`` return a
failed record instead of raising, but only a nonzero exit keeps SLURM from satisfying
``afterok``.

Collection: every ``poll_s`` the executor checks which jobs are done (submitit's result file,
and ``sacct``, which needs SLURM accounting). A job's record is, in order:

1. the record ``fn`` returned;
2. the failed record ``fn`` wrote (the job raised :class:`RunFailed`);
3. a complete record already in the store (the job wrote it, then died): never overwritten;
4. otherwise a new failed record, written to the store, whose ``error`` names the exception
   (with its ``traceback``) or the SLURM state of a job that ended without a result
   (killed, time limit, out of memory, cancelled, teacher's dependency never satisfied).

Ctrl-C (or any error while submitting or waiting) cancels every job submitted by this run.
The sbatch scripts, pickles and job logs live under ``folder``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.launch.base import RunFn, failed_record
from kdbench.results.store import RunStore

log = logging.getLogger(__name__)

RESULT_GRACE_S = 15.0
"""How long a job SLURM calls COMPLETED may take to show its result file (shared filesystems)."""

STATUS_EVERY_S = 60.0
"""Longest interval between two ``sacct`` queries while waiting (submitit backs off to 10 min)."""


class RunFailed(Exception):
    """Raised inside a job when ``fn`` returned a record that is not complete.

    The job then exits nonzero, SLURM marks it FAILED and an ``afterok`` dependency on it is
    never satisfied, so the students of a teacher whose training failed are not started.
    """


def run_job(fn: RunFn, spec: Any, results_dir: str) -> dict[str, Any]:
    """The body of one SLURM job: ``fn(spec, results_dir, wait=True)``, raising
    :class:`RunFailed` unless the record it returns has ``status == "complete"``. With
    ``wait``, a job whose run another live process holds (a duplicate submission) waits for
    that process's record instead of training the run a second time."""
    record = fn(spec, results_dir, wait=True)
    if record.get("status") != "complete":
        raise RunFailed(
            f"run {spec.id} ended with status {record.get('status')!r}: {record.get('error')}"
        )
    return record


def _load_or_none(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """The stored record of ``run_id``; None when there is none or it is unreadable."""
    try:
        return store.load(run_id)
    except KdbenchError:
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_VALID: dict[str, tuple[Callable[[Any], bool], str]] = {
    "partition": (lambda v: v is None or (isinstance(v, str) and v != ""), "a partition name"),
    "time_min": (lambda v: _is_int(v) and v >= 1, "a whole number of minutes >= 1"),
    "cpus_per_task": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "gpus_per_node": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "mem_gb": (lambda v: v is None or (_is_number(v) and v > 0), "a positive number of GB"),
    "array_parallelism": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "poll_s": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
}
"""The executor's options: a test of the value and what the error message says was expected."""


class SlurmExecutor:
    """Trains the waves of a suite as SLURM job arrays (see the module docstring).

    ``time_min`` is each job's time limit in minutes, ``mem_gb`` its memory (None: the
    cluster's default), ``array_parallelism`` the most tasks of one array running at once,
    ``poll_s`` the interval between two checks for finished jobs. ``submitted`` holds the
    SLURM job ids of the arrays submitted by the last :meth:`run`.
    """

    def __init__(
        self,
        folder: Path,
        *,
        partition: str | None = None,
        time_min: int = 60,
        cpus_per_task: int = 1,
        gpus_per_node: int = 0,
        mem_gb: float | None = None,
        array_parallelism: int = 16,
        poll_s: float = 1.0,
    ) -> None:
        options = {
            "partition": partition,
            "time_min": time_min,
            "cpus_per_task": cpus_per_task,
            "gpus_per_node": gpus_per_node,
            "mem_gb": mem_gb,
            "array_parallelism": array_parallelism,
            "poll_s": poll_s,
        }
        for name, value in options.items():
            valid, expected = _VALID[name]
            if not valid(value):
                raise KdbenchError(f"launch.{name}: expected {expected}, got {value!r}")
        self.folder = Path(folder)
        self.partition = partition
        self.time_min = time_min
        self.cpus_per_task = cpus_per_task
        self.gpus_per_node = gpus_per_node
        self.mem_gb = mem_gb
        self.array_parallelism = array_parallelism
        self.poll_s = float(poll_s)
        self.submitted: list[str] = []

    def run(
        self, waves: Sequence[Sequence[Any]], results_dir: Path, fn: RunFn
    ) -> list[dict[str, Any]]:
        """Submit the runs of ``waves`` that are not complete, wait, return one record per spec
        (in the order of the waves)."""
        store = RunStore(results_dir)
        specs = [spec for wave in waves for spec in wave]
        records: dict[str, dict[str, Any]] = {}
        for spec in specs:
            stored = store.load(spec.id)
            if stored is not None and stored.get("status") == "complete":
                records[spec.id] = stored
        teachers = [spec for spec in waves[0] if spec.id not in records] if waves else []
        students = [spec for wave in waves[1:] for spec in wave if spec.id not in records]
        self.submitted = []
        try:
            ex = self._submitit_executor()
            jobs = self._submit(ex, "teachers", teachers, results_dir, fn, dependency=None)
            by_teacher: dict[str | None, list[Any]] = {}
            for spec in students:
                if spec.teacher_id in jobs:
                    by_teacher.setdefault(spec.teacher_id, []).append(spec)
                elif (
                    spec.teacher_id is None  # the baseline reads no teacher
                    or spec.teacher_id in records
                    or store.status(spec.teacher_id) == "complete"
                ):
                    by_teacher.setdefault(None, []).append(spec)
                else:
                    records[spec.id] = self._fail(
                        store,
                        spec,
                        (
                            f"not started: its teacher {spec.teacher_id} has no complete record "
                            "and is not part of this launch"
                        ),
                    )
            for teacher_id, group in by_teacher.items():
                dependency = None if teacher_id is None else f"afterok:{jobs[teacher_id].job_id}"
                name = "students" if teacher_id is None else f"students-of-{teacher_id}"
                jobs.update(self._submit(ex, name, group, results_dir, fn, dependency))
            teacher_of = {spec.id: spec.teacher_id for spec in students}
            self._collect(jobs, {spec.id: spec for spec in specs}, teacher_of, records, store)
        except BaseException:
            self.cancel()
            raise
        return [records[spec.id] for spec in specs]

    def cancel(self) -> None:
        """Cancel every array the last :meth:`run` submitted (finished ones are unaffected)."""
        if self.submitted:
            log.warning("cancelling SLURM jobs %s", " ".join(self.submitted))
            subprocess.run(
                ["scancel", *self.submitted],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def _submitit_executor(self) -> Any:
        import submitit

        try:
            ex = submitit.SlurmExecutor(folder=self.folder)
        except RuntimeError:
            raise KdbenchError(
                "launch: the slurm executor needs SLURM's srun and sbatch on PATH"
            ) from None
        params: dict[str, Any] = {
            "time": self.time_min,
            "cpus_per_task": self.cpus_per_task,
            "array_parallelism": self.array_parallelism,
            "additional_parameters": {"kill-on-invalid-dep": "yes"},
        }
        if self.partition is not None:
            params["partition"] = self.partition
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem"] = f"{max(1, round(self.mem_gb * 1024))}M"
        ex.update_parameters(**params)
        return ex

    def _submit(
        self,
        ex: Any,
        name: str,
        specs: list[Any],
        results_dir: Path,
        fn: RunFn,
        dependency: str | None,
    ) -> dict[str, Any]:
        """Submit ``specs`` as one job array; returns {run id: submitit job}."""
        if not specs:
            return {}
        from submitit.core.utils import FailedJobError

        ex.update_parameters(job_name=f"kdbench-{name}", dependency=dependency)
        try:
            with ex.batch():
                jobs = [ex.submit(run_job, fn, spec, str(results_dir)) for spec in specs]
        except FailedJobError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no message"
            raise KdbenchError(f"launch: sbatch rejected the {name} array: {reason}") from None
        self.submitted.append(jobs[0].job_id.split("_")[0])
        log.info(
            "submitted %d %s as SLURM job %s%s",
            len(specs),
            name,
            self.submitted[-1],
            f" ({dependency})" if dependency else "",
        )
        return {spec.id: job for spec, job in zip(specs, jobs, strict=True)}

    def _collect(
        self,
        jobs: dict[str, Any],
        specs: dict[str, Any],
        teacher_of: dict[str, str | None],
        records: dict[str, dict[str, Any]],
        store: RunStore,
    ) -> None:
        """Wait until every job in ``jobs`` has a record in ``records``."""
        if not jobs:
            return
        watcher = next(iter(jobs.values())).watcher
        pending = dict(jobs)
        completed_at: dict[str, float] = {}
        last_status = time.monotonic()
        while pending:
            for run_id, job in list(pending.items()):
                teacher_id = teacher_of.get(run_id)
                if teacher_id in pending or not job.done():
                    continue  # a student is collected after its teacher
                record = self._outcome(
                    specs[run_id], job, records.get(teacher_id), store, completed_at
                )
                if record is not None:
                    records[run_id] = record
                    del pending[run_id]
                    log.info("run %s (SLURM job %s): %s", run_id, job.job_id, record["status"])
            if pending:
                time.sleep(self.poll_s)
                if time.monotonic() - last_status >= STATUS_EVERY_S:
                    watcher.update()
                    last_status = time.monotonic()

    def _outcome(
        self,
        spec: Any,
        job: Any,
        teacher: dict[str, Any] | None,
        store: RunStore,
        completed_at: dict[str, float],
    ) -> dict[str, Any] | None:
        """The record of a finished job, or None to look again later (result file not there yet
        for a job SLURM calls COMPLETED)."""
        from submitit.core.utils import pickle_load

        if job.paths.result_pickle.exists():
            outcome, value = pickle_load(job.paths.result_pickle)
            if outcome == "success":
                return value
            trace = str(value).rstrip()
            last = trace.splitlines()[-1] if trace else "unknown error"
            written = _load_or_none(store, spec.id)
            if written is not None and last.startswith(
                f"{RunFailed.__module__}.{RunFailed.__qualname__}:"
            ):
                return written  # the failed record fn wrote
            return self._fail(store, spec, last, trace)
        state = job.state
        if state == "COMPLETED":
            first = completed_at.setdefault(spec.id, time.monotonic())
            if time.monotonic() - first < RESULT_GRACE_S:
                return None
        if teacher is not None and teacher.get("status") != "complete":
            error = (
                f"not started: its teacher {spec.teacher_id} did not complete, so the SLURM "
                f"dependency on it was never satisfied (job {job.job_id}: {state})"
            )
        else:
            error = (
                f"SLURM job {job.job_id} ended {state} without a result (log: {job.paths.stderr})"
            )
        return self._fail(store, spec, error)

    @staticmethod
    def _fail(
        store: RunStore, spec: Any, error: str, traceback: str | None = None
    ) -> dict[str, Any]:
        """Write and return a failed record for ``spec``, unless the store holds a complete
        one: that one is returned untouched."""
        stored = _load_or_none(store, spec.id)
        if stored is not None and stored.get("status") == "complete":
            return stored
        record = failed_record(spec, error, traceback)
        store.write(record)
        return record


def from_options(options: dict[str, Any], folder: Path) -> SlurmExecutor:
    """A :class:`SlurmExecutor` from a suite's ``launch:`` options (the keyword arguments of
    :class:`SlurmExecutor`); an unknown key is a KdbenchError naming ``launch.<key>``."""
    if not isinstance(options, dict):
        raise KdbenchError(f"launch: expected a mapping of options, got {options!r}")
    for key in options:
        if key not in _VALID:
            raise KdbenchError(
                f"launch.{key}: unknown option (expected one of {', '.join(_VALID)})"
            )
    return SlurmExecutor(folder, **options)
