"""The training loop of one session of a run: steps, history, evaluation schedule, checkpoints.

The loop starts at the restored step and runs to the resolved total. After every step: a
history entry every ``log_every`` steps (the losses averaged since the last one, so that a
resumed curve equals an unbroken one), an evaluation every ``eval_every`` steps (the best one
kept as ``best``), a checkpoint every ``checkpoint_every`` steps, and, when a stop was requested
(:mod:`kdbench.train.context`), a checkpoint at this step boundary and :class:`Stopped`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdbench.config import RunSpec
from kdbench.distributed import agreed_stop, current, mean_over_ranks, writer_first
from kdbench.train.checkpoint import save as save_weights
from kdbench.train.context import Stopped, stop_requested
from kdbench.train.loop import Models, lr_factor, to_device, train_step
from kdbench.train.precision import STATISTICS, PendingSteps
from kdbench.train.state import TrainState, save
from kdbench.train.tracking import Trackers

Progress = Callable[[RunSpec, dict[str, Any]], None]
"""Called every ``log_every`` steps with ``{"step", "total", "epoch", "loss", "eta_s"}``."""

HEADLINE = ("miou", "mfsc", "pixel_acc")
"""The metrics a scheduled evaluation keeps in the history."""
PER_CLASS = ("per_class_iou", "per_class_fsc")
"""What the best evaluation keeps beside its headline."""
BEST_WEIGHTS = "model_best.pt"
"""The weights of the best scheduled evaluation, in the run's folder."""


@dataclass
class Fit:
    """One session of a run, built and restored, ready to train."""

    spec: RunSpec
    models: Models
    """The built models (checkpointed and evaluated)."""
    stepping: Models
    """What the step calls: under data parallelism, synchronised wrappers of :attr:`models`,
    compiled where ``train.compile`` asks."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    train: dict[str, Any]
    """The run's ``train`` section with ``channels_last`` resolved for the device."""
    state: TrainState
    total: int
    """The resolved step count of the run."""
    per_epoch: int
    checkpoint: Path
    evaluate: Callable[[], dict[str, Any]]
    progress: Progress | None
    trackers: Trackers
    """The experiment trackers of ``train.log`` (:mod:`kdbench.train.tracking`)."""
    started: float
    """``time.perf_counter()`` when this session began (its wall time is added to the state's)."""


def fit(run: Fit, batches: Iterator[dict[str, torch.Tensor]]) -> None:
    """Train ``run`` from its state's step to its total on ``batches`` (one batch per step).

    The steps' losses stay on the device (:class:`PendingSteps`) and are read once at every
    logging, evaluation and checkpoint step and at a stop: a non-finite one fails the run there,
    naming its step and term, before anything is saved."""
    cfg, state, total = run.train, run.state, run.total
    since = (time.perf_counter(), state.step)  # for the progress ETA
    pending = PendingSteps(fp16=cfg["amp"] == "fp16")
    while state.step < total:
        lr = _set_lr(run, state.step)
        data = to_device(next(batches), run.device, cfg["channels_last"])
        _step(run, data, pending)
        step = state.step
        logs = step % cfg["log_every"] == 0 or step == total
        evaluates = bool(cfg["eval_every"]) and step % cfg["eval_every"] == 0 and step < total
        saves = step % cfg["checkpoint_every"] == 0 and step < total
        reason = _stop_reason(step < total, current().world == 1 or logs or evaluates or saves)
        if logs or evaluates or saves or reason:  # one host read of the steps since the last
            _read(pending, state)
        if logs:
            _log(run, lr, since)
            run.trackers.log(state.history[-1])
        if evaluates:
            _evaluate_during(run)
            run.trackers.log(state.history[-1])
        if saves or reason:
            with writer_first():  # the other ranks go on (or stop) once it is written
                if current().writer:
                    elapsed = state.elapsed + time.perf_counter() - run.started
                    save(run.checkpoint, state, run.models, run.optimizer, run.scaler, elapsed)
        if reason:
            run.trackers.close()
            raise Stopped(reason, step)


