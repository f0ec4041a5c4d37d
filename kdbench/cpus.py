"""The CPUs a process may use (minimal version; the full module with thread configuration is
issue 11's).

``available_cpus()`` is the number of CPUs in the process's affinity mask
(``os.sched_getaffinity``), capped by ``SLURM_CPUS_PER_TASK`` when SLURM sets it.
"""

from __future__ import annotations

import os


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by ``SLURM_CPUS_PER_TASK``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").split("(")[0].strip()
    return min(cpus, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cpus
