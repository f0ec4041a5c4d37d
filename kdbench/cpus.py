"""The CPUs a process may use, and torch's thread pools sized to them.

torch sizes its intra-op pool from the machine (or ``OMP_NUM_THREADS``), not from what the
process was given: a SLURM job with ``--cpus-per-task=1`` on a node without cgroups or CPU
binding, or a local worker pinned to one core, would otherwise start one thread per core of
the node and fight its neighbours for them (on a 2-core machine with another busy process a
kd step took about 100 times longer with 2 threads than with 1).

``available_cpus()`` is the number of CPUs in the process's affinity mask
(``os.sched_getaffinity``), capped by ``SLURM_CPUS_PER_TASK`` when SLURM sets it.
``configure_threads()`` sets torch's intra-op threads to that number (capped again by an
explicit ``OMP_NUM_THREADS``, which a user sets on purpose) and its inter-op threads to the
same, and returns what torch reports, for the run's record.
"""

from __future__ import annotations

import os
from typing import Any


def _positive_int(text: str | None) -> int | None:
    """``int(text)`` when it is a positive integer (SLURM may send e.g. ``"2(x3)"``), else None."""
    if not text:
        return None
    digits = text.split("(")[0].strip()
    return int(digits) if digits.isdigit() and int(digits) > 0 else None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by ``SLURM_CPUS_PER_TASK``."""
    cpus = affinity_cpus()
    slurm = _positive_int(os.environ.get("SLURM_CPUS_PER_TASK"))
    return min(cpus, slurm) if slurm is not None else cpus


def configure_threads() -> dict[str, Any]:
    """Size torch's intra-op and inter-op pools to :func:`available_cpus`; return
    ``{"cpus", "threads", "interop_threads", "source"}`` as torch then reports them.

    The inter-op pool can only be sized before torch first uses it; when it already was (a
    second run in the same process), the size it has is kept and recorded.
    """
    import torch

    cpus = available_cpus()
    threads = cpus
    omp = _positive_int(os.environ.get("OMP_NUM_THREADS"))
    if omp is not None:
        threads = min(threads, omp)
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already started in this process: keep its size
            pass
    source = "SLURM_CPUS_PER_TASK" if "SLURM_CPUS_PER_TASK" in os.environ else "affinity"
    if omp is not None and omp < cpus:
        source = "OMP_NUM_THREADS"
    return {
        "cpus": cpus,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "source": source,
    }
