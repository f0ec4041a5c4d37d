"""The suite format: every section's keys, types, defaults and value checks (:data:`SUITE_SCHEMA`,
checked by :func:`kdbench.schema.check`); the README documents it."""

from __future__ import annotations

import re
from typing import Any

from kdbench.schema import Field, non_negative, one_of, positive

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _suite_name(value: str) -> str | None:
    return None if NAME.match(value) else "expected letters, digits, '_', '.', '-'"


def _pair(value: Any) -> str | None:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
    )
    return None if ok else "expected a list of two numbers"


AMP_MODES = ("off", "fp16", "bf16")


def amp_mode(value: Any) -> str:
    """``train.amp`` as one of :data:`AMP_MODES`; YAML reads a bare ``off`` as false."""
    return "off" if value is False else value


def _compile(value: Any) -> str | None:
    ok = value in (False, True, "max-autotune")
    return None if ok else "expected false, true or max-autotune"


def _amp(value: Any) -> str | None:
    return None if amp_mode(value) in AMP_MODES else "expected off, fp16 or bf16"


TRACKERS = ("tensorboard", "wandb", "mlflow")


def _trackers(value: Any) -> str | None:
    ok = isinstance(value, list) and all(v in TRACKERS for v in value)
    ok = ok and len(set(value)) == len(value)
    return None if ok else f"expected a list of distinct trackers among {', '.join(TRACKERS)}"


