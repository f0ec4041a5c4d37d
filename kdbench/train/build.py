"""Building a run: its device, data sets, model, method, frozen teacher and optimizer."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

from kdbench.config import RunSpec, is_teacher
from kdbench.config.stages import stage_ids
from kdbench.data.holdout import PARTS, HoldOut
from kdbench.distributed import convert_sync_batchnorm, current
from kdbench.errors import KdbenchError
from kdbench.method import MethodSet, build_method
from kdbench.models.heads import emit_aux
from kdbench.models.student import Segmenter
from kdbench.registry import DATASETS, TEACHERS
from kdbench.results.store import RunStore
from kdbench.train import checkpoint, gpu
from kdbench.train.loop import Models


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
    if is_teacher(spec.kind):
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


def teacher_spec(spec: RunSpec, store: RunStore) -> RunSpec:
    """A student's teacher spec, rebuilt from the teacher's record in the store."""
    record = store.load(spec.teacher_id or "")
    if record is None:
        raise KdbenchError(f"teacher run {spec.teacher_id} has no record in {store.root}")
    return RunSpec.from_dict(record["config"])


def stage_folders(spec: RunSpec, teacher: RunSpec, store: RunStore) -> dict[int, Path]:
    """Term index -> the folder of the complete stage run that term's method needs after
    ``teacher`` (:mod:`kdbench.config.stages`); a stage run that ``spec`` does not need or
    that is not complete is a :class:`KdbenchError`."""
    out = {}
    for i, run_id in stage_ids(spec.method_terms, teacher).items():
        if run_id not in spec.needs or store.status(run_id) != "complete":
            name = spec.method_terms[i][0]
            raise KdbenchError(
                f"run {spec.id}: method {name!r} needs its stage run {run_id}, which is not "
                "complete; run the suite (its stage runs come before its students)"
            )
        out[i] = store.run_dir(run_id)
    return out


def build_models(
    spec: RunSpec, store: RunStore, device: torch.device
) -> tuple[Any, Any, Models]:
    """The data sets and models of a run: the trained model, its method and, for a student
    whose method reads the teacher, the frozen teacher."""
    torch.manual_seed(spec.seed)
    train_set, eval_set = build_datasets(spec)
    model = build_model(spec, train_set.num_classes, train_set.x_channels)
    if current().world > 1:
        model = convert_sync_batchnorm(model)
    teacher, stages = None, None
    if spec.kind != "teacher" and spec.method_terms:  # the baseline never runs its teacher
        teacher_run = teacher_spec(spec, store)
        teacher = load_teacher(store, teacher_run, train_set.num_classes, train_set.x_channels)
        stages = stage_folders(spec, teacher_run, store)
    method: MethodSet = build_method(
        list(spec.method_terms), model.tap_info, teacher.tap_info if teacher is not None else None,
        stages,
    )
    if teacher is not None and "aux" in method.taps:
        emit_aux(teacher)  # the method reads the frozen teacher's auxiliary logits
    if current().world > 1:  # its projectors' batch norm (CIRKD's) sees the global batch too
        method = convert_sync_batchnorm(method)
    fmt = torch.channels_last if gpu.channels_last(spec.train, device) else torch.contiguous_format
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


def trainable(models: Models) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates: the trained model's and the method's."""
    return [p for m in (models.model, models.method) for p in m.parameters() if p.requires_grad]


def optimizer(
    models: Models, train: dict[str, Any], device: torch.device
) -> torch.optim.Optimizer:
    """The run's optimizer (``train.optimizer``) over :func:`trainable` ``models``, fused on
    CUDA (:func:`kdbench.train.gpu.optimizer_options`)."""
    params, fused = trainable(models), gpu.optimizer_options(device)
    if train["optimizer"] == "adamw":
        return torch.optim.AdamW(
            params, lr=train["lr"], weight_decay=train["weight_decay"], **fused
        )
    return torch.optim.SGD(
        params,
        lr=train["lr"],
        momentum=train["momentum"],
        weight_decay=train["weight_decay"],
        **fused,
    )
