"""The body of one SLURM job: train one run, checkpoint and requeue on SLURM's signals.

:class:`TrainJob` is what the SLURM executor submits (``TrainJob(fn, ...)(spec, results_dir)``):

- the warning signal before the time limit (``--signal=USR2@margin``, also what a cluster
  that pre-empts with notice sends) becomes a stop request: the run checkpoints at its next
  step boundary, and the job requeues itself (``scontrol requeue``; same job id, the restart
  counted in ``SLURM_RESTART_COUNT``) and exits; the requeued job resumes from the checkpoint.
  After ``max_requeues`` requeues the run's record is failed instead;
- SIGTERM (``scancel``, pre-emption without notice, the time limit itself) also checkpoints at
  the next step boundary, then exits without requeueing: SLURM decides what happens next;
- it raises :class:`RunFailed` when the record it gets is not complete, so that the job exits
  nonzero and an ``afterok`` dependency on it is never satisfied;
- every progress line of the run becomes ``<folder>/progress/<run id>.json`` (step, total,
  time), which ``kdbench status`` shows for a running job.

A run trained by several processes (``launch.tasks_per_node`` × ``nodes`` > 1) is one job of
that many SLURM tasks: each task joins the run's process group (submitit's
``TorchDistributedEnvironment``: rank, world size and rendezvous from SLURM's environment) and
trains beside the others; rank 0 alone writes, requeues and returns the run's record, and the
other ranks end quietly when the run stops (``srun --kill-on-bad-exit`` ends every task of a
run whose rank crashed).

It is a submitit ``Checkpointable``: a signal that arrives before the run installed its own
handlers (while Python starts) is handled by submitit, which requeues the job unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from kdbench.launch.base import RunFn, failed_record
from kdbench.results.store import RunStore, write_json_atomic
from kdbench.train.context import Stopped, slurm_job_id, slurm_restarts, stop_on

WARNING_SIGNAL = signal.SIGUSR2
"""The signal submitit asks SLURM to send ``signal_margin_s`` before the time limit."""

STOPPED_EXIT = 3
"""Exit code of a job that checkpointed and stopped (no result file: SLURM decides what follows)."""


class RunFailed(Exception):
    """Raised inside a job when ``fn`` returned a record that is not complete.

    The job then exits nonzero, SLURM marks it FAILED and an ``afterok`` dependency on it is
    never satisfied, so the runs that need a run whose training failed are not started.
    """


def progress_path(folder: str | Path, run_id: str) -> Path:
    return Path(folder) / "progress" / f"{run_id}.json"


class TrainJob(Checkpointable):
    """``fn(spec, results_dir)`` in a SLURM job, checkpointed and requeued on SLURM's warning
    signal (see the module docstring); ``folder`` is the executor's folder."""

    def __init__(self, fn: RunFn, folder: str, max_requeues: int) -> None:
        self.fn = fn
        self.folder = folder
        self.max_requeues = max_requeues

    def __call__(self, spec: Any, results_dir: str) -> dict[str, Any]:
        stop_on([WARNING_SIGNAL, signal.SIGTERM])
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            from submitit.helpers import TorchDistributedEnvironment

            from kdbench.distributed import backend_for, process_group

            ranks = TorchDistributedEnvironment().export()
            with process_group(backend_for(spec.device)):
                if ranks.rank > 0:
                    return self._follow(spec, results_dir)
                return self._train(spec, results_dir)
        return self._train(spec, results_dir)

    def _follow(self, spec: Any, results_dir: str) -> dict[str, Any]:
        """A rank other than 0: train beside rank 0; a stop ends it quietly (rank 0 decides)."""
        try:
            return self.fn(spec, results_dir, wait=True)
        except Stopped:
            return {"id": spec.id, "status": "stopped"}

    def _train(self, spec: Any, results_dir: str) -> dict[str, Any]:
        """Rank 0 (or the only process): train, then requeue or fail as the module says."""

        def progress(spec: Any, info: dict[str, Any]) -> None:
            write_json_atomic(
                progress_path(self.folder, spec.id),
                {"step": info["step"], "total": info["total"], "time": time.time()},
            )

        try:
            # wait: a duplicate submission waits for the live process that holds the run's
            # lease instead of training it a second time
            record = self.fn(spec, results_dir, progress=progress, wait=True)
        except Stopped as stopped:
            if stopped.reason != WARNING_SIGNAL.name:
                raise SystemExit(STOPPED_EXIT) from None  # cancelled or killed: SLURM decides
            restarts = slurm_restarts()
            if restarts >= self.max_requeues:
                error = (
                    f"time limit reached again after {restarts} requeue(s) (launch.max_requeues "
                    f"= {self.max_requeues}); stopped at step {stopped.step}, the checkpoint "
                    "resumes it"
                )
                store = RunStore(results_dir)
                record = {**(store.load(spec.id) or failed_record(spec, error)), "error": error}
                record["status"] = "failed"
                store.write(record)
                raise RunFailed(record["error"]) from None
            subprocess.run(["scontrol", "requeue", str(slurm_job_id())], check=True, timeout=60)
            raise SystemExit(STOPPED_EXIT) from None
        if record.get("status") != "complete":
            raise RunFailed(
                f"run {spec.id} ended with status {record.get('status')!r}: {record.get('error')}"
            )
        return record
