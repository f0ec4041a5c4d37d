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

Each job runs a :class:`~kdbench.launch.slurm_job.TrainJob`: ``fn(spec, results_dir)``,
raising ``RunFailed`` when the returned record is not complete (the contract has ``fn`` return a
failed record instead of raising, but only a nonzero exit keeps SLURM from satisfying
``afterok``), and checkpointing and requeueing itself on SLURM's warning signal before the time
limit. Resources may differ per stage (:mod:`kdbench.resources`).

Every submission is remembered in ``<folder>/submissions.json``
(:mod:`kdbench.launch.slurm_state`): :meth:`SlurmExecutor.submit` alone is ``kdbench run
--detach``, and runs whose job is still pending or running are never submitted twice (their
students depend on the job already there). :meth:`SlurmExecutor.plan` lists the arrays and
their sbatch flags without submitting (``kdbench run --executor slurm --dry-run``).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.launch.base import RunFn, fail_unless_complete
from kdbench.launch.slurm_job import RunFailed, TrainJob
from kdbench.resources import RESOURCES, resolve, sbatch_flags, sbatch_parameters
from kdbench.launch.slurm_state import active_jobs, add_submissions, submission_entry
from kdbench.results.store import RunStore

log = logging.getLogger(__name__)

RESULT_GRACE_S = 15.0
"""How long a job SLURM calls COMPLETED may take to show its result file (shared filesystems)."""

STATUS_EVERY_S = 60.0
"""Longest interval between two ``sacct`` queries while waiting (submitit backs off to 10 min)."""


