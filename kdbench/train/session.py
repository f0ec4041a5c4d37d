"""One training session of a run, in the process that holds its lease (and, under data
parallelism, in every rank beside it): build, restore, resolve the budget, train, evaluate,
save the weights and history, and return what the record gains."""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from typing import Any

import torch

from kdbench.config import RunSpec
from kdbench.cpus import configure_threads
from kdbench.distributed import current, data_parallel, writer_first
from kdbench.errors import KdbenchError
from kdbench.results.files import write_json_atomic
from kdbench.results.store import RunStore
from kdbench.train import budget, checkpoint, gpu, measure, tuning
from kdbench.train.build import build_models, optimizer, pick_device
from kdbench.train.cost import StepFlops, count_step_flops, median_step_seconds
from kdbench.train.environment import environment, memory_source, peak_memory_mb, session
from kdbench.train.evaluation import describe as describe_protocol
from kdbench.train.evaluation import evaluate
from kdbench.train.fit import Fit, Progress, fit
from kdbench.train.loop import Models, to_device
from kdbench.train.pipeline import resolve_workers, train_loader
from kdbench.train.pipeline import start as start_workers
from kdbench.train.precision import autocast, check_weights, grad_scaler
from kdbench.train.state import restore, weights
from kdbench.train.tracking import open_trackers


def train(spec: RunSpec, store: RunStore, progress: Progress | None) -> dict[str, Any]:
    """Train ``spec`` (from its checkpoint, if any) and return the record's results."""
    started = time.perf_counter()
    cpu_threads = configure_threads()
    device = pick_device(spec.device)
    gpu.configure(device)
    cfg = {**spec.train, "channels_last": gpu.channels_last(spec.train, device)}
    _check_batch_size(cfg["batch_size"])
    tuned_spec, tuned = tuning.choose(spec, store)  # builds the method; the run keeps spec.id
    train_set, eval_set, models = build_models(tuned_spec, store, device)
    opt, scaler = optimizer(models, cfg, device), grad_scaler(device, cfg["amp"])
    ckpt_path = store.checkpoint_path(spec.id)
    with writer_first():  # rank 0 moves a corrupt checkpoint aside before the others look
        state = restore(ckpt_path, models, opt, scaler)
    protocol = {**spec.eval, "batch_size": spec.eval["batch_size"] or cfg["batch_size"]}
    first = _first_batch(spec, cfg, train_set, device)
    flops = count_step_flops(models, first, cfg["steps"]).times(current().world)
    spent = measure.resolve(spec, store, train_set, models, first, flops.total, device)
    batches = start_workers(train_loader(
        train_set, seed=spec.seed, train={**cfg, "steps": spent.steps}, normals=_normals(spec),
        start=state.step, device=device,
    ))
    models.model.train()
    state.sessions.append({**session(), "step": state.step})
    stepping = gpu.compiled(_stepping(models, device), cfg["compile"])
    run = Fit(
        spec, models, stepping, opt, scaler, device, cfg, state, spent.steps,
        per_epoch=max(1, len(train_set) // cfg["batch_size"]),
        checkpoint=ckpt_path,
        evaluate=functools.partial(_evaluate, models, eval_set, protocol, device, cfg),
        progress=progress,
        trackers=open_trackers(spec, store, state.history, current().writer),
        started=started,
    )
    fit(run, batches)
    result = _finish(run, store, protocol, flops, spent, cpu_threads)
    result = {**result, **({"tuning": tuned} if tuned else {})}
    run.trackers.close(result)
    return result


def _check_batch_size(batch_size: int) -> None:
    world = current().world
    if batch_size % world:
        raise KdbenchError(
            f"train.batch_size: {batch_size} does not divide among the run's "
            f"{world} processes; expected a multiple of {world}"
        )


def _normals(spec: RunSpec) -> bool:
    return spec.dataset_options.get("modality") == "normals"


def _first_batch(
    spec: RunSpec, cfg: dict[str, Any], train_set: Any, device: torch.device
) -> dict[str, torch.Tensor]:
    """The run's first training batch on ``device`` (what costs and budgets are measured on)."""
    loader = train_loader(
        train_set, seed=spec.seed, train={**cfg, "workers": 0}, normals=_normals(spec), start=0,
        device=device,
    )
    return to_device(next(iter(loader)), device, cfg["channels_last"])


def _stepping(models: Models, device: torch.device) -> Models:
    """What the step calls: under data parallelism, synchronised wrappers."""
    return replace(
        models,
        model=data_parallel(models.model, device),
        method=data_parallel(models.method, device),
    )


def _evaluate(
    models: Models, eval_set: Any, protocol: dict[str, Any], device: torch.device,
    cfg: dict[str, Any],
) -> dict[str, Any]:
    """The trained model's metrics on the evaluation split under ``protocol``."""
    return evaluate(
        models.model,
        eval_set,
        uses_x=models.uses_x,
        protocol=protocol,
        device=device,
        workers=resolve_workers(cfg["workers"]),
        autocast=functools.partial(autocast, device, cfg["amp"]),
        channels_last=cfg["channels_last"],
    )


def _finish(
    run: Fit,
    store: RunStore,
    protocol: dict[str, Any],
    flops: StepFlops,
    spent: budget.Resolved,
    cpu_threads: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate the trained model, write its weights and history (rank 0), drop the checkpoint,
    and return the record's results."""
    state, device, ranks = run.state, run.device, current()
    check_weights(weights(run.models), state.step)
    metrics = run.evaluate()
    wall = state.elapsed + time.perf_counter() - run.started
    memory = peak_memory_mb(device)
    if ranks.writer:
        model_state = {"model": run.models.model.state_dict()}
        checkpoint.save(store.run_dir(run.spec.id) / "model.pt", model_state)
        write_json_atomic(store.history_path(run.spec.id), state.history)
        run.checkpoint.unlink(missing_ok=True)
    return {
        "metrics": metrics,
        "eval_protocol": describe_protocol(protocol),
        "best_val": state.best,
        "resumed_from": state.resumed_from,
        "sessions": state.sessions,
        "amp": {"mode": run.spec.train["amp"], "skipped_steps": state.skipped_steps},
        "timing": {
            "wall_time_s": wall,
            "step_time_s": state.step_time / max(1, run.total),
            "peak_memory_mb": memory,
            "peak_memory_source": memory_source(device),
        },
        "cost": {
            "flops_per_step": flops.to_dict(),
            "steps": run.total,
            "flops": flops.total * run.total,
            "step_s_median": median_step_seconds(state.step_times, state.resumed_from),
            "peak_memory_mb": memory,
            "peak_memory_source": memory_source(device),
            "device_hours": wall * ranks.world / 3600,
            "budget": spent.to_dict(measure.run_budget(run.spec)),
        },
        "student_params": sum(p.numel() for p in run.models.model.parameters()),
        "extra_params": run.models.method.extra_parameters(),
        "env": {
            **environment(device),
            "cpu_threads": cpu_threads,
            "processes": ranks.world,
            "backend": ranks.backend,
        },
    }
