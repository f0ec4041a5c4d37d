"""Where and on what a run trained: software versions, device, host, process, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import socket
import sys
from typing import Any

import torch

from kdbench.results.lease import slurm_job


def environment(device: torch.device) -> dict[str, Any]:
    """The record's ``env``: Python, torch, timm and kdbench versions, device, threads, host."""
    import timm

    import kdbench

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "kdbench": kdbench.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def session() -> dict[str, Any]:
    """This process: host, pid and SLURM job (the lease holder's identity)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": slurm_job()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on a GPU; the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def memory_source(device: torch.device) -> str:
    """What :func:`peak_memory_mb` measured on ``device``."""
    return "cuda_max_allocated" if device.type == "cuda" else "process_max_rss"
