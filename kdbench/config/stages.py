"""Method stages as runs: a method that declares a :class:`~kdbench.method.MethodStage` (MasKD's
token learning) gets one stage run per teacher and setting of the stage's options.

The stage run is a function of its teacher and of the method's stage options alone
(:func:`stage_run`), so every student of that teacher whose method has those options needs the
same run (its id is in the student's ``needs``, and so in the student's id), and the build step
finds it again from the student's teacher (:func:`stage_ids`). It needs the teacher, trains with
the teacher's data recipe (its batch size, crop and augmentation), the stage's ``recipe`` over
it and the stage's step option as ``steps``, and is of the stage's own kind
(:func:`kdbench.config.spec.known_kind` registers it with its executor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kdbench.config.spec import RunSpec
from kdbench.config.validate import methods_code
from kdbench.registry import METHODS

NOT_STAGE_RECIPE = ("budget", "eval_every", "log")
"""Keys of the teacher's recipe that a stage does not take over (it has its own steps, never
evaluates and logs no trackers)."""


def stage_run(teacher: RunSpec, name: str, options: Mapping[str, Any]) -> RunSpec | None:
    """The stage run that the method ``name`` with resolved ``options`` needs after
    ``teacher``, or None if the method declares no stage."""
    from kdbench.method import canonical  # imports torch: only where a method is resolved

    stage = METHODS.get(name).stage
    if stage is None:
        return None
    own = canonical({key: options[key] for key in stage.options})
    recipe = {k: v for k, v in teacher.train.items() if k not in NOT_STAGE_RECIPE}
    terms = ((name, own),)
    return RunSpec(
        kind=stage.kind, dataset=teacher.dataset, dataset_options=teacher.dataset_options,
        model=teacher.model, method=name, method_terms=terms, seed=teacher.seed,
        train={**recipe, **stage.recipe, "steps": own[stage.steps], "eval_every": 0},
        teacher_id=teacher.id, code=methods_code(terms), eval=teacher.eval, suite=teacher.suite,
        device=teacher.device, plugins=teacher.plugins, needs=(teacher.id,),
    )


def stage_ids(terms: tuple[tuple[str, dict[str, Any]], ...], teacher: RunSpec) -> dict[int, str]:
    """Term index -> the id of the stage run that term needs after ``teacher``."""
    runs = {i: stage_run(teacher, name, options) for i, (name, options) in enumerate(terms)}
    return {i: run.id for i, run in runs.items() if run is not None}


def with_stages(student: RunSpec, teacher: RunSpec) -> tuple[RunSpec, list[RunSpec]]:
    """``student`` needing the stage runs of its methods (after ``teacher``), and those runs."""
    runs = [stage_run(teacher, name, options) for name, options in student.method_terms]
    stages = [run for run in runs if run is not None]
    if not stages:
        return student, []
    return replace(student, needs=(*student.needs, *(s.id for s in stages))), stages
