"""The executor of an imported teacher (:mod:`kdbench.config.imported`): load, evaluate once,
leave the weights where students read a teacher's.

Under the run's lease (:func:`kdbench.train.run.train_run`), :func:`evaluate_imported` checks
that the checkpoint file still has the SHA-256 its run id was made from, builds the teacher model
of the spec (``model.kind``, backbone, head; no pretrained weights), imports the file into it
(:func:`kdbench.models.imports.import_checkpoint`: strict, every tensor placed, one line naming
the file otherwise), evaluates it on the evaluation split under the suite's protocol
(:func:`kdbench.train.evaluation.evaluate`, the teacher's input x included) and writes
``model.pt`` = ``{"model": state_dict}`` in kdbench's names, as a trained teacher's run does, so
that :func:`kdbench.train.build.load_teacher` reads it unchanged. The record gains the metrics
(mIoU, per-class IoU, ...), the protocol, ``imported`` (path, format, SHA-256), the parameter
count (``student_params``, as a trained run's record names its model's), the wall time and the
environment.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import torch

from kdbench.config import RunSpec
from kdbench.config.imported import checkpoint_digest
from kdbench.cpus import configure_threads
from kdbench.distributed import current
from kdbench.errors import KdbenchError
from kdbench.models.imports import import_checkpoint
from kdbench.results.store import RunStore
from kdbench.train import checkpoint, gpu
from kdbench.train.build import build_datasets, build_model, pick_device
from kdbench.train.environment import environment
from kdbench.train.evaluation import describe, evaluate
from kdbench.train.fit import Progress
from kdbench.train.pipeline import resolve_workers
from kdbench.train.precision import autocast


def _checked_source(spec: RunSpec) -> dict[str, str]:
    """The spec's ``model.checkpoint``, its file unchanged since the suite was expanded."""
    source = spec.model["checkpoint"]
    path = Path(source["path"])
    if checkpoint_digest(path, f"run {spec.id}") != source["sha256"]:
        raise KdbenchError(
            f"teacher checkpoint {str(path)!r}: changed since the suite was resolved (SHA-256 "
            f"{source['sha256'][:12]}… expected); run the suite again to import the new file"
        )
    return source


def evaluate_imported(
    spec: RunSpec, store: RunStore, progress: Progress | None
) -> dict[str, Any]:
    """Import, evaluate and store the teacher of ``spec``; the record's fields (module doc)."""
    started = time.perf_counter()
    cpu_threads = configure_threads()
    device = pick_device(spec.device)
    gpu.configure(device)
    source = _checked_source(spec)
    _, eval_set = build_datasets(spec)
    model = build_model(spec, eval_set.num_classes, eval_set.x_channels, weights=False)
    import_checkpoint(model, source["path"], source["format"])
    channels_last = gpu.channels_last(spec.train, device)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    protocol = {**spec.eval, "batch_size": spec.eval["batch_size"] or spec.train["batch_size"]}
    metrics = evaluate(
        model, eval_set, uses_x=True, protocol=protocol, device=device,
        workers=resolve_workers(spec.train["workers"]),
        autocast=functools.partial(autocast, device, spec.train["amp"]),
        channels_last=channels_last,
    )
    if current().writer:
        checkpoint.save(store.run_dir(spec.id) / "model.pt", {"model": model.state_dict()})
    return {
        "metrics": metrics,
        "eval_protocol": describe(protocol),
        "imported": dict(source),
        "student_params": sum(p.numel() for p in model.parameters()),  # a trained run's name
        "timing": {"wall_time_s": time.perf_counter() - started},
        "env": {**environment(device), "cpu_threads": cpu_threads,
                "processes": current().world},
    }
