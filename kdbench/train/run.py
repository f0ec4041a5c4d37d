"""One run from spec to record: build, train (resuming from its own checkpoint), evaluate, record.

``train_run(spec, results_dir)`` is what every executor calls, in this process or in a SLURM
job. It never loses a finished result: a complete record is returned as it is, and a failure
writes a ``failed`` record (one-line error plus traceback) instead of raising.
"""

from __future__ import annotations

import functools
import json
import platform
import resource
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from kdbench.config import RunSpec
from kdbench.data.holdout import PARTS, HoldOut
from kdbench.errors import KdbenchError
from kdbench.method import MethodSet, build_method
from kdbench.models.student import Segmenter
from kdbench.registry import DATASETS, TEACHERS
from kdbench.results.store import RunStore, write_json_atomic
from kdbench.train import budget, checkpoint, tuning
from kdbench.train.cost import calibrate_step_seconds, count_step_flops, median_step_seconds
from kdbench.train.loop import (
    Models,
    batch_indices,
    collate,
    evaluate,
    lr_factor,
    to_device,
    train_step,
)

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


def build_model(spec: RunSpec, num_classes: int, x_channels: int) -> torch.nn.Module:
    model = spec.model
    if spec.kind == "teacher":
        return TEACHERS.get(model["kind"])(
            model["backbone"],
            num_classes,
            x_channels,
            x_backbone=model["x_backbone"],
            decoder_channels=model["decoder_channels"],
            pretrained=model["pretrained"],
        )
    return Segmenter(
        model["backbone"],
        num_classes,
        decoder_channels=model["decoder_channels"],
        pretrained=model["pretrained"],
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
    model = build_model(teacher, num_classes, x_channels)
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


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on a GPU; the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def train_run(
    spec: RunSpec, results_dir: str | Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Train and evaluate ``spec`` unless its record is complete; return its record."""
    store = RunStore(results_dir)
    existing = store.load(spec.id)
    if existing is not None and existing.get("status") == "complete":
        return existing
    record: dict[str, Any] = {
        "id": spec.id,
        "suite": spec.suite,
        "kind": spec.kind,
        "status": "running",
        "axes": spec.axes,
        "config": spec.to_dict(),
        "started": time.time(),
    }
    store.write(record)
    try:
        record.update(_train(spec, store, progress))
        record["status"] = "complete"
    except Exception as exc:  # a failed run is a record, never a lost suite
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        record.update(
            status="failed",
            error=f"{type(exc).__name__}: {message}",
            traceback=traceback.format_exc(),
        )
    record["finished"] = time.time()
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


def _save(
    path: Path,
    state: TrainState,
    models: Models,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    elapsed: float,
) -> None:
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
    """Load the run's own checkpoint into the modules; a fresh state if there is none."""
    if not path.exists():
        return TrainState()
    saved = checkpoint.load(path)
    models.model.load_state_dict(saved["model"])
    models.method.load_state_dict(saved["method"])
    optimizer.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved["scaler"])
    state = TrainState(**{f.name: saved[f.name] for f in fields(TrainState)})
    state.resumed_from = [*state.resumed_from, state.step]
    return state


def _build(spec: RunSpec, store: RunStore, device: torch.device) -> tuple[Any, Any, Models]:
    """The data sets and models of a run: the trained model, its method and, for a student
    whose method reads the teacher, the frozen teacher."""
    torch.manual_seed(spec.seed)
    train_set, eval_set = build_datasets(spec)
    model = build_model(spec, train_set.num_classes, train_set.x_channels)
    teacher = None
    if spec.kind != "teacher" and spec.method_terms:  # the baseline never runs its teacher
        teacher = load_teacher(
            store, _teacher_spec(spec, store), train_set.num_classes, train_set.x_channels
        )
    method: MethodSet = build_method(
        list(spec.method_terms), model.tap_info, teacher.tap_info if teacher is not None else None
    )
    fmt = torch.channels_last if spec.train["channels_last"] else torch.contiguous_format
    for module in (model, method, teacher):
        if module is not None:
            module.to(device, memory_format=fmt)
    models = Models(model, method, teacher if method.taps else None, uses_x=spec.kind == "teacher")
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
    device = pick_device(spec.device)
    cfg = spec.train
    tuned_spec, tuned = tuning.choose(spec, store)  # builds the method; the run keeps spec.id
    train_set, eval_set, models = _build(tuned_spec, store, device)
    optimizer = _optimizer(_trainable(models), cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg["amp"] and device.type == "cuda")
    ckpt_path = store.checkpoint_path(spec.id)
    state = _restore(ckpt_path, models, optimizer, scaler)

    def evaluate_model() -> dict[str, Any]:
        return evaluate(models.model, eval_set, models.uses_x, cfg["batch_size"], device, cfg)

    normals = spec.dataset_options.get("modality") == "normals"
    first = batch_indices(len(train_set), cfg["batch_size"], spec.seed, 0)
    first_batch = to_device(collate(train_set, first), device, cfg["channels_last"])
    flops = count_step_flops(models, first_batch, cfg["steps"])
    spent = _budget(spec, store, train_set, models, first_batch, flops.total, device, normals)
    total = spent.steps
    per_epoch = max(1, len(train_set) // cfg["batch_size"])
    models.model.train()
    window: list[dict[str, float]] = []
    session_start, session_step = time.perf_counter(), state.step
    while state.step < total:
        step = state.step
        lr = cfg["lr"] * lr_factor(cfg["schedule"], step, total, cfg["warmup_steps"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        indices = batch_indices(len(train_set), cfg["batch_size"], spec.seed, step)
        data = to_device(collate(train_set, indices), device, cfg["channels_last"])
        t0 = time.perf_counter()
        window.append(
            train_step(
                models, data, step, total, spec.seed, cfg, optimizer, scaler, device, normals
            )
        )
        state.step_times.append(time.perf_counter() - t0)
        state.step_time += state.step_times[-1]
        state.step = step = step + 1
        if step % cfg["log_every"] == 0 or step == total:
            state.history.append(_log_entry(window, step, step / per_epoch, lr))
            window = []
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
            if state.best is None or (headline["miou"] or 0) > (state.best["miou"] or 0):
                state.best = {"step": step, **headline}
        if step % cfg["checkpoint_every"] == 0 and step < total:
            _save(
                ckpt_path,
                state,
                models,
                optimizer,
                scaler,
                state.elapsed + time.perf_counter() - start,
            )

    metrics = evaluate_model()
    wall = state.elapsed + time.perf_counter() - start
    memory = peak_memory_mb(device)
    checkpoint.save(store.run_dir(spec.id) / "model.pt", {"model": models.model.state_dict()})
    write_json_atomic(store.history_path(spec.id), state.history)
    ckpt_path.unlink(missing_ok=True)
    return {
        "metrics": metrics,
        "best_val": state.best,
        "resumed_from": state.resumed_from,
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
            "device_hours": wall / 3600,
            "budget": spent.to_dict(_run_budget(spec)),
        },
        "student_params": sum(p.numel() for p in models.model.parameters()),
        "extra_params": models.method.extra_parameters(),
        "env": environment(device),
        **({"tuning": tuned} if tuned else {}),
    }


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
    normals: bool,
) -> budget.Resolved:
    """The run's step count under its budget (:mod:`kdbench.train.budget`), measured on the
    first batch ``data``: a seconds budget times training steps of copies of the models, a
    matched one counts the other rows' FLOPs with the suite's teacher."""
    cfg = spec.train

    def make_step(copies: Models) -> Callable[[int], None]:
        optimizer = _optimizer(_trainable(copies), cfg)
        scaler = torch.amp.GradScaler(device.type, enabled=cfg["amp"] and device.type == "cuda")
        n = budget.CALIBRATION_STEPS

        def step(i: int) -> None:
            train_step(copies, data, i, n, spec.seed, cfg, optimizer, scaler, device, normals)

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
                out.append(count_step_flops(row, data, cfg["steps"]).total)
        return out

    return budget.steps_for(
        _run_budget(spec),
        flops_per_step,
        lambda: calibrate_step_seconds(models, make_step, budget.CALIBRATION_STEPS),
        store.root / "budgets" / f"{spec.id}.json",
        rows_flops,
    )


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
