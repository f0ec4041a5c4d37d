"""Checkpoints: written atomically, read with ``weights_only=True``, corrupt files named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdbench.errors import KdbenchError
from kdbench.results.files import atomic_file


def save(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a unique temp file beside ``path``, then rename: a reader never sees
    half a file, two writers never share a temp file, a failed write leaves nothing behind
    (:func:`kdbench.results.files.atomic_file`)."""
    with atomic_file(path) as f:
        torch.save(state, f)


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU without unpickling code; a corrupt file is a KdbenchError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KdbenchError(
            f"{path}: corrupt or unreadable checkpoint ({reason}); delete it to restart the run"
        ) from None
    if not isinstance(state, dict):
        raise KdbenchError(f"{path}: not a kdbench checkpoint (expected a dict)")
    return state