def _load_or_none(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """The stored record of ``run_id``; None when there is none or it is unreadable."""
    try:
        return store.load(run_id)
    except KdbenchError:
        return None


@dataclass
class Array:
    """One job array of a launch: its runs, their stage's sbatch parameters, and the teacher run
    (of this launch) or the job (of an earlier one) all its tasks wait for."""

    name: str
    stage: str
    specs: list[Any]
    params: dict[str, Any]
    after_run: str | None = None
    after_job: str | None = None

    def dependency(self, job_of_run: Callable[[str], str]) -> str | None:
        """The sbatch ``--dependency`` of the array: ``afterok`` on its teacher's job, named by
        ``job_of_run(teacher run id)`` for a teacher of this launch."""
        if self.after_run is not None:
            return f"afterok:{job_of_run(self.after_run)}"
        if self.after_job is not None:
            return f"afterok:{self.after_job}"
        return None


@dataclass
class Plan:
    """What a launch submits: arrays in submission order, and runs it cannot start."""

    arrays: list[Array]
    orphans: list[Any]
    active: dict[str, str]
    """{run id: job id} of runs whose job from an earlier launch is still pending or running."""


class SlurmExecutor:
    """Trains the waves of a suite as SLURM job arrays (see the module docstring).

    ``options`` are the suite's ``launch:`` options (:mod:`kdbench.resources`).
    ``submitted`` holds the SLURM job ids of the arrays submitted by the last :meth:`submit`.
    """

    def __init__(self, folder: Path, **options: Any) -> None:
        self.folder = Path(folder)
        self.options = resolve(options)
        for key in RESOURCES:
            setattr(self, key, self.options[key])
        self.poll_s = float(self.options["poll_s"])
        self.submitted: list[str] = []

    def plan(self, waves: Sequence[Sequence[Any]], results_dir: Path) -> Plan:
        """The arrays that :meth:`submit` would submit for the runs of ``waves``."""
        store = RunStore(results_dir)
        complete = {s.id for wave in waves for s in wave if store.status(s.id) == "complete"}
        active = active_jobs(self.folder)
        todo = [[s for s in wave if s.id not in complete | set(active)] for wave in waves]
        params = {
            st: sbatch_parameters(self.options[st], self.options) for st in ("teacher", "student")
        }
        teachers = todo[0] if todo else []
        arrays = [Array("teachers", "teacher", teachers, params["teacher"])] if teachers else []
        launched = {spec.id for spec in teachers}
        groups: dict[tuple[str | None, str | None], list[Any]] = {}
        orphans = []
        for spec in (s for wave in todo[1:] for s in wave):
            teacher = spec.teacher_id
            if teacher in launched:
                groups.setdefault((teacher, None), []).append(spec)
            elif teacher in active:
                groups.setdefault((None, active[teacher]), []).append(spec)
            elif teacher is None or teacher in complete or store.status(teacher) == "complete":
                groups.setdefault((None, None), []).append(spec)
            else:
                orphans.append(spec)
        for (run, job), specs in groups.items():
            name = f"students-of-{run}" if run else f"students-after-{job}" if job else "students"
            arrays.append(Array(name, "student", specs, params["student"], run, job))
        return Plan(arrays, orphans, active)

    def describe(self, plan: Plan) -> str:
        """The sbatch flags of every array of ``plan`` and what each waits for (a dry run)."""
        index = {}
        for array in plan.arrays:
            if array.stage == "teacher":
                index = {spec.id: i for i, spec in enumerate(array.specs)}
        lines = []
        for array in plan.arrays:
            dependency = array.dependency(lambda run: f"<teachers>_{index[run]}")
            flags = sbatch_flags(array.params, len(array.specs), dependency)
            srun = " ".join(array.params.get("srun_args", []))
            lines.append(
                f"sbatch {' '.join(flags)}   # {array.name}: {len(array.specs)} run(s)"
                + (f"; each task: srun {srun}" if srun else "")
            )
        for run_id, job in plan.active.items():
            lines.append(f"# {run_id}: already submitted as job {job} (pending or running)")
        for spec in plan.orphans:
            lines.append(f"# {spec.id}: not submitted, its teacher {spec.teacher_id} is missing")
        return "\n".join(lines)

    def submit(
        self, waves: Sequence[Sequence[Any]], results_dir: Path, fn: RunFn
    ) -> tuple[dict[str, Any], Plan]:
        """Submit the arrays of :meth:`plan`; return ({run id: submitit job}, the plan).

        Orphans (students whose teacher neither runs nor is complete) get failed records. Any
        error while submitting cancels what this call submitted."""
        store = RunStore(results_dir)
        plan = self.plan(waves, results_dir)
        for spec in plan.orphans:
            fail_unless_complete(
                store,
                spec,
                f"not started: its teacher {spec.teacher_id} has no complete record "
                "and is not part of this launch",
            )
        self.submitted = []
        jobs: dict[str, Any] = {}
        try:
            ex = self._submitit_executor()
            for array in plan.arrays:
                dependency = array.dependency(lambda run: jobs[run].job_id)
                jobs.update(self._submit(ex, array, results_dir, fn, dependency))
        except BaseException:
            self.cancel()
            raise
        return jobs, plan

    def detach(self, waves: Sequence[Sequence[Any]], results_dir: Path, fn: RunFn) -> str:
        """Submit without waiting (``kdbench run --detach``); returns what was submitted, one
        line per run (run id, SLURM job id, log) and the arrays' job ids."""
        jobs, plan = self.submit(waves, results_dir, fn)
        specs = {spec.id: spec for wave in waves for spec in wave}
        lines = [
            f"{run_id}  job {job.job_id}  {specs[run_id].describe()}  log {job.paths.stderr}"
            for run_id, job in jobs.items()
        ]
        lines += [
            f"{run_id}  job {job}  already pending or running"
            for run_id, job in plan.active.items()
        ]
        lines.append(
            f"submitted {len(jobs)} run(s) as SLURM job array(s) {' '.join(self.submitted) or '-'}"
            f"; {len(plan.active)} already pending or running; follow them with `kdbench status`"
        )
        return "\n".join(lines)

    def run(
        self, waves: Sequence[Sequence[Any]], results_dir: Path, fn: RunFn
    ) -> list[dict[str, Any]]:
        """Submit the runs of ``waves`` that are not complete, wait, return one record per spec
        (in the order of the waves); jobs of an earlier launch still running are waited for."""
        store = RunStore(results_dir)
        specs = [spec for wave in waves for spec in wave]
        try:
            jobs, plan = self.submit(waves, results_dir, fn)
            jobs.update(self._earlier_jobs(plan.active))
            records: dict[str, dict[str, Any]] = {}
            for spec in specs:
                stored = _load_or_none(store, spec.id)
                if spec.id not in jobs and stored is not None:
                    records[spec.id] = stored
            teacher_of = {spec.id: spec.teacher_id for spec in specs if spec.kind == "student"}
            self._collect(jobs, {spec.id: spec for spec in specs}, teacher_of, records, store)
        except BaseException:
            self.cancel()
            raise
        return [records[spec.id] for spec in specs]

    def cancel(self) -> None:
        """Cancel every array the last :meth:`submit` submitted (finished ones are unaffected)."""
        if self.submitted:
            log.warning("cancelling SLURM jobs %s", " ".join(self.submitted))
            subprocess.run(
                ["scancel", *self.submitted],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def _earlier_jobs(self, active: dict[str, str]) -> dict[str, Any]:
        """submitit handles on the still-active jobs of an earlier (detached) launch."""
        if not active:
            return {}
        from submitit.slurm.slurm import SlurmJob

        return {run_id: SlurmJob(folder=self.folder, job_id=job) for run_id, job in active.items()}

    def _submitit_executor(self) -> Any:
        import submitit

        try:
            return submitit.SlurmExecutor(
                folder=self.folder, max_num_timeout=self.options["max_requeues"]
            )
        except RuntimeError:
            raise KdbenchError(
                "launch: the slurm executor needs SLURM's srun and sbatch on PATH"
            ) from None

    def _submit(
        self, ex: Any, array: Array, results_dir: Path, fn: RunFn, dependency: str | None
    ) -> dict[str, Any]:
        """Submit one array; returns {run id: submitit job} and remembers the submission."""
        from submitit.core.utils import FailedJobError

        ex.update_parameters(
            **array.params, job_name=f"kdbench-{array.name}", dependency=dependency
        )
        job_fn = TrainJob(fn, str(self.folder), self.options["max_requeues"])
        try:
            with ex.batch():
                jobs = [ex.submit(job_fn, spec, str(results_dir)) for spec in array.specs]
        except FailedJobError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no message"
            raise KdbenchError(
                f"launch: sbatch rejected the {array.name} array: {reason}"
            ) from None
        self.submitted.append(jobs[0].job_id.split("_")[0])
        add_submissions(
            self.folder,
            {
                spec.id: submission_entry(job, array.stage)
                for spec, job in zip(array.specs, jobs, strict=True)
            },
        )
        log.info(
            "submitted %d run(s) (%s) as SLURM job %s%s",
            len(array.specs),
            array.name,
            self.submitted[-1],
            f" ({dependency})" if dependency else "",
        )
        return {spec.id: job for spec, job in zip(array.specs, jobs, strict=True)}

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
            return fail_unless_complete(store, spec, last, trace)
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
        return fail_unless_complete(store, spec, error)


def from_options(options: dict[str, Any], folder: Path) -> SlurmExecutor:
    """A :class:`SlurmExecutor` from a suite's ``launch:`` options; an unknown key or a bad
    value is a KdbenchError naming ``launch.<key>``."""
    if not isinstance(options, dict):
        raise KdbenchError(f"launch: expected a mapping of options, got {options!r}")
    return SlurmExecutor(folder, **options)
