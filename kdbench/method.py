"""The method API: what every distillation method is and how composite rows combine them.

A method is a small ``nn.Module`` registered by name (``@register_method``). It is built once
per run from the static tap description of the student and the teacher, and called once per
training step::

    losses = method(student_outputs, teacher_outputs, batch)   # {"kd": tensor, ...}

It returns only distillation terms (already weighted); the trainer adds the task cross-entropy
once and sums everything. Learnable parts (adapters, projectors, controllers, anchors) are
submodules and state (queues, initialisation flags) are buffers, so the optimizer and the
checkpoint include them without special cases. The pure loss maths lives in functions next to
each class, testable alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.data.base import IGNORE_INDEX
from kdbench.errors import KdbenchError
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "Method",
    "MethodSet",
    "build_method",
    "method_options",
    "resize_labels",
    "resize_like",
    "zero_loss",
]


@dataclass
class Batch:
    """One training batch and where training is.

    - ``rgb``: (N, 3, H, W) float; ``x``: (N, C_x, H, W) float, the geometric modality;
    - ``label``: (N, H, W) int64 with :data:`IGNORE_INDEX` for unlabelled pixels;
    - ``step`` of ``total_steps``: for schedules inside a method (e.g. DKD's warm-up).
    """

    rgb: Tensor
    x: Tensor
    label: Tensor
    step: int = 0
    total_steps: int = 1

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, self.step / max(1, self.total_steps))


def resize_labels(label: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of (N, H, W) int64 labels to ``size``; identity if equal."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return F.interpolate(label[:, None].float(), size=size, mode="nearest")[:, 0].long()


def resize_like(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear resize of (N, C, H, W) ``x`` to the spatial size of ``ref``; identity if equal."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class Method(nn.Module):
    """Base class of a distillation method.

    Subclasses set ``taps`` (the teacher outputs they read, any of ``"logits"``, ``"stages"``,
    ``"decoder"``; empty means the teacher is not run at all), take ``(student, teacher)``
    :class:`TapInfo` plus keyword options with defaults in ``__init__``, and implement
    :meth:`forward`.
    """

    taps: ClassVar[tuple[str, ...]] = ()

    def __init__(self, student: TapInfo, teacher: TapInfo | None) -> None:
        super().__init__()
        self.student_info = student
        self.teacher_info = teacher

    def forward(  # noqa: D102 - documented on the class
        self, student: Outputs, teacher: Outputs | None, batch: Batch
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def extra_parameters(self) -> int:
        """Number of trainable parameters the method adds to the student's."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def method_options(cls: type[Method]) -> dict[str, Any]:
    """The keyword options of a method class and their defaults (``kdbench list methods``)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[3:]
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY or p.default is not p.empty}


class MethodSet(Method):
    """A row of a results table: one or more methods whose loss terms are summed.

    ``{"kd": KD(...), "cwd": CWD(...)}`` is the composite row "kd+cwd"; a single method is a set
    of one, and the empty set is the student baseline. Term names are prefixed by the method name
    when more than one method contributes, so ``kd+kd`` style duplicates stay distinct.
    """

    def __init__(self, terms: Mapping[str, Method]) -> None:
        first = next(iter(terms.values()), None)
        super().__init__(
            first.student_info if first else None,  # type: ignore[arg-type]
            first.teacher_info if first else None,
        )
        self.terms = nn.ModuleDict(terms)
        self.taps = tuple(sorted({t for m in terms.values() for t in m.taps}))

    def forward(
        self, student: Outputs, teacher: Outputs | None, batch: Batch
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for key, method in self.terms.items():
            for name, value in method(student, teacher, batch).items():
                out[f"{key}/{name}" if len(self.terms) > 1 else name] = value
        return out


def build_method(
    terms: list[tuple[str, Mapping[str, Any]]], student: TapInfo, teacher: TapInfo | None
) -> MethodSet:
    """Build the method set of one run from ``[(registered name, options), ...]``.

    Raises :class:`KdbenchError` for an unknown method or option, naming both.
    """
    built: dict[str, Method] = {}
    for i, (name, options) in enumerate(terms):
        cls = METHODS.get(name)
        check_options(name, cls, options)
        key = name if name not in built else f"{name}{i}"
        built[key] = cls(student, teacher, **options)
    return MethodSet(built)


def check_options(name: str, cls: type[Method], options: Mapping[str, Any]) -> None:
    """Raise a :class:`KdbenchError` naming the first option ``cls`` does not take."""
    known = method_options(cls)
    for key in options:
        if key not in known:
            listed = ", ".join(known) or "none"
            raise KdbenchError(f"method {name!r}: unknown option {key!r}; options: {listed}")


def zero_loss(ref: Tensor) -> Tensor:
    """A zero that keeps the graph and device of ``ref`` (for batches with nothing to distil)."""
    return ref.sum() * 0.0

