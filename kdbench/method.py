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

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.data.base import IGNORE_INDEX
from kdbench.errors import KdbenchError
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.options import Option, resolve, signature_options
from kdbench.registry import METHODS

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "FeatureSource",
    "Method",
    "MethodSet",
    "MethodStage",
    "aligned_pairs",
    "build_method",
    "canonical",
    "check_head_tap",
    "distilled_channels",
    "distilled_features",
    "distilled_reductions",
    "feature_pairs",
    "in_loss_precision",
    "method_options",
    "resize_labels",
    "resize_like",
    "resolve_stages",
    "stage_sum",
    "terms_text",
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
    """Nearest-neighbour resize of (N, H, W) int64 labels to ``size``; identity if equal.

    ``nearest-exact`` takes each output pixel's label from the input pixel under its centre
    (``nearest`` is shifted by half an input pixel); labels are exact in float32 up to 2^24.
    """
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return F.interpolate(label[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()


def in_loss_precision(outputs: Outputs) -> Outputs:
    """``outputs`` with every float16/bfloat16 tensor cast to float32 (wider dtypes, and
    fields that are not tensors or tuples of tensors, unchanged).

    The cast is differentiable: gradients flow back to the half-precision tensors.
    """

    def widen(x: Any) -> Any:
        half = isinstance(x, Tensor) and x.dtype in (torch.float16, torch.bfloat16)
        return x.float() if half else x

    values = {f.name: getattr(outputs, f.name) for f in fields(outputs)}
    return Outputs(
        **{
            k: tuple(widen(t) for t in v) if isinstance(v, tuple) else widen(v)
            for k, v in values.items()
        }
    )


def resize_like(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear resize of (N, C, H, W) ``x`` to the spatial size of ``ref``; identity if equal."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class MethodStage:
    """A run a method needs before its students train: its own kind of run in the run graph.

    The suite's expansion (:mod:`kdbench.config.stages`) makes one run of kind ``kind`` per
    teacher and setting of the method's stage ``options`` (shared by every student of that
    teacher with those settings); it needs the teacher, and each such student needs it. The
    stage run executes ``execute`` (``"module:function"``, :func:`kdbench.config.register_kind`)
    with the launch resources of ``launch`` and trains with the teacher's data recipe, ``recipe``
    over it and ``steps`` = the value of the option named ``steps``. Before a student trains, the
    build step hands the method its stage run's folder (:meth:`Method.load_stage`).
    """

    kind: str
    execute: str
    options: tuple[str, ...]
    """The method's options that configure the stage (they enter the stage run's id)."""
    steps: str
    """The option that is the stage's number of steps."""
    recipe: Mapping[str, Any]
    """``train`` keys of the stage (optimizer, lr, schedule, ...) over the teacher's recipe."""
    launch: str = "teacher"


class Method(nn.Module):
    """Base class of a distillation method.

    Subclasses set ``taps`` (the teacher outputs they read, any of ``"logits"``, ``"stages"``,
    ``"decoder"``; empty means the teacher is not run at all), take ``(student, teacher)``
    :class:`TapInfo` plus keyword options with defaults in ``__init__``, and implement
    :meth:`forward`.

    Every call computes in float32, or in the inputs' dtype where that is wider, with autocast
    disabled: :meth:`__call__` casts float16/bfloat16 outputs to float32 and turns autocast off
    around :meth:`forward`, so a loss is the same function of its inputs whatever precision the
    models run at (casting alone is not enough: autocast would recast at the next matmul).

    Options are the keyword parameters of ``__init__`` after the two tap infos, resolved by the
    one option resolver (:mod:`kdbench.options`): the annotation is the type, constraints sit
    beside it (``tau: Annotated[float, Gt(0)] = 1.0``), ``Literal`` lists the choices.
    :meth:`resolve_options` validates them and fills in every default; constructing a method
    checks its options the same way (:meth:`__new__`), so a bad value is a one-line
    :class:`KdbenchError` however the method is built.

    A method that declares ``taps`` gets a teacher: constructing it without the teacher's
    :class:`TapInfo`, or calling it without the teacher's outputs, is a :class:`KdbenchError`,
    so ``__init__`` and :meth:`forward` of such a method take ``teacher`` as non-optional.
    """

    taps: ClassVar[tuple[str, ...]] = ()
    search_space: ClassVar[Mapping[str, Any]] = {}
    """Option -> :mod:`kdbench.search` space that ``tune:`` samples (loss weights, temperature)."""
    stage: ClassVar[MethodStage | None] = None
    """The run the method needs before its students (MasKD's token learning), or None."""

    def __new__(cls, *args: Any, **options: Any) -> Method:
        """Check the keyword ``options`` (:meth:`resolve_options`) before ``__init__`` runs.

        Called without arguments (``copy.deepcopy``, unpickling) it checks nothing. A
        ``feature`` option naming a head's own tap (``aspp``) is checked against the models'
        :class:`TapInfo` (:func:`check_head_tap`), so every feature method refuses it alike.
        """
        if args or options:
            cls.resolve_options(options)
            if options.get("feature") == "aspp":
                check_head_tap(_registered_name(cls), "aspp", args[:2])
        return super().__new__(cls)

    def __init__(self, student: TapInfo, teacher: TapInfo | None) -> None:
        super().__init__()
        if self.taps and teacher is None:
            raise self._no_teacher("taps")
        self.student_info = student
        self.teacher_info = teacher

    def _no_teacher(self, what: str) -> KdbenchError:
        name = _registered_name(type(self))
        return KdbenchError(
            f"method {name!r} reads the teacher's {', '.join(self.taps)} but was given no "
            f"teacher {what}"
        )

    def __call__(  # type: ignore[override]
        self, student: Outputs, teacher: Outputs | None, batch: Batch
    ) -> dict[str, Tensor]:
        """:meth:`forward` in float32 (or wider) with autocast disabled (class docstring)."""
        if self.taps and teacher is None:
            raise self._no_teacher("outputs")
        device = student.logits.device.type
        with torch.autocast(device, enabled=False):
            return super().__call__(
                in_loss_precision(student),
                None if teacher is None else in_loss_precision(teacher),
                batch,
            )

    def forward(  # noqa: D102 - documented on the class
        self, student: Outputs, teacher: Outputs | None, batch: Batch
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def statistics(self) -> dict[str, Tensor]:
        """Detached 0-d tensors describing the last forward (e.g. DWLD's weight statistics).

        The training loop logs them in the run's history beside the losses (averaged over each
        logging interval, under ``"statistics"``); they never enter the loss. They stay on the
        device (no host synchronisation per step). The default is none.
        """
        return {}

    def before_optimizer_step(self) -> None:
        """Called by the training loop once per step after the backward pass and before the
        optimizer steps: gradients are complete, unscaled (under a float16 gradient scaler) and
        synchronised across ranks. For actions around the optimiser step on the method's own
        parameters (e.g. Af-DCD's gradient clipping of its connectors); whatever state such an
        action keeps must live in the module's parameters or buffers, so the run's checkpoint
        holds it. The default does nothing.
        """

    def load_stage(self, folder: Path) -> None:
        """Read what the method's :attr:`stage` run wrote into ``folder`` (its run folder).

        Called once by :func:`build_method`, before training, for a method that declares a
        stage; the artefact is read with ``torch.load(weights_only=True)``."""
        raise NotImplementedError(f"{type(self).__name__} declares no stage")

    def extra_parameters(self) -> int:
        """Number of trainable parameters the method adds to the student's."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @classmethod
    def options(cls) -> dict[str, Option]:
        """The method's options, read from ``__init__`` (after ``self`` and the tap infos)."""
        return signature_options(cls.__init__, skip=3)

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` checked (:func:`kdbench.options.resolve`) with every default filled in.

        The result is canonical JSON data (tuples become lists, keys sorted), so two spellings
        of the same settings (``kd`` and ``{kd: {tau: 1.0}}``) resolve to equal dicts and hash to
        one run id. Methods with nested options (LIX) override this to resolve them recursively.
        """
        return canonical(resolve(cls.options(), options, f"method {_registered_name(cls)!r}"))


def method_options(cls: type[Method]) -> dict[str, Any]:
    """The keyword options of a method class and their defaults."""
    return {name: option.default for name, option in cls.options().items()}


class MethodSet(Method):
    """A row of a results table: one or more methods whose loss terms are summed.

    ``{"kd": KD(...), "cwd": CWD(...)}`` is the composite row "kd+cwd"; a single method is a set
    of one, and the empty set is the student baseline. Term names are prefixed by the method name
    when more than one method contributes, so ``kd+kd`` style duplicates stay distinct.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> MethodSet:
        """A set has no options of its own (its terms checked theirs)."""
        return nn.Module.__new__(cls)

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

    def before_optimizer_step(self) -> None:
        """Every term's :meth:`Method.before_optimizer_step`, in order."""
        for method in self.terms.values():
            method.before_optimizer_step()

    def statistics(self) -> dict[str, Tensor]:
        """Every term's statistics, prefixed by the method name as the loss terms are."""
        return {
            f"{key}/{name}" if len(self.terms) > 1 else name: value
            for key, method in self.terms.items()
            for name, value in method.statistics().items()
        }


def build_method(
    terms: list[tuple[str, Mapping[str, Any]]],
    student: TapInfo,
    teacher: TapInfo | None,
    stages: Mapping[int, Path] | None = None,
) -> MethodSet:
    """Build the method set of one run from ``[(registered name, options), ...]``.

    ``stages`` (what training passes) maps the index of each term whose method declares a
    :attr:`Method.stage` to the folder of its stage run, handed to :meth:`Method.load_stage`;
    without ``stages`` (loss tests, FLOP counts) such a method keeps its initial artefact.
    Raises :class:`KdbenchError` for an unknown method or option, naming both (constructing a
    method checks its options: :meth:`Method.__new__`), and for a staged term missing from
    ``stages``.
    """
    built: dict[str, Method] = {}
    for i, (name, options) in enumerate(terms):
        cls = METHODS.get(name)
        key = name if name not in built else f"{name}{i}"
        built[key] = cls(student, teacher, **cls.resolve_options(options))
        if cls.stage is not None and stages is not None:
            if i not in stages:
                raise KdbenchError(
                    f"method {name!r} needs its {cls.stage.kind} run; none was given"
                )
            built[key].load_stage(stages[i])
    return MethodSet(built)


def _changed(
    options: Mapping[str, Any], defaults: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """``key=value`` for each option that differs from ``defaults``, nested options (LIX's) as
    dotted keys (``dwld.layers=1``)."""
    out = []
    for key, value in sorted(options.items()):
        default = defaults.get(key)
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            out += _changed(value, default, f"{prefix}{key}.")
        elif value != default:
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            out.append(f"{prefix}{key}={text}")
    return out


def terms_text(terms: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """A row's methods as ``kd + adv + cwd(feature=aspp, weight=50.0)``: each registered name
    with the resolved options that differ from its defaults; ``none`` for the baseline."""
    parts = []
    for name, options in terms:
        changed = _changed(options, METHODS.get(name).resolve_options({}))
        parts.append(f"{name}({', '.join(changed)})" if changed else name)
    return " + ".join(parts) or "none"


def check_options(name: str, cls: type[Method], options: Mapping[str, Any]) -> None:
    """Raise a :class:`KdbenchError` naming the first option ``cls`` does not take.

    Delegates to ``cls.resolve_options``, so nested options (``lix``) are checked too.
    """
    del name  # the message names the method's registered name
    cls.resolve_options(options)


def _registered_name(cls: type) -> str:
    """The name ``cls`` is registered under (its class name if it is not registered)."""
    return next((e.name for e in METHODS if e.obj is cls), cls.__name__)


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data: tuples -> lists, mapping keys sorted (for hashing)."""
    return json.loads(json.dumps(value, sort_keys=True, default=_not_json))


def _not_json(value: Any) -> Any:
    raise KdbenchError(
        f"option value {value!r}: expected plain YAML data (numbers, strings, lists)"
    )


def zero_loss(ref: Tensor) -> Tensor:
    """A zero that keeps the graph and device of ``ref`` (for batches with nothing to distil)."""
    return ref.sum() * 0.0


# Option checks and feature selection shared by the methods that distil features.

FeatureSource = Literal["decoder", "stages", "aspp"]
"""Which features a method distils: the decoder feature the classifier reads, encoder stages, or
the ASPP projection of a DeepLabV3 head (``Outputs.aspp``: before the 3x3 conv that gives the
decoder feature; both models need a head that has it, :func:`check_head_tap`)."""


def check_head_tap(method: str, tap: str, infos: Sequence[TapInfo | None]) -> None:
    """Raise a one-line :class:`KdbenchError` unless each given model (student, teacher; None
    skipped) has the head tap ``tap`` (``aspp``: ``TapInfo.aspp_channels`` set)."""
    from kdbench.models.heads import heads_with_tap

    for role, info in zip(("student", "teacher"), infos, strict=False):
        if isinstance(info, TapInfo) and info.aspp_channels is None:
            raise KdbenchError(
                f"method {method!r}: option feature: {tap} reads the head's {tap} tap, which the "
                f"{role}'s head does not have; heads with it: {', '.join(heads_with_tap(tap))}"
            )

T = TypeVar("T")


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
    feature: FeatureSource,
    stages: Sequence[int],
    decoder: T,
    per_stage: Sequence[T],
    aspp: T | None,
) -> list[T]:
    """``[decoder]`` for ``feature="decoder"``, ``[per_stage[i] for i in stages]`` for stages,
    ``[aspp]`` for ``feature="aspp"`` (refused when it is None: the head has no such tap)."""
    if feature == "decoder":
        return [decoder]
    if feature == "stages":
        return [per_stage[i] for i in stages]
    if feature == "aspp":
        if aspp is None:
            raise KdbenchError("feature: aspp: the model's head has no aspp tap (only deeplabv3)")
        return [aspp]
    raise ValueError(f"feature must be 'decoder', 'stages' or 'aspp', got {feature!r}")


def distilled_features(
    outputs: Outputs, feature: FeatureSource, stages: Sequence[int]
) -> list[Tensor]:
    """The maps a method distils from one model's outputs, in the same order for both models.

    ``feature="decoder"``: ``[outputs.decoder]``, one (N, D, h, w) map (``stages`` is ignored);
    ``feature="stages"``: ``[outputs.stages[i] for i in stages]``, each (N, C_i, H/r_i, W/r_i),
    with ``stages`` as returned by :func:`resolve_stages`; ``feature="aspp"``:
    ``[outputs.aspp]``, one (N, D_a, h, w) map (a DeepLabV3 head's ASPP projection).
    """
    return _select(feature, stages, outputs.decoder, outputs.stages, outputs.aspp)


def distilled_channels(info: TapInfo, feature: FeatureSource, stages: Sequence[int]) -> list[int]:
    """Channels of each map :func:`distilled_features` returns, known before any forward pass.

    ``[info.decoder_channels]`` (D), ``[info.stage_channels[i] for i in stages]`` (C_i) or
    ``[info.aspp_channels]`` (D_a); for sizing adapters and projectors.
    """
    return _select(
        feature, stages, info.decoder_channels, info.stage_channels, info.aspp_channels
    )


def distilled_reductions(info: TapInfo, feature: FeatureSource, stages: Sequence[int]) -> list[int]:
    """Downsampling factor, relative to the input, of each map :func:`distilled_features` returns.

    ``[info.logit_reduction]`` (the decoder feature and the ASPP projection are at the logits'
    resolution) or ``[info.stage_reductions[i] for i in stages]`` (r_i).
    """
    aspp = info.logit_reduction if info.aspp_channels is not None else None
    return _select(feature, stages, info.logit_reduction, info.stage_reductions, aspp)


def aligned_pairs(
    student_maps: Sequence[Tensor],
    teacher_maps: Sequence[Tensor],
    connectors: Sequence[Callable[[Tensor], Tensor]] = (),
    *,
    resize: bool = True,
    cast: bool = True,
    detach: bool = False,
) -> list[tuple[Tensor, Tensor]]:
    """Map j of each model, aligned for a loss: ``[(s_j, t_j), ...]``.

    - t_j = ``teacher_maps[j]``, detached with ``detach`` (the teacher is a fixed target);
    - s_j = a_j(``student_maps[j]``) with a_j = ``connectors[j]`` (the method's adapter,
      (N, C_S, h, w) -> (N, C_T, h, w)) when connectors are given, then, with ``resize``,
      bilinearly resized to t_j's spatial size (:func:`resize_like`);
    - with ``cast``, t_j is cast to s_j's dtype (the loss precision: :meth:`Method.__call__`
      has already widened half precision; a float64 student gets a float64 target).

    The student keeps its graph: gradients reach the student's maps and the connectors.
    """
    pairs = []
    for j, (fs, ft) in enumerate(zip(student_maps, teacher_maps, strict=True)):
        ft = ft.detach() if detach else ft
        fs = connectors[j](fs) if connectors else fs
        fs = resize_like(fs, ft) if resize else fs
        pairs.append((fs, ft.to(fs.dtype) if cast else ft))
    return pairs


def feature_pairs(
    student: Outputs,
    teacher: Outputs,
    feature: FeatureSource,
    stages: Sequence[int],
    connectors: Sequence[Callable[[Tensor], Tensor]] = (),
    **how: bool,
) -> list[tuple[Tensor, Tensor]]:
    """The selected maps of both models (:func:`distilled_features`), aligned by
    :func:`aligned_pairs` (``how``: its ``resize``, ``cast`` and ``detach`` switches)."""
    return aligned_pairs(
        distilled_features(student, feature, stages),
        distilled_features(teacher, feature, stages),
        connectors,
        **how,
    )


def stage_sum(losses: Iterable[Tensor]) -> Tensor:
    """Σ_j L_j, the loss summed over the distilled maps (scalars, one stacked sum)."""
    return torch.stack(list(losses)).sum()
