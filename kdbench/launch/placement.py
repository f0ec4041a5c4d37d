"""Where the processes of one machine run: each its share of the CPUs, or one GPU.

Used by the local executors that start processes: :mod:`kdbench.launch.workers` (several runs
at once) and :mod:`kdbench.launch.spawn` (one run in several ranks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from kdbench.errors import KdbenchError

STOP_WAIT_S = 120.0
"""How long a stop (Ctrl-C) waits for the processes to checkpoint before it kills them."""


def cpu_shares(cpus: Sequence[int], jobs: int, option: str = "--jobs") -> list[set[int]]:
    """Split ``cpus`` into ``jobs`` disjoint, contiguous shares whose sizes differ by at most 1
    (``option`` names the setting that asked for ``jobs`` processes in the error message).

    >>> cpu_shares([0, 1, 2, 3, 4], 2)
    [{0, 1, 2}, {3, 4}]
    """
    ordered = sorted(cpus)
    if jobs > len(ordered):
        raise KdbenchError(
            f"{option} {jobs}: only {len(ordered)} CPU(s) available to this process; "
            f"expected at most {len(ordered)}"
        )
    base, extra = divmod(len(ordered), jobs)
    shares, start = [], 0
    for i in range(jobs):
        size = base + (1 if i < extra else 0)
        shares.append(set(ordered[start : start + size]))
        start += size
    return shares


def own_cpus() -> set[int]:
    """The CPU ids this process may run on (all of them where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]