def _size(value: Any) -> str | None:
    ok = value is None or (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    return None if ok else "expected [height, width], positive integers, or null"


def _scales(value: Any) -> str | None:
    ok = value is None or (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    )
    return None if ok else "expected a non-empty list of positive numbers, or null"


def _fraction(value: Any) -> str | None:
    return None if 0 <= value < 1 else "expected a value in [0, 1)"


BUDGET_KINDS = ("steps", "flops", "seconds")


def _budget(value: Any) -> str | None:
    """``{steps|flops|seconds: positive number}`` (steps an integer), else an error text."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in BUDGET_KINDS:
        return "expected {steps: N}, {flops: F} or {seconds: S}"
    kind, amount = next(iter(value.items()))
    number = isinstance(amount, (int, float)) and not isinstance(amount, bool)
    if not number or amount <= 0 or (kind == "steps" and not isinstance(amount, int)):
        return f"budget {kind}: expected a positive {'integer' if kind == 'steps' else 'number'}"
    return None


def _budgets(value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    if value is None or not items:
        return None if value is None else "expected at least one budget"
    return next((problem for item in items if (problem := _budget(item))), None)


TRAIN_SCHEMA: dict[str, Field] = {
    "steps": Field((int,), 300, check=positive),
    "batch_size": Field((int,), 8, check=positive),
    "optimizer": Field((str,), "sgd", check=one_of("sgd", "adamw")),
    "lr": Field((float,), 0.02, check=positive),
    "momentum": Field((float,), 0.9, check=non_negative),
    "weight_decay": Field((float,), 5e-4, check=non_negative),
    "schedule": Field((str,), "poly", check=one_of("poly", "cosine", "constant")),
    "warmup_steps": Field((int,), 0, check=non_negative),
    "flip": Field((bool,), True),
    "scale": Field((list,), [0.75, 1.5], check=_pair),
    "crop": Field((list, type(None)), None, check=_size),
    "jitter": Field((float,), 0.0, check=_fraction),
    "workers": Field((int, type(None)), None, check=non_negative),
    "amp": Field((str, bool), "off", check=_amp),
    "channels_last": Field((bool, type(None)), None),
    "compile": Field((bool, str), False, check=_compile),
    "log_every": Field((int,), 10, check=positive),
    "eval_every": Field((int,), 0, check=non_negative),
    "checkpoint_every": Field((int,), 50, check=positive),
    "budget": Field((dict, list, type(None)), None, check=_budgets),
    "log": Field((list,), [], check=_trackers),
}
"""The training recipe; the same for every method of a suite (teachers may override it).
``crop`` null = the loaded size; ``workers`` null = one DataLoader worker per CPU the process may
use, at most 8 (the metrics do not depend on it, and it is not part of the run id).
``log``: the experiment trackers the run also writes to (:mod:`kdbench.train.tracking`; not part
of the run id either).
``channels_last`` null = on CUDA (:mod:`kdbench.train.gpu`); ``compile``: ``torch.compile`` the
student, the teacher's forward and the method (``true``, or ``max-autotune``).
``budget``: one budget (``{steps: N}``, ``{flops: F}`` or ``{seconds: S}``), a list of them (a
grid axis: every student run once per budget), or null for
``{steps: train.steps}`` (see :mod:`kdbench.train.budget`). Teachers train with
``teacher.train.budget`` if given, else ``train.steps`` steps, whatever the students' budget."""

EVAL_SCHEMA: dict[str, Field] = {
    "mode": Field((str,), "whole", check=one_of("whole", "slide")),
    "size": Field((list, type(None)), None, check=_size),
    "scale": Field((float, type(None)), None, check=positive),
    "window": Field((list, type(None)), None, check=_size),
    "stride": Field((list, type(None)), None, check=_size),
    "batch_size": Field((int, type(None)), None, check=positive),
    "scales": Field((list, type(None)), None, check=_scales),
    "flip": Field((bool,), False),
}
"""The evaluation protocol (kdbench.train.evaluation): labels at native resolution, the network
input resized to ``size`` or by ``scale`` (neither: as loaded), ``whole`` or ``slide``
inference; ``batch_size`` null = the training batch size. ``scales`` (e.g. [0.5, 0.75, 1.0, 1.25,
1.5, 1.75]) and ``flip``: multi-scale / flip evaluation, the softmax averaged over the views;
``scales: [1.0]`` resolves to null. At their defaults (null, false) the run id leaves them out
(:data:`kdbench.config.spec.IDENTITY_DEFAULTS`), so single-scale runs keep their ids."""

TEACHER_SCHEMA: dict[str, Field] = {
    "kind": Field((str,), "intermediate"),
    "backbone": Field((str, type(None)), None),
    "x_backbone": Field((str, type(None)), None),
    "pretrained": Field((str, bool, type(None)), None),
    "decoder_channels": Field((int,), 64, check=positive),
    "head": Field((str, dict, type(None)), None),
    "seed": Field((int, type(None)), None),
    "train": Field((dict,), None),
    "checkpoint": Field((str, type(None)), None),
    "format": Field((str,), "kdbench"),
}
"""The RGB-X teacher: ``backbone`` and ``head`` default to the students', ``seed`` null = the
run's seed. ``checkpoint`` (a path, relative to the suite file) imports the teacher's weights
instead of training it, read in ``format`` (``kdbench``, ``torchvision`` or ``cirkd``:
:mod:`kdbench.models.imports`); see :mod:`kdbench.config.imported`."""


def _open_fraction(value: Any) -> str | None:
    return None if 0.0 < value < 1.0 else "expected a fraction between 0 and 1"


TUNE_SCHEMA: dict[str, Field] = {
    "trials": Field((int,), 0, check=non_negative),
    "split": Field((float,), 0.2, check=_open_fraction),
    "seed": Field((int,), 0),
}
"""Tuning: ``trials`` option sets per method row (0 = no tuning), each trained on the training
split minus a held-out ``split`` fraction and scored on it (:mod:`kdbench.train.tuning`)."""

SUITE_SCHEMA: dict[str, Field] = {
    "name": Field((str,), required=True, check=_suite_name),
    "description": Field((str,), ""),
    "seeds": Field((list,), [0]),
    "datasets": Field((dict, list), required=True),
    "students": Field((list,), required=True),
    "decoder_channels": Field((int,), 64, check=positive),
    "head": Field((str, dict), "fpn"),
    "teacher": Field((dict,), None, children=TEACHER_SCHEMA),
    "methods": Field((dict, list), required=True),
    "train": Field((dict,), None, children=TRAIN_SCHEMA),
    "eval": Field((dict,), None, children=EVAL_SCHEMA),
    "device": Field((str,), "auto", check=one_of("auto", "cpu", "cuda")),
    "launch": Field((dict,), None),
    "plugins": Field((list,), []),
    "tune": Field((dict,), None, children=TUNE_SCHEMA),
}
