"""Suite YAML -> validated, fully resolved run specs.

A suite is a grid: ``datasets x students x methods x seeds``, plus the RGB-X teachers those
student runs need (one per dataset, teacher configuration and seed). Each run becomes a frozen
:class:`RunSpec` whose id is a short hash of its canonical, fully resolved config (every method
and data set option with its default filled in) and of the source of the method files it uses
(:mod:`kdbench.provenance`), so the same run has the same id in every suite that contains it,
and a changed recipe, default or loss gets a new id (the rule: :mod:`kdbench.config.spec`). The
student baseline reads no teacher, so its id does not depend on one. Every run names the runs it
needs (``RunSpec.needs``), the edges :mod:`kdbench.launch.schedule` orders them by. Everything is
validated here, before anything starts: data set options by name and annotated type, data
folders, plugin files (recorded by path and hash), launch resources.

One module per job: :mod:`~kdbench.config.reading` (YAML and ``--set`` overrides),
:mod:`~kdbench.config.sections` (the suite format, :data:`SUITE_SCHEMA`),
:mod:`~kdbench.config.validate` (entries checked against the registries),
:mod:`~kdbench.config.budgets` (budgets and recipes), :mod:`~kdbench.config.spec` (a run, its
kind and identity), :mod:`~kdbench.config.tuning` (tuning trials) and
:mod:`~kdbench.config.expand` (the grid).
"""

from kdbench.config.budgets import MATCHED_BASELINE, budget_label, matched
from kdbench.config.expand import Suite, expand, load_suite
from kdbench.config.reading import MAX_NODES, apply_override, read_yaml
from kdbench.config.sections import (
    AMP_MODES,
    BUDGET_KINDS,
    EVAL_SCHEMA,
    SUITE_SCHEMA,
    TEACHER_SCHEMA,
    TRAIN_SCHEMA,
    TUNE_SCHEMA,
    amp_mode,
)
from kdbench.config.spec import (
    EXECUTORS,
    IDENTITY_DEFAULTS,
    IDENTITY_EXCLUDED,
    KINDS,
    TEACHER_KINDS,
    TRAIN_NOT_IDENTITY,
    RunSpec,
    executor_of,
    is_teacher,
    known_kind,
    register_kind,
    run_id,
    stage_of,
)

__all__ = [
    "AMP_MODES", "BUDGET_KINDS", "EVAL_SCHEMA", "EXECUTORS", "IDENTITY_DEFAULTS",
    "IDENTITY_EXCLUDED", "KINDS",
    "MATCHED_BASELINE", "MAX_NODES", "SUITE_SCHEMA", "TEACHER_KINDS", "TEACHER_SCHEMA",
    "TRAIN_NOT_IDENTITY",
    "TRAIN_SCHEMA", "TUNE_SCHEMA", "RunSpec", "Suite", "amp_mode", "apply_override",
    "budget_label", "executor_of", "expand", "is_teacher", "known_kind", "load_suite", "matched",
    "read_yaml",
    "register_kind", "run_id", "stage_of",
]
