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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.data.base import IGNORE_INDEX
from kdbench.errors import KdbenchError
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import METHODS

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "FeatureSource",
    "Method",
    "MethodSet",
    "build_method",
    "check_choice",
    "distilled_channels",
    "distilled_features",
    "distilled_reductions",
    "method_options",
    "resize_labels",
    "resize_like",
    "resolve_stages",
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
    search_space: ClassVar[Mapping[str, Any]] = {}
    """Option -> :mod:`kdbench.search` space that ``tune:`` samples (loss weights, temperature)."""

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
    return {
        p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY or p.default is not p.empty
    }


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

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
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


# Option checks and feature selection shared by the methods that distil features.

FeatureSource = Literal["decoder", "stages"]
"""Which features a method distils: the decoder feature the classifier reads, or encoder stages."""

T = TypeVar("T")


def check_choice(method: str, key: str, value: object, choices: Sequence[str]) -> None:
    """Raise a :class:`KdbenchError` unless option ``key`` of ``method`` is one of ``choices``.

    The message lists the choices in the given order, e.g. ``must be 'a', 'b' or 'c', got 'x'``.
    """
    if value in choices:
        return
    quoted = [repr(c) for c in choices]
    listed = f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
    raise KdbenchError(f"method {method!r}: option {key!r} must be {listed}, got {value!r}")


def resolve_stages(
    method: str, stages: Sequence[int], student: TapInfo, teacher: TapInfo
) -> tuple[int, ...]:
    """Check the ``stages`` option: Python indices into both stage lists, e.g. ``(-2, -1)``.

    Index i selects ``student.stages[i]`` and ``teacher.stages[i]``, so negative indices pair
    the deepest stages even when the two encoders have different numbers of stages. Raises
    :class:`KdbenchError` for an empty selection, a non-integer, an index out of range of either
    list, or a stage selected twice.
    """
    ns, nt = len(student.stage_channels), len(teacher.stage_channels)
    selected = tuple(stages)
    if not selected:
        raise KdbenchError(f"method {method!r}: option 'stages' must select at least one stage")
    for i in selected:
        if isinstance(i, bool) or not isinstance(i, int):
            raise KdbenchError(f"method {method!r}: option 'stages' expects integers, got {i!r}")
        if not (-ns <= i < ns and -nt <= i < nt):
            raise KdbenchError(
                f"method {method!r}: option 'stages' index {i} is out of range for "
                f"{ns} student and {nt} teacher stages"
            )
    if len({i % ns for i in selected}) < len(selected) or len({i % nt for i in selected}) < len(
        selected
    ):
        raise KdbenchError(f"method {method!r}: option 'stages' selects a stage twice: {selected}")
    return selected


def _select(
    feature: FeatureSource, stages: Sequence[int], decoder: T, per_stage: Sequence[T]
) -> list[T]:
    """``[decoder]`` for ``feature="decoder"``, ``[per_stage[i] for i in stages]`` for stages."""
    if feature == "decoder":
        return [decoder]
    if feature == "stages":
        return [per_stage[i] for i in stages]
    raise ValueError(f"feature must be 'decoder' or 'stages', got {feature!r}")


def distilled_features(
    outputs: Outputs, feature: FeatureSource, stages: Sequence[int]
) -> list[Tensor]:
    """The maps a method distils from one model's outputs, in the same order for both models.

    ``feature="decoder"``: ``[outputs.decoder]``, one (N, D, h, w) map (``stages`` is ignored);
    ``feature="stages"``: ``[outputs.stages[i] for i in stages]``, each (N, C_i, H/r_i, W/r_i),
    with ``stages`` as returned by :func:`resolve_stages`.
    """
    return _select(feature, stages, outputs.decoder, outputs.stages)


def distilled_channels(info: TapInfo, feature: FeatureSource, stages: Sequence[int]) -> list[int]:
    """Channels of each map :func:`distilled_features` returns, known before any forward pass.

    ``[info.decoder_channels]`` (D) or ``[info.stage_channels[i] for i in stages]`` (C_i); for
    sizing adapters and projectors.
    """
    return _select(feature, stages, info.decoder_channels, info.stage_channels)


def distilled_reductions(info: TapInfo, feature: FeatureSource, stages: Sequence[int]) -> list[int]:
    """Downsampling factor, relative to the input, of each map :func:`distilled_features` returns.

    ``[info.logit_reduction]`` (the decoder feature is at the logits' resolution) or
    ``[info.stage_reductions[i] for i in stages]`` (r_i).
    """
    return _select(feature, stages, info.logit_reduction, info.stage_reductions)
