"""The SLURM executor: the run graph of a launch as job arrays, through submitit.

Submission (all sbatch calls happen up front; Python never waits between arrays). The runs that
are not complete in the store are grouped by kind and by the runs they need
(``spec.needs``, :mod:`kdbench.launch.schedule`); each group is one job array, submitted in the
order of the graph with ``--dependency=afterok:<job of each run it needs>`` and
``--kill-on-invalid-dep=yes``. A SLURM job array carries one dependency list for all of its
tasks, and submitit's ``executor.batch()`` submits a single sbatch with one parameter set, so
the students of each teacher (and of each set of tuning trials) form their own array. A failed
run then blocks only the runs that need it, whom SLURM cancels at once instead of leaving them
pending forever. Runs whose needs are all complete form one array per kind with no dependency;
a run that needs a run neither launched nor complete is not submitted (failed record). With
``tune:`` the students simply depend on their trials: the choice among them is made inside the
student's own job (:mod:`kdbench.train.tuning`), so ``--detach`` submits everything at once.

Each job runs a :class:`~kdbench.launch.slurm_job.TrainJob`: ``fn(spec, results_dir)``,
raising ``RunFailed`` when the returned record is not complete (the contract has ``fn`` return a
failed record instead of raising, but only a nonzero exit keeps SLURM from satisfying
``afterok``), and checkpointing and requeueing itself on SLURM's warning signal before the time
limit. Resources may differ per stage (:mod:`kdbench.resources`).

Every submission is remembered in ``<folder>/submissions.json``
(:mod:`kdbench.launch.slurm_state`): :meth:`SlurmExecutor.submit` alone is ``kdbench run
--detach``, and runs whose job is still pending or running are never submitted twice (their
dependents depend on the job already there). :meth:`SlurmExecutor.plan` lists the arrays and
their sbatch flags without submitting (``kdbench run --executor slurm --dry-run``).

Collection: every ``poll_s`` the executor checks which jobs are done (submitit's result file,
and ``sacct``, which needs SLURM accounting). A job's record is, in order:

1. the record ``fn`` returned;
2. the failed record ``fn`` wrote (the job raised :class:`RunFailed`);
3. a complete record already in the store (the job wrote it, then died): never overwritten;
4. otherwise a new failed record, written to the store, whose ``error`` names the exception
   (with its ``traceback``) or the SLURM state of a job that ended without a result
   (killed, time limit, out of memory, cancelled), or, for a job whose dependency was never
   satisfied, the failed run it needed.

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

from kdbench.config import stage_of
from kdbench.errors import KdbenchError
from kdbench.launch.base import RunFn, fail_unless_complete
from kdbench.launch.schedule import Schedule
from kdbench.launch.slurm_job import RunFailed, TrainJob
from kdbench.launch.slurm_state import active_jobs, add_submissions, submission_entry
from kdbench.resources import RESOURCES, resolve, sbatch_flags, sbatch_parameters
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
    """One job array of a launch: runs of one kind that need the same runs, their stage's sbatch
    parameters, and the runs (of this launch) and jobs (of an earlier one) all its tasks wait
    for."""

    name: str
    stage: str
    specs: list[Any]
    params: dict[str, Any]
    after_runs: tuple[str, ...] = ()
    after_jobs: tuple[str, ...] = ()

    def dependency(self, job_of_run: Callable[[str], str]) -> str | None:
        """The sbatch ``--dependency`` of the array: ``afterok`` on the job of every run it needs,
        named by ``job_of_run(run id)`` for a run of this launch."""
        jobs = [*map(job_of_run, self.after_runs), *self.after_jobs]
        return f"afterok:{':'.join(jobs)}" if jobs else None


def _array_name(kind: str, runs: tuple[str, ...], jobs: tuple[str, ...]) -> str:
    """``students``, ``students-of-<run>``, ``students-after-<job>``, ``...-and-2-more`` (the
    kind's plural: ``maskd_tokens`` stays as it is)."""
    plural = kind if kind.endswith("s") else f"{kind}s"
    name = plural + (f"-of-{runs[0]}" if runs else f"-after-{jobs[0]}" if jobs else "")
    more = len(runs) + len(jobs) - 1
    return name + (f"-and-{more}-more" if more > 0 else "")


@dataclass
class Plan:
    """What a launch submits: arrays in submission order, and runs it cannot start."""

    arrays: list[Array]
    orphans: list[Any]
    """Runs that need a failed run, or one that is neither launched nor complete."""
    active: dict[str, str]
    """{run id: job id} of runs whose job from an earlier launch is still pending or running."""
    schedule: Schedule


class SlurmExecutor:
    """Trains the runs of a launch as SLURM job arrays (see the module docstring).

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

    def plan(self, runs: Sequence[Any], results_dir: Path, write: bool = False) -> Plan:
        """The arrays that :meth:`submit` would submit for ``runs``: one per kind of run and set
        of runs needed, in the order of the graph; ``write``: write the orphans' records."""
        active = active_jobs(self.folder)
        schedule = Schedule(runs, RunStore(results_dir), write, elsewhere=active)
        for spec in schedule.order:
            if spec.id in active and spec.id not in schedule.records:
                schedule.take(spec)
        orphans = [spec for spec, _ in schedule.block()]
        groups: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[Any]] = {}
        for spec in schedule.order:
            if spec.id in schedule.records or spec.id in schedule.taken:
                continue
            pending = [n for n in spec.needs if schedule.need_state(n) == "pending"]
            after_runs = tuple(n for n in pending if n not in active)
            after_jobs = tuple(active[n] for n in pending if n in active)
            groups.setdefault((spec.kind, after_runs, after_jobs), []).append(spec)
        ordered = sorted(groups.items(), key=lambda group: schedule.depth(group[1][0]))
        arrays = [
            Array(_array_name(kind, after_runs, after_jobs), stage_of(kind), specs,
                  sbatch_parameters(self.options[stage_of(kind)], self.options),
                  after_runs, after_jobs)
            for (kind, after_runs, after_jobs), specs in ordered
        ]
        return Plan(arrays, orphans, {k: v for k, v in active.items() if k in schedule.by_id},
                    schedule)

    def describe(self, plan: Plan) -> str:
        """The sbatch flags of every array of ``plan`` and what each waits for (a dry run)."""
        task = {spec.id: f"<{a.name}>_{i}" for a in plan.arrays for i, spec in enumerate(a.specs)}
        lines = []
        for array in plan.arrays:
            flags = sbatch_flags(array.params, len(array.specs), array.dependency(task.get))
            srun = " ".join(array.params.get("srun_args", []))
            lines.append(
                f"sbatch {' '.join(flags)}   # {array.name}: {len(array.specs)} run(s)"
                + (f"; each task: srun {srun}" if srun else "")
            )
        for run_id, job in plan.active.items():
            lines.append(f"# {run_id}: already submitted as job {job} (pending or running)")
        for spec in plan.orphans:
            error = plan.schedule.records[spec.id]["error"]
            lines.append(f"# {spec.id}: not submitted; {error}")
        return "\n".join(lines)

    def submit(
        self, runs: Sequence[Any], results_dir: Path, fn: RunFn
    ) -> tuple[dict[str, Any], Plan]:
        """Submit the arrays of :meth:`plan`; return ({run id: submitit job}, the plan).

        Orphans get their failed records. Any error while submitting cancels what this call
        submitted."""
        plan = self.plan(runs, results_dir, write=True)
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

    def detach(self, runs: Sequence[Any], results_dir: Path, fn: RunFn) -> str:
        """Submit without waiting (``kdbench run --detach``); returns what was submitted, one
        line per run (run id, SLURM job id, log) and the arrays' job ids."""
        jobs, plan = self.submit(runs, results_dir, fn)
        specs = {spec.id: spec for spec in runs}
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

    def run(self, runs: Sequence[Any], results_dir: Path, fn: RunFn) -> list[dict[str, Any]]:
        """Submit the runs that are not complete, wait, return one record per run (in their
        order); jobs of an earlier launch still running are waited for."""
        try:
            jobs, plan = self.submit(runs, results_dir, fn)
            jobs.update(self._earlier_jobs(plan.active))
            self._collect(jobs, plan.schedule)
        except BaseException:
            self.cancel()
            raise
        return plan.schedule.ordered_records(runs)

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

    def _collect(self, jobs: dict[str, Any], schedule: Schedule) -> None:
        """Wait until every job in ``jobs`` has its record in ``schedule`` (a run after the runs
        it needs; a run that a failure blocked is not waited for: SLURM cancels its job)."""
        if not jobs:
            return
        watcher = next(iter(jobs.values())).watcher
        pending = dict(jobs)
        completed_at: dict[str, float] = {}
        last_status = time.monotonic()
        while pending:
            for run_id, job in list(pending.items()):
                spec = schedule.by_id[run_id]
                if run_id in schedule.records:  # blocked by a failure
                    del pending[run_id]
                    continue
                if any(n in pending for n in spec.needs) or not job.done():
                    continue
                record = self._outcome(spec, job, schedule, completed_at)
                if record is not None:
                    schedule.finish(spec, record)
                    del pending[run_id]
                    log.info("run %s (SLURM job %s): %s", run_id, job.job_id, record["status"])
            if pending:
                time.sleep(self.poll_s)
                if time.monotonic() - last_status >= STATUS_EVERY_S:
                    watcher.update()
                    last_status = time.monotonic()

    def _outcome(
        self, spec: Any, job: Any, schedule: Schedule, completed_at: dict[str, float]
    ) -> dict[str, Any] | None:
        """The record of a finished job, or None to look again later (result file not there yet
        for a job SLURM calls COMPLETED)."""
        from submitit.core.utils import pickle_load

        store = schedule.store
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
        blocked = schedule.blocked_error(spec)
        if blocked is not None:  # a run it needs failed: SLURM never satisfied the dependency
            return schedule.blocked_record(spec, blocked)
        error = f"SLURM job {job.job_id} ended {state} without a result (log: {job.paths.stderr})"
        return fail_unless_complete(store, spec, error)


def from_options(options: dict[str, Any], folder: Path) -> SlurmExecutor:
    """A :class:`SlurmExecutor` from a suite's ``launch:`` options; an unknown key or a bad
    value is a KdbenchError naming ``launch.<key>``."""
    if not isinstance(options, dict):
        raise KdbenchError(f"launch: expected a mapping of options, got {options!r}")
    return SlurmExecutor(folder, **options)