def _stop_reason(running: bool, boundary: bool) -> str | None:
    """The stop request all ranks agree on (:func:`agreed_stop`), asked after every step alone
    (a host flag), but only at a ``boundary`` (a logging, evaluation or checkpoint step) when
    several processes train the run: asking them is a collective whose result the host must
    read, so a request waits at most ``log_every`` steps there. None once the last step is done."""
    return agreed_stop(stop_requested()) if running and boundary else None


def _read(pending: PendingSteps, state: TrainState) -> None:
    """Read the pending steps' losses into ``state.window`` (raising on a non-finite one), count
    the fp16 steps the scaler skipped, and spread the wait for the device over the steps read:
    on a GPU a step's own wall time is only the time to queue its kernels, and the read waits
    for them to run."""
    start = time.perf_counter()
    read = pending.read(mean_over_ranks)
    waited = time.perf_counter() - start
    state.window.extend(read.losses)
    state.skipped_steps += read.skipped
    n = len(read.losses)
    for i in range(len(state.step_times) - n, len(state.step_times)):
        state.step_times[i] += waited / n
    state.step_time += waited


def _set_lr(run: Fit, step: int) -> float:
    """Set the optimizer's learning rate for ``step`` by the run's schedule; return it."""
    cfg = run.train
    lr = cfg["lr"] * lr_factor(cfg["schedule"], step, run.total, cfg["warmup_steps"])
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _step(run: Fit, data: dict[str, torch.Tensor], pending: PendingSteps) -> None:
    """One training step; its values join ``pending`` (on the device), its time the state's."""
    state = run.state
    t0 = time.perf_counter()
    pending.add(train_step(
        run.stepping, data, state.step, run.total, run.spec.seed, run.train,
        run.optimizer, run.scaler, run.device,
    ))
    state.step_times.append(time.perf_counter() - t0)
    state.step_time += state.step_times[-1]
    state.step += 1


def _log(run: Fit, lr: float, since: tuple[float, int]) -> None:
    """Add a history entry for the window of steps since the last one; report progress."""
    state, step = run.state, run.state.step
    state.history.append(log_entry(state.window, step, step / run.per_epoch, lr))
    state.window.clear()
    if run.progress is None:
        return
    per_step = (time.perf_counter() - since[0]) / (step - since[1])
    run.progress(
        run.spec,
        {
            "step": step,
            "total": run.total,
            "epoch": step // run.per_epoch + 1,
            "loss": state.history[-1]["loss"],
            "eta_s": per_step * (run.total - step),
        },
    )


def log_entry(
    window: list[dict[str, float]], step: int, epoch: float, lr: float
) -> dict[str, Any]:
    """One history entry: the losses, and the method's statistics if it has any, averaged over
    the steps since the last entry."""
    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    loss = mean.pop("loss")
    stats = {k[len(STATISTICS) :]: mean.pop(k) for k in list(mean) if k.startswith(STATISTICS)}
    entry = {"step": step, "epoch": epoch, "lr": lr, "loss": loss, "losses": mean}
    return {**entry, "statistics": stats} if stats else entry


def _evaluate_during(run: Fit) -> None:
    """A scheduled evaluation: its headline joins the history; the best one so far (by mIoU) is
    kept with its per-class scores as ``best``, and its weights as ``model_best.pt`` beside the
    run's checkpoint (what ``--checkpoint best`` reports and ``kdbench figure`` can show)."""
    state = run.state
    metrics = run.evaluate()
    headline = {k: metrics[k] for k in HEADLINE}
    state.history.append({"step": state.step, "eval": headline})
    if state.best is None or (headline["miou"] or 0) > (state.best["miou"] or 0):
        per_class = {k: metrics[k] for k in PER_CLASS if k in metrics}
        state.best = {"step": state.step, **headline, **per_class}
        if current().writer:
            weights = {"model": run.models.model.state_dict(), "step": state.step}
            save_weights(run.checkpoint.with_name(BEST_WEIGHTS), weights)
