"""One run from spec to record: build, train (resuming from its own checkpoint), evaluate, record.

``train_run(spec, results_dir)`` is what every executor calls, in this process or in a SLURM
job. It never loses a finished result: a complete record is returned as it is, and a failure
writes a ``failed`` record (one-line error plus traceback) instead of raising.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import platform
import resource
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from kdbench.config import RunSpec
from kdbench.cpus import configure_threads
from kdbench.data.holdout import PARTS, HoldOut
from kdbench.errors import KdbenchError
from kdbench.launch.context import Stopped, current_attempt, end_attempt, stop_requested
from kdbench.method import MethodSet, build_method
from kdbench.models.student import Segmenter
from kdbench.provenance import provenance
from kdbench.registry import DATASETS, TEACHERS, load_plugin_files
from kdbench.results.files import StorageError, remove_temp_files, write_json_atomic
from kdbench.results.lease import Lease, describe, read_lease, slurm_job
from kdbench.results.store import RunStore
from kdbench.train import budget, checkpoint, tuning
from kdbench.train.cost import calibrate_step_seconds, count_step_flops, median_step_seconds
from kdbench.train.distributed import (
    Decision,
    agreed_stop,
    convert_sync_batchnorm,
    current,
    data_parallel,
    leader_decides,
    writer_first,
)
from kdbench.train.evaluation import describe as describe_protocol
from kdbench.train.evaluation import evaluate
from kdbench.train.loop import Models, lr_factor, to_device, train_step
from kdbench.train.pipeline import resolve_workers, train_loader
from kdbench.train.pipeline import start as start_workers
from kdbench.train.precision import autocast, check_weights, grad_scaler
from kdbench.train.tracking import open_trackers

Progress = Callable[[RunSpec, dict[str, Any]], None]
"""Called every ``log_every`` steps with ``{"step", "total", "epoch", "loss", "eta_s"}``."""


def pick_device(name: str) -> torch.device:
    """``auto`` = CUDA where present, else the CPU; ``cuda`` without a GPU is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise KdbenchError("device: 'cuda' requested but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def build_datasets(spec: RunSpec) -> tuple[Any, Any]:
    """The train and eval splits of the run's data set (shared by the runs of one process); for
    a tuning trial the fit and held-out parts of the training split instead."""
    train, evaluation = _datasets(spec.dataset, json.dumps(spec.dataset_options, sort_keys=True))
    holdout = spec.train.get("holdout")
    if holdout:
        return tuple(HoldOut(train, holdout["split"], part, holdout["seed"]) for part in PARTS)
    return train, evaluation


@functools.lru_cache(maxsize=2)
def _datasets(name: str, options: str) -> tuple[Any, Any]:
    cls = DATASETS.get(name)
    return cls("train", **json.loads(options)), cls("eval", **json.loads(options))


def build_model(
    spec: RunSpec, num_classes: int, x_channels: int, *, weights: bool = True
) -> torch.nn.Module:
    """The run's model; ``weights=False`` skips the pretrained weights (a checkpoint follows)."""
    model = spec.model
    head = {"head": model["head"]["name"], "head_options": model["head"]["options"]}
    pretrained = model["pretrained"] if weights else None
    if spec.kind == "teacher":
        return TEACHERS.get(model["kind"])(
            model["backbone"],
            num_classes,
            x_channels,
            x_backbone=model["x_backbone"],
            decoder_channels=model["decoder_channels"],
            pretrained=pretrained,
            **head,
        )
    return Segmenter(
        model["backbone"],
        num_classes,
        decoder_channels=model["decoder_channels"],
        pretrained=pretrained,
        **head,
    )


def load_teacher(
    store: RunStore, teacher: RunSpec, num_classes: int, x_channels: int
) -> torch.nn.Module:
    """The trained, frozen teacher of a student run (from the teacher run's ``model.pt``)."""
    record = store.load(teacher.id)
    if record is None or record.get("status") != "complete":
        raise KdbenchError(
            f"teacher run {teacher.id} is not complete; run the suite's teachers first"
        )
    model = build_model(teacher, num_classes, x_channels, weights=False)
    model.load_state_dict(checkpoint.load(store.run_dir(teacher.id) / "model.pt")["model"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def environment(device: torch.device) -> dict[str, Any]:
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


def train_run(
    spec: RunSpec,
    results_dir: str | Path,
    progress: Progress | None = None,
    wait: bool = False,
) -> dict[str, Any]:
    """Train and evaluate ``spec`` unless its record is complete; return its record.

    One writer per run: training happens under the run's lease (:mod:`kdbench.results.lease`).
    When another live process holds it, the run is left to that process: the returned record
    has ``status == "running"`` and ``holder`` (nothing is written), or, with ``wait``, this
    waits until that process is done and returns its record (taking the run over if it died).
    A distilling student first waits for its teacher while a live process trains it. An
    unreadable record is moved aside and the run trained again. A storage problem (full disk,
    no permission) raises :class:`~kdbench.results.files.StorageError`; any other failure
    becomes a ``failed`` record, which never replaces a complete one. A stop request
    (:mod:`kdbench.launch.context`) checkpoints the run at a step boundary, records the attempt
    as ``stopped`` (the record stays ``running``: the checkpoint resumes it) and raises
    :class:`Stopped` to the caller.

    When several processes train the run (:mod:`kdbench.train.distributed`), every rank calls
    this: rank 0 does all of the above and tells the others whether it trains; they train
    beside it, write nothing, and return ``{"status": "follower"}``.
    """
    store = RunStore(results_dir)
    if not current().writer:
        return _follow(spec, store)
    decision = Decision()
    try:
        return _lead(spec, store, progress, wait, decision)
    finally:
        decision.tell(False)  # the run did not train here: the other ranks return too


def _follow(spec: RunSpec, store: RunStore) -> dict[str, Any]:
    """A rank other than 0 of a data-parallel run: train beside rank 0 when it does, write
    nothing. Its return value only says so; rank 0's is the run's record."""
    if leader_decides():
        _train(spec, store, None)
    return {"id": spec.id, "status": "follower", "rank": current().rank}


def _lead(
    spec: RunSpec, store: RunStore, progress: Progress | None, wait: bool, decision: Decision
) -> dict[str, Any]:
    """:func:`train_run` in rank 0 (or the only process)."""
    existing = _usable_record(store, spec.id)
    if existing is not None and existing.get("status") == "complete":
        return existing
    if spec.teacher_id is not None:
        wait_for(store, spec.teacher_id)
    lease = Lease(store.run_dir(spec.id))
    while (holder := lease.acquire()) is not None:
        if not wait:
            return busy_record(spec, holder)
        wait_for(store, spec.id)
    with lease:
        existing = _usable_record(store, spec.id)
        if existing is not None and existing.get("status") == "complete":
            return existing  # finished by the previous holder
        remove_temp_files(store.run_dir(spec.id))
        return _train_under_lease(spec, store, progress, lease, decision)


def _usable_record(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """The run's record; an unreadable one is moved aside (and the run counts as missing)."""
    record, problem = store.inspect(run_id)
    if problem is not None:
        aside = store.quarantine(run_id)
        print(f"kdbench: run {run_id}: {problem}; moved to {aside}, training again",
              file=sys.stderr)
    return record


def wait_for(store: RunStore, run_id: str, poll_s: float = 0.5) -> None:
    """Return once ``run_id`` is complete or no live process holds its lease."""
    while store.status(run_id) == "running":
        time.sleep(poll_s)


def busy_record(spec: RunSpec, holder: dict[str, Any]) -> dict[str, Any]:
    """The (unwritten) record of a run another live process is training."""
    return {
        "id": spec.id,
        "suite": spec.suite,
        "kind": spec.kind,
        "status": "running",
        "axes": spec.axes,
        "holder": describe(holder),
        "error": f"being trained by {describe(holder)}",
    }


def _train_under_lease(
    spec: RunSpec, store: RunStore, progress: Progress | None, lease: Lease, decision: Decision
) -> dict[str, Any]:
    existing = store.inspect(spec.id)[0]
    attempts = list((existing or {}).get("attempts", []))
    attempt = current_attempt()
    record: dict[str, Any] = {
        "id": spec.id,
        "suite": spec.suite,
        "kind": spec.kind,
        "status": "running",
        "axes": spec.axes,
        "config": spec.to_dict(),
        "provenance": provenance(),
        "started": time.time(),
        "attempts": [*attempts, attempt],
    }
    store.write(record)
    try:
        load_plugin_files(spec.plugins)
        decision.tell(True)
        record.update(_train(spec, store, progress))
        record["status"] = "complete"
    except StorageError:
        raise  # the results folder cannot be written: no record can say so
    except Stopped as exc:  # still "running" for tables: it resumes from its checkpoint
        record["stopped"] = str(exc)
        record["attempts"] = [*attempts, end_attempt(attempt, "stopped")]
        store.write(record)
        raise
    except Exception as exc:  # a failed run is a record, never a lost suite
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        record.update(
            status="failed",
            error=f"{type(exc).__name__}: {message}",
            traceback=traceback.format_exc(),
        )
    record["finished"] = time.time()
    record["attempts"] = [*attempts, end_attempt(attempt, record["status"])]
    if lease.lost:  # another process took the run over (our heartbeat stalled): it writes
        return busy_record(spec, read_lease(store.run_dir(spec.id)) or {})
    store.write(record)
    return record


def _teacher_spec(spec: RunSpec, store: RunStore) -> RunSpec:
    """A student's teacher spec, rebuilt from the teacher's record in the store."""
    record = store.load(spec.teacher_id or "")
    if record is None:
        raise KdbenchError(f"teacher run {spec.teacher_id} has no record in {store.root}")
    return RunSpec.from_dict(record["config"])


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


def _save(
    path: Path,
    state: TrainState,
    models: Models,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    elapsed: float,
) -> None:
    check_weights(_weights(models), state.step)
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


def _restore(
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


def _build(spec: RunSpec, store: RunStore, device: torch.device) -> tuple[Any, Any, Models]:
    """The data sets and models of a run: the trained model, its method and, for a student
    whose method reads the teacher, the frozen teacher."""
    torch.manual_seed(spec.seed)
    train_set, eval_set = build_datasets(spec)
    model = build_model(spec, train_set.num_classes, train_set.x_channels)
    if current().world > 1:
        model = convert_sync_batchnorm(model)
    teacher = None
    if spec.kind != "teacher" and spec.method_terms:  # the baseline never runs its teacher
        teacher = load_teacher(
            store, _teacher_spec(spec, store), train_set.num_classes, train_set.x_channels
        )
    method: MethodSet = build_method(
        list(spec.method_terms), model.tap_info, teacher.tap_info if teacher is not None else None
    )
    if current().world > 1:  # its projectors' batch norm (CIRKD's) sees the global batch too
        method = convert_sync_batchnorm(method)
    fmt = torch.channels_last if spec.train["channels_last"] else torch.contiguous_format
    for module in (model, method, teacher):
        if module is not None:
            module.to(device, memory_format=fmt)
    models = Models(
        model,
        method,
        teacher if method.taps else None,
        uses_x=spec.kind == "teacher",
        aux_weight=model.aux_weight,
    )
    return train_set, eval_set, models


def _log_entry(
    window: list[dict[str, float]], step: int, epoch: float, lr: float
) -> dict[str, Any]:
    """One history entry: the losses averaged over the steps since the last entry."""
    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    loss = mean.pop("loss")
    return {"step": step, "epoch": epoch, "lr": lr, "loss": loss, "losses": mean}


def _train(spec: RunSpec, store: RunStore, progress: Progress | None) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_threads = configure_threads()
    device = pick_device(spec.device)
    cfg = spec.train
    ranks = current()
    if cfg["batch_size"] % ranks.world:
        raise KdbenchError(
            f"train.batch_size: {cfg['batch_size']} does not divide among the run's "
            f"{ranks.world} processes; expected a multiple of {ranks.world}"
        )
    tuned_spec, tuned = tuning.choose(spec, store)  # builds the method; the run keeps spec.id
    train_set, eval_set, models = _build(tuned_spec, store, device)
    optimizer = _optimizer(_trainable(models), cfg)
    scaler = grad_scaler(device, cfg["amp"])
    ckpt_path = store.checkpoint_path(spec.id)
    with writer_first():  # rank 0 moves a corrupt checkpoint aside before the others look
        state = _restore(ckpt_path, models, optimizer, scaler)

    protocol = {**spec.eval, "batch_size": spec.eval["batch_size"] or cfg["batch_size"]}
    workers = resolve_workers(cfg["workers"])

    def evaluate_model() -> dict[str, Any]:
        return evaluate(
            models.model,
            eval_set,
            uses_x=models.uses_x,
            protocol=protocol,
            device=device,
            workers=workers,
            autocast=functools.partial(autocast, device, cfg["amp"]),
            channels_last=cfg["channels_last"],
        )

    normals = spec.dataset_options.get("modality") == "normals"
    first_batch = to_device(
        next(iter(train_loader(
            train_set, seed=spec.seed, train={**cfg, "workers": 0}, normals=normals, start=0,
            device=device,
        ))),
        device,
        cfg["channels_last"],
    )
    flops = count_step_flops(models, first_batch, cfg["steps"]).times(ranks.world)
    spent = _budget(spec, store, train_set, models, first_batch, flops.total, device)
    total = spent.steps
    per_epoch = max(1, len(train_set) // cfg["batch_size"])
    batches = start_workers(
        train_loader(
            train_set,
            seed=spec.seed,
            train={**cfg, "steps": total},
            normals=normals,
            start=state.step,
            device=device,
        )
    )
    models.model.train()
    stepping = replace(  # what the step calls: under data parallelism, synchronised wrappers
        models,
        model=data_parallel(models.model, device),
        method=data_parallel(models.method, device),
    )
    state.sessions.append({**session(), "step": state.step})
    trackers = open_trackers(spec, store, state.history, ranks.writer)
    window = state.window
    session_start, session_step = time.perf_counter(), state.step
    while state.step < total:
        step = state.step
        lr = cfg["lr"] * lr_factor(cfg["schedule"], step, total, cfg["warmup_steps"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        data = to_device(next(batches), device, cfg["channels_last"])
        t0 = time.perf_counter()
        losses, skipped = train_step(
            stepping, data, step, total, spec.seed, cfg, optimizer, scaler, device
        )
        window.append(losses)
        state.skipped_steps += skipped
        state.step_times.append(time.perf_counter() - t0)
        state.step_time += state.step_times[-1]
        state.step = step = step + 1
        if step % cfg["log_every"] == 0 or step == total:
            state.history.append(_log_entry(window, step, step / per_epoch, lr))
            trackers.log(state.history[-1])
            window.clear()
            if progress is not None:
                per_step = (time.perf_counter() - session_start) / (step - session_step)
                progress(
                    spec,
                    {
                        "step": step,
                        "total": total,
                        "epoch": step // per_epoch + 1,
                        "loss": state.history[-1]["loss"],
                        "eta_s": per_step * (total - step),
                    },
                )
        if cfg["eval_every"] and step % cfg["eval_every"] == 0 and step < total:
            headline = _headline(evaluate_model())
            state.history.append({"step": step, "eval": headline})
            trackers.log(state.history[-1])
            if state.best is None or (headline["miou"] or 0) > (state.best["miou"] or 0):
                state.best = {"step": step, **headline}
        reason = agreed_stop(stop_requested()) if step < total else None
        if (step % cfg["checkpoint_every"] == 0 and step < total) or reason:
            with writer_first():  # the other ranks go on (or stop) once it is written
                if ranks.writer:
                    _save(
                        ckpt_path,
                        state,
                        models,
                        optimizer,
                        scaler,
                        state.elapsed + time.perf_counter() - start,
                    )
        if reason:
            trackers.close()
            raise Stopped(reason, step)

    check_weights(_weights(models), state.step)
    metrics = evaluate_model()
    wall = state.elapsed + time.perf_counter() - start
    memory = peak_memory_mb(device)
    if ranks.writer:
        checkpoint.save(store.run_dir(spec.id) / "model.pt", {"model": models.model.state_dict()})
        write_json_atomic(store.history_path(spec.id), state.history)
        ckpt_path.unlink(missing_ok=True)
    result = {
        "metrics": metrics,
        "eval_protocol": describe_protocol(protocol),
        "best_val": state.best,
        "resumed_from": state.resumed_from,
        "sessions": state.sessions,
        "amp": {"mode": cfg["amp"], "skipped_steps": state.skipped_steps},
        "timing": {
            "wall_time_s": wall,
            "step_time_s": state.step_time / max(1, total),
            "peak_memory_mb": memory,
            "peak_memory_source": _memory_source(device),
        },
        "cost": {
            "flops_per_step": flops.to_dict(),
            "steps": total,
            "flops": flops.total * total,
            "step_s_median": median_step_seconds(state.step_times, state.resumed_from),
            "peak_memory_mb": memory,
            "peak_memory_source": _memory_source(device),
            "device_hours": wall * ranks.world / 3600,
            "budget": spent.to_dict(_run_budget(spec)),
        },
        "student_params": sum(p.numel() for p in models.model.parameters()),
        "extra_params": models.method.extra_parameters(),
        "env": {
            **environment(device),
            "cpu_threads": cpu_threads,
            "processes": ranks.world,
            "backend": ranks.backend,
        },
        **({"tuning": tuned} if tuned else {}),
    }
    trackers.close(result)
    return result


def _weights(models: Models) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer of the trained model and its method, by name."""
    return [
        *((f"model.{n}", t) for n, t in models.model.state_dict().items()),
        *((f"method.{n}", t) for n, t in models.method.state_dict().items()),
    ]


def _run_budget(spec: RunSpec) -> dict[str, Any]:
    """The run's resolved budget (records written before budgets existed: its steps)."""
    return spec.train.get("budget") or {"steps": spec.train["steps"]}


def _budget(
    spec: RunSpec,
    store: RunStore,
    train_set: Any,
    models: Models,
    data: dict[str, torch.Tensor],
    flops_per_step: int,
    device: torch.device,
) -> budget.Resolved:
    """The run's step count under its budget (:mod:`kdbench.train.budget`), measured on the
    first batch ``data``: a seconds budget times training steps of copies of the models, a
    matched one counts the other rows' FLOPs with the suite's teacher."""
    cfg = spec.train

    def make_step(copies: Models) -> Callable[[int], None]:
        optimizer = _optimizer(_trainable(copies), cfg)
        scaler = grad_scaler(device, cfg["amp"])
        n = budget.CALIBRATION_STEPS

        def step(i: int) -> None:
            train_step(copies, data, i, n, spec.seed, cfg, optimizer, scaler, device)

        return step

    def rows_flops(rows: list[Any]) -> list[int]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            teacher = models.teacher or load_teacher(
                store, _teacher_spec(spec, store), train_set.num_classes, train_set.x_channels
            ).to(device)
            out = []
            for terms in rows:
                method = build_method(
                    [(n, o) for n, o in terms], models.model.tap_info, teacher.tap_info
                ).to(device)
                row = Models(models.model, method, teacher, models.uses_x)
                out.append(count_step_flops(row, data, cfg["steps"]).times(current().world).total)
        return out

    return budget.steps_for(
        _run_budget(spec),
        flops_per_step,
        functools.partial(calibrate, models, make_step),
        store.root / "budgets" / f"{spec.id}.json",
        rows_flops,
    )


def calibrate(models: Models, make_step: Callable[[Models], Callable[[int], None]]) -> float:
    """Seconds per step of ``models`` for a seconds budget, measured in this process alone."""
    if current().world > 1:
        raise KdbenchError(
            "train.budget: {seconds: ...} is calibrated by one process; a run trained by "
            f"{current().world} processes (launch.tasks_per_node x nodes) takes steps or flops"
        )
    return calibrate_step_seconds(models, make_step, budget.CALIBRATION_STEPS)


def _trainable(models: Models) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates: the trained model's and the method's."""
    return [p for m in (models.model, models.method) for p in m.parameters() if p.requires_grad]


def _memory_source(device: torch.device) -> str:
    return "cuda_max_allocated" if device.type == "cuda" else "process_max_rss"


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("miou", "mfsc", "pixel_acc")}


def _optimizer(params: list[torch.nn.Parameter], train: dict[str, Any]) -> torch.optim.Optimizer:
    if train["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=train["lr"], weight_decay=train["weight_decay"])
    return torch.optim.SGD(
        params, lr=train["lr"], momentum=train["momentum"], weight_decay=train["weight_decay"]
    )
