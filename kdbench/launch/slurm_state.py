"""Submitted SLURM jobs of a results folder: what was submitted, where it is now, cancelling.

Every submission is remembered in ``<folder>/submissions.json`` (the executor's folder,
``<results>/slurm`` for ``kdbench run``): ``{run id: {"job", "array", "stage", "stdout",
"stderr", "submitted"}}``, ``job`` as SLURM names the task (``ARRAY_TASK``). This is what lets
``kdbench run --detach`` return at once, ``kdbench status`` say where each run is, ``kdbench
cancel`` end one suite's jobs only, and a second ``kdbench run`` leave pending and running jobs
alone.

States come from ``squeue`` (jobs SLURM still holds) and ``sacct`` (jobs that ended), and
the run's own files: its record (complete, stopped and requeued, failed with an error) and the
progress file its job writes (the step it reached).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.launch.slurm_job import progress_path
from kdbench.results.store import write_json_atomic

SUBMISSIONS = "submissions.json"
ACTIVE = (
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
)
"""squeue states of a job that has not ended (a requeued job is PENDING again)."""


def load_submissions(folder: Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / SUBMISSIONS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KdbenchError(f"{path}: not a readable list of SLURM submissions ({exc})") from None
    if not isinstance(data, dict):
        raise KdbenchError(f"{path}: expected a JSON object of run id -> submission")
    return data


def add_submissions(folder: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Remember ``entries`` (run id -> submission), replacing earlier ones of the same runs."""
    if entries:
        write_json_atomic(Path(folder) / SUBMISSIONS, {**load_submissions(folder), **entries})


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return out.stdout if out.returncode == 0 else ""


def queue_states() -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of every job SLURM holds (array tasks one by one)."""
    states = {}
    for line in _run(["squeue", "-h", "-r", "-o", "%i|%T|%r"]).splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        states[job.strip()] = (state.strip(), reason.strip())
    return states


def accounting_states(jobs: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} from SLURM's accounting for ``jobs`` (ended ones included)."""
    if not jobs:
        return {}
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,Reason", "-j", ",".join(jobs)])
    states = {}
    for line in out.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        states[job.strip()] = (state.split()[0] if state.strip() else "", reason.strip())
    return states


def active_jobs(folder: Path) -> dict[str, str]:
    """{run id: job id} of the runs submitted from ``folder`` whose job has not ended."""
    queue = queue_states()
    return {
        run_id: entry["job"]
        for run_id, entry in load_submissions(folder).items()
        if queue.get(entry["job"], ("",))[0] in ACTIVE
    }


@dataclass
class RunState:
    """Where one run is, as ``kdbench status`` shows it."""

    state: str
    """pending, running, requeued, failed, complete, stopped or missing."""
    detail: str
    job: str | None = None
    log: str | None = None


def run_state(
    record: dict[str, Any] | None,
    submission: dict[str, Any] | None,
    queue: dict[str, tuple[str, str]],
    accounting: dict[str, tuple[str, str]],
    folder: Path,
) -> RunState:
    """Combine a run's record, its submission and SLURM's view of its job."""
    status = "missing" if record is None else str(record.get("status", "failed"))
    if status == "complete" or submission is None:
        detail = (record or {}).get("error") or ""
        return RunState(status, detail)
    job, log = submission["job"], submission.get("stderr")
    attempts = (record or {}).get("attempts", [])
    requeued = bool(attempts) and attempts[-1].get("outcome") == "stopped"
    if job in queue and queue[job][0] in ACTIVE:
        state, reason = queue[job]
        if state in ("RUNNING", "COMPLETING", "CONFIGURING"):
            progress = progress_path(folder, record["id"]) if record else None
            step = ""
            if progress is not None and progress.exists():
                info = json.loads(progress.read_text())
                step = f"step {info['step']}/{info['total']}"
            return RunState("running", step, job, log)
        restarts = len([a for a in attempts if a.get("outcome") == "stopped"])
        why = state.lower() + (f": {reason}" if reason and reason != "None" else "")
        if requeued:
            return RunState("requeued", f"{restarts} requeue(s); {why}", job, log)
        return RunState("pending", why, job, log)
    ended, reason = accounting.get(job, ("", ""))
    error = (record or {}).get("error")
    if status == "failed" or ended in (
        "FAILED",
        "TIMEOUT",
        "CANCELLED",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "DEADLINE",
        "BOOT_FAIL",
    ):
        why = error or f"SLURM job ended {ended or 'without a record'}"
        if ended and ended not in why:
            why = f"{why} (SLURM: {ended}{', ' + reason if reason and reason != 'None' else ''})"
        return RunState("failed", why, job, log)
    return RunState(status, error or (ended.lower() if ended else ""), job, log)


def run_states(folder: Path, records: dict[str, dict[str, Any] | None]) -> dict[str, RunState]:
    """The :class:`RunState` of each run in ``records`` ({run id: record or None})."""
    submissions = load_submissions(folder)
    queue = queue_states() if submissions else {}
    ended = [
        submissions[r]["job"]
        for r in records
        if r in submissions and submissions[r]["job"] not in queue
    ]
    accounting = accounting_states(ended)
    return {
        run_id: run_state(record, submissions.get(run_id), queue, accounting, folder)
        for run_id, record in records.items()
    }


def cancel(folder: Path, run_ids: list[str]) -> list[str]:
    """``scancel`` the jobs of ``run_ids`` that SLURM still holds; returns their job ids."""
    submissions = load_submissions(folder)
    queue = queue_states()
    jobs = sorted(
        {
            submissions[r]["job"]
            for r in run_ids
            if r in submissions and queue.get(submissions[r]["job"], ("",))[0] in ACTIVE
        }
    )
    if jobs:
        subprocess.run(["scancel", *jobs], check=False, timeout=60)
    return jobs


def submission_entry(job: Any, stage: str) -> dict[str, Any]:
    """The submissions.json entry of a submitit job."""
    return {
        "job": job.job_id,
        "array": job.job_id.split("_")[0],
        "stage": stage,
        "stdout": str(job.paths.stdout),
        "stderr": str(job.paths.stderr),
        "submitted": time.time(),
    }
