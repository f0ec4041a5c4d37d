"""Where a run is (:class:`TrainState`) and its checkpoint: saved beside the model, method,
optimizer and gradient scaler, restored on resume, moved aside when it cannot be read."""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from kdbench.errors import KdbenchError
from kdbench.train import checkpoint
from kdbench.train.loop import Models
from kdbench.train.precision import check_weights


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint beside the model, method and optimizer."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    elapsed: float = 0.0
    """Wall seconds spent in earlier sessions of this run (before the last resume)."""
    step_time: float = 0.0
    """Seconds spent inside training steps, over all sessions."""
    step_times: list[float] = field(default_factory=list)
    """Wall seconds of every training step so far (``step_times[i]`` is step i's)."""
    resumed_from: list[int] = field(default_factory=list)
    window: list[dict[str, float]] = field(default_factory=list)
    """Losses of the steps since the last history entry (a resumed curve equals an unbroken one)."""
    sessions: list[dict[str, Any]] = field(default_factory=list)
    """Who trained the run: ``{"host", "pid", "job", "step"}`` per session (one writer each)."""
    skipped_steps: int = 0
    """Steps whose update the fp16 gradient scaler skipped (overflowing gradients)."""


def weights(models: Models) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer of the trained model and its method, by name."""
    return [
        *((f"model.{n}", t) for n, t in models.model.state_dict().items()),
        *((f"method.{n}", t) for n, t in models.method.state_dict().items()),
    ]


def save(
    path: Path,
    state: TrainState,
    models: Models,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    elapsed: float,
) -> None:
    """Write the run's checkpoint (finite weights only: a non-finite one raises first)."""
    check_weights(weights(models), state.step)
    checkpoint.save(
        path,
        {
            "model": models.model.state_dict(),
            "method": models.method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            **asdict(state),
            "elapsed": elapsed,
        },
    )


def restore(
    path: Path, models: Models, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> TrainState:
    """Load the run's own checkpoint into the modules; a fresh state if there is none.

    A checkpoint that cannot be loaded (garbage, a missing field, shapes of another model) is
    moved aside to ``checkpoint.pt.corrupt`` and the modules keep their initial state: the run
    starts again from step 0, exactly as a fresh one.
    """
    if not path.exists():
        return TrainState()
    targets = {"model": models.model, "method": models.method, "optimizer": optimizer,
               "scaler": scaler}
    initial = {key: copy.deepcopy(target.state_dict()) for key, target in targets.items()}
    try:
        saved = checkpoint.load(path)
        missing = [k for k in [*targets, *(f.name for f in fields(TrainState))] if k not in saved]
        if missing:
            raise KdbenchError(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
        for key, target in targets.items():
            target.load_state_dict(saved[key])
        state = TrainState(**{f.name: saved[f.name] for f in fields(TrainState)})
    except (KdbenchError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        for key, target in targets.items():
            target.load_state_dict(initial[key])
        aside = path.with_name(f"{path.name}.corrupt")
        path.replace(aside)
        print(f"kdbench: {exc}; moved to {aside}, training from step 0", file=sys.stderr)
        return TrainState()
    state.resumed_from = [*state.resumed_from, state.step]
    return state
