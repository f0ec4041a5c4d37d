"""What a run does differently on a GPU, and ``train.compile``.

On CUDA, by default (on the CPU nothing changes, so its results stay as they were):

- channels-last memory format for the models and the image batches (``train.channels_last``:
  null, the default, = on CUDA; true or false forces it): convolutions in NHWC run on the
  tensor cores without layout transposes;
- ``torch.backends.cudnn.benchmark``: cuDNN times its convolution algorithms on the first batch
  of each shape and keeps the fastest (training crops have one shape, evaluation a few);
- fused optimisers (``SGD`` and ``AdamW`` with ``fused=True``): the update of all parameters in
  a few kernels instead of a loop over them, and under fp16 the gradient scaler's inf check is
  passed to the kernel rather than read.

``train.compile`` (false, true or ``max-autotune``, on any device): ``torch.compile`` the
trained model, the teacher (its forward: it is frozen) and the method. The distillation losses
stay in float32 with autocast disabled inside the method (:class:`kdbench.method.Method`), which
compiled code keeps. A compiled step may round differently from an eager one, so ``compile`` is
part of a run's identity (false, the default, leaves the ids as they were:
:data:`kdbench.config.spec.IDENTITY_DEFAULTS`; ``channels_last: null`` hashes as the earlier
``false``: :data:`kdbench.config.spec.IDENTITY_ALIASES`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from kdbench.train.loop import Models


def channels_last(train: dict[str, Any], device: torch.device) -> bool:
    """Whether the run's models and batches are channels-last (``null``: on CUDA)."""
    value = train["channels_last"]
    return device.type == "cuda" if value is None else bool(value)


def configure(device: torch.device) -> None:
    """Process-wide settings of a run on ``device`` (cuDNN autotuning on CUDA)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def optimizer_options(device: torch.device) -> dict[str, Any]:
    """Keyword arguments of the optimiser on ``device``: fused kernels on CUDA."""
    return {"fused": True} if device.type == "cuda" else {}


def compiled(models: Models, mode: bool | str, backend: str = "inductor") -> Models:
    """``models`` with the trained model, the teacher and the method compiled (``mode`` true or
    ``max-autotune``); the modules themselves (and their state dicts) are shared, unchanged.
    ``backend``: torch.compile's (``eager`` traces the graphs without generating code, as the
    CPU tests of the benchmark do)."""
    if mode is False:
        return models
    options = {"mode": "max-autotune"} if mode == "max-autotune" else {}

    def compile_module(module: nn.Module | None) -> Any:
        return None if module is None else torch.compile(module, backend=backend, **options)

    return replace(
        models,
        model=compile_module(models.model),
        method=compile_module(models.method),
        teacher=compile_module(models.teacher),
    )


__all__ = ["channels_last", "compiled", "configure", "optimizer_options"]
