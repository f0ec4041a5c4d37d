"""One run trained by several processes on this machine (data parallelism, no SLURM).

``train_spawned(fn, spec, results_dir, processes)`` starts ``processes`` ranks (``spawn``: a
fresh interpreter each), opens their process group over localhost (:mod:`kdbench.train.
distributed`: gloo on the CPU, NCCL on GPUs) and runs ``fn(spec, results_dir)`` in each; rank
0's return value is the run's record. On the CPU rank i is pinned to its share of this
process's CPUs (:func:`~kdbench.launch.placement.cpu_shares`), on CUDA it sees one GPU of those
visible.

Failure and stopping: a rank that crashes or dies ends the others (they would wait for it in
the next collective) and the run's record is failed, unless it is complete. Ctrl-C reaches
every rank (one process group): they agree to stop at the same step boundary, rank 0 writes
the checkpoint, and this process raises KeyboardInterrupt as the in-process executor does.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import socket
import traceback
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.launch.base import RunFn, fail_unless_complete
from kdbench.launch.placement import STOP_WAIT_S, cpu_shares, own_cpus, visible_gpus
from kdbench.results.store import RunStore

POLL_S = 0.5


def free_port() -> int:
    """A TCP port free on localhost now (for the ranks' rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rank(
    rank: int,
    world: int,
    port: int,
    cpus: set[int] | None,
    gpu: str | None,
    events: Any,
    fn: RunFn,
    spec: Any,
    results_dir: str,
    wait: bool,
) -> None:
    """One rank: pin itself, join the group, train, and report to the parent."""
    from kdbench.distributed import backend_for, process_group
    from kdbench.train.context import Stopped, stop_on

    if cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    stop_on([signal.SIGINT, signal.SIGTERM])

    def progress(spec: Any, info: dict[str, Any]) -> None:
        events.put(("progress", rank, info))

    try:
        with process_group(backend_for(spec.device)):
            record = fn(spec, results_dir, progress=progress if rank == 0 else None, wait=wait)
        events.put(("done", rank, record))
    except Stopped as stopped:
        events.put(("stopped", rank, stopped.reason))
    except BaseException:
        events.put(("crashed", rank, traceback.format_exc()))


def train_spawned(
    fn: RunFn,
    spec: Any,
    results_dir: str,
    processes: int,
    progress: Any = None,
    wait: bool = False,
) -> dict[str, Any]:
    """Train ``spec`` with ``processes`` local ranks; return rank 0's record (module doc)."""
    cpus, gpus = _placement(spec, processes)
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    port = free_port()
    ranks = [
        ctx.Process(
            target=_rank,
            args=(r, processes, port, cpus[r], gpus[r], events, fn, spec, results_dir, wait),
            name=f"kdbench-rank-{r}",
        )
        for r in range(processes)
    ]
    for process in ranks:
        process.start()
    try:
        return _collect(ranks, events, spec, results_dir, progress)
    except BaseException:  # Ctrl-C included: the ranks checkpoint, then this re-raises
        _stop(ranks)
        raise
    finally:
        for process in ranks:
            process.join(STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()


def _placement(spec: Any, processes: int) -> tuple[list[set[int] | None], list[str | None]]:
    """Each rank's CPUs (pinned on the CPU) and GPU (on CUDA)."""
    gpus = visible_gpus() if spec.device != "cpu" else []
    if gpus:
        if processes > len(gpus):
            raise KdbenchError(
                f"launch.tasks_per_node: {processes} processes for run {spec.id}, but only "
                f"{len(gpus)} GPU(s) are visible; expected at most one process per GPU"
            )
        return [None] * processes, list(gpus[:processes])
    shares = cpu_shares(sorted(own_cpus()), processes, "launch.tasks_per_node:")
    return list(shares), [None] * processes


def _collect(
    ranks: list[Any], events: Any, spec: Any, results_dir: str, progress: Any
) -> dict[str, Any]:
    """Rank 0's record, relaying its progress; a failed record when a rank crashed or died."""
    record: dict[str, Any] | None = None
    pending = set(range(len(ranks)))
    while pending:
        try:
            kind, rank, payload = events.get(timeout=POLL_S)
        except queue.Empty:
            dead = [r for r in pending if not ranks[r].is_alive()]
            if dead:
                code = ranks[dead[0]].exitcode
                return _failed(ranks, spec, results_dir, f"rank {dead[0]} died (exit code {code})")
            continue
        if kind == "progress":
            if progress is not None:
                progress(spec, payload)
            continue
        pending.discard(rank)
        if kind == "stopped":
            raise KeyboardInterrupt
        if kind == "crashed":
            last = payload.rstrip().splitlines()[-1]
            return _failed(ranks, spec, results_dir, f"rank {rank} crashed: {last}", payload)
        if rank == 0:
            record = payload
            if record.get("status") != "complete":  # the others may wait for it in vain
                _end(ranks)
                return record
    assert record is not None
    return record


def _failed(
    ranks: list[Any], spec: Any, results_dir: str, error: str, trace: str | None = None
) -> dict[str, Any]:
    """End every rank; the run's record, failed with ``error`` unless it is complete."""
    _end(ranks)
    return fail_unless_complete(RunStore(results_dir), spec, error, trace)


def _end(ranks: list[Any]) -> None:
    for process in ranks:
        if process.is_alive():
            process.kill()


def _stop(ranks: list[Any]) -> None:
    """Ask every rank to checkpoint at the next step boundary (SIGTERM is a stop request)."""
    for process in ranks:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
