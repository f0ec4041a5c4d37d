"""A validated suite expanded into its runs: ``datasets x students x seeds`` teachers (one per
data set, student backbone and seed, deduplicated; one imported teacher per data set where the
suite gives its checkpoint, :mod:`kdbench.config.imported`), and per teacher one student run
per budget and method row, plus the rows' tuning trials and their methods' stage runs (one per
teacher and stage options, deduplicated: :mod:`kdbench.config.stages`). Every run names the
runs it needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from kdbench.config.budgets import (
    MATCHED_BASELINE,
    budget_list,
    matched,
    student_recipe,
    teacher_recipe,
    with_budget,
)
from kdbench.config.imported import imported_teacher
from kdbench.config.reading import apply_override, check_size, read_yaml
from kdbench.config.sections import SUITE_SCHEMA
from kdbench.config.spec import RunSpec, with_implied_needs
from kdbench.config.stages import with_stages
from kdbench.config.tuning import trials as tuning_trials
from kdbench.config.validate import (
    Terms,
    check_eval,
    check_head_taps,
    check_launch_section,
    check_processes,
    check_rgb_only,
    check_students,
    check_teacher,
    head,
    method_rows,
    methods_code,
    named_options,
    plugins,
    resolve_dataset,
    resolved_eval,
    seeds,
)
from kdbench.errors import KdbenchError
from kdbench.schema import check


@dataclass
class Suite:
    """A validated suite: its name, source file, resolved settings and runs."""

    name: str
    path: Path
    settings: dict[str, Any]
    teachers: list[RunSpec]
    students: list[RunSpec]
    data_roots: list[str] = field(default_factory=list)
    """The data folders the suite's data sets read (checked again on a resolved-suite cache hit)."""
    trials: list[RunSpec] = field(default_factory=list)
    """Tuning trials (``tune:``): each needs its teacher; the students of its row need it."""
    stages: list[RunSpec] = field(default_factory=list)
    """Methods' stage runs (MasKD's tokens): each needs its teacher; its students need it."""

    @property
    def runs(self) -> list[RunSpec]:
        """Every run, each after the runs it needs (teachers, stages, trials, students)."""
        return self.teachers + self.stages + self.trials + self.students


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read, override, validate and expand a suite file into run specs."""
    path = Path(path)
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    check_size(data, path)
    if "matched_baseline" in data:
        raise KdbenchError(
            f"{path}: matched_baseline: no longer a key; the compute-matched baseline is the "
            "methods entry {none: {budget: match}}"
        )
    return expand(check(data, SUITE_SCHEMA, str(path)), path)


@dataclass
class _Grid:
    """A suite's validated rows and recipes, and the runs expanded from them so far."""

    settings: dict[str, Any]
    where: str
    rows: list[tuple[str, Terms]]
    given: dict[str, Terms]
    heads: dict[str, dict[str, Any]]
    """``student`` and ``teacher`` -> the resolved head."""
    common: dict[str, Any]
    """The fields every run of the suite shares (suite, device, plugins, eval)."""
    teachers: dict[str, RunSpec] = field(default_factory=dict)
    trials: dict[tuple[str, str, str], list[RunSpec]] = field(default_factory=dict)
    students: list[RunSpec] = field(default_factory=list)
    stages: dict[str, RunSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        train = self.settings["train"]
        self.budgets = budget_list(train)
        self.train = student_recipe(train)
        teacher = self.settings["teacher"]["train"]
        self.teacher_train = teacher_recipe(self.train, teacher, self.where)
        self.codes = {label: methods_code(terms) for label, terms in self.rows}

    def add(self, dataset: str, options: dict[str, Any], student: tuple[str, dict], seed: int
            ) -> None:
        """The teacher and student runs of one data set, student backbone and seed."""
        backbone, student_options = student
        teacher = self._teacher(dataset, options, backbone, seed)
        self.teachers.setdefault(teacher.id, teacher)
        model = {
            "backbone": backbone,
            "pretrained": student_options.get("pretrained") or None,
            "decoder_channels": self.settings["decoder_channels"],
            "head": self.heads["student"],
        }
        for budget, (label, terms) in product(self.budgets, self.rows):
            self.students.append(self._student(teacher, model, seed, budget, label, terms))

    def _teacher(self, dataset: str, options: dict[str, Any], backbone: str, seed: int
                 ) -> RunSpec:
        config = self.settings["teacher"]
        model = {
            "kind": config["kind"],
            "backbone": config["backbone"] or backbone,
            "x_backbone": config["x_backbone"],
            "pretrained": config["pretrained"] or None,
            "decoder_channels": config["decoder_channels"],
            "head": self.heads["teacher"],
        }
        spec = RunSpec(
            kind="teacher", dataset=dataset, dataset_options=options, model=model,
            method="teacher", method_terms=(), train=self.teacher_train,
            seed=seed if config["seed"] is None else config["seed"], **self.common,
        )
        if config["checkpoint"] is None:
            return spec
        return imported_teacher(spec, config, Path(self.where))

    def _student(self, teacher: RunSpec, model: dict[str, Any], seed: int,
                 budget: dict[str, Any], label: str, terms: Terms) -> RunSpec:
        """One student run; with ``tune:``, its row's trials (made for the first seed and
        budget that reach the row) named in ``train.tune``."""
        if label == MATCHED_BASELINE:
            budget = matched(budget, [row for row in self.rows if row[1]])
        train = with_budget(self.train, budget)
        if self.settings["tune"]["trials"] and terms:
            key = (teacher.dataset, model["backbone"], label)
            if key not in self.trials:
                self.trials[key] = [self._staged(trial, teacher) for trial in tuning_trials(
                    teacher, model, seed, label, self.given[label], train, self.settings,
                    self.codes[label], self.common,
                )]
            train["tune"] = {"trials": [t.id for t in self.trials[key]]}
        # the baseline reads no teacher; the matched one counts FLOPs with it
        reads_teacher = bool(terms) or label == MATCHED_BASELINE
        return self._staged(with_implied_needs(RunSpec(
            kind="student", dataset=teacher.dataset, dataset_options=teacher.dataset_options,
            model=model, method=label, method_terms=terms, seed=seed, train=train,
            teacher_id=teacher.id if reads_teacher else None, code=self.codes[label],
            **self.common,
        )), teacher)

    def _staged(self, run: RunSpec, teacher: RunSpec) -> RunSpec:
        """``run`` needing its methods' stage runs after ``teacher``, each kept once."""
        run, stages = with_stages(run, teacher)
        for stage in stages:
            self.stages.setdefault(stage.id, stage)
        return run


def _grid(settings: dict[str, Any], where: str, common: dict[str, Any]) -> _Grid:
    """Validate the suite's students, rows, teacher, launch, heads and evaluation."""
    check_students(named_options(settings["students"], "students", where), where)
    rows, given = method_rows(settings["methods"], where)
    check_teacher(settings["teacher"], where)
    check_launch_section(settings["launch"] or {}, where)
    student_head = head(settings["head"], "head", where)
    teacher = settings["teacher"]["head"]
    teacher_head = student_head if teacher is None else head(teacher, "teacher.head", where)
    check_eval(settings["eval"], where)
    heads = {"student": student_head, "teacher": teacher_head}
    check_head_taps(rows, heads, where)
    return _Grid(settings, where, rows, given, heads, common)


def expand(settings: dict[str, Any], path: Path) -> Suite:
    """Expand validated settings into teacher, trial and student run specs."""
    where = str(path)
    common = {"suite": settings["name"], "device": settings["device"],
              "plugins": plugins(settings["plugins"], path),
              "eval": resolved_eval(settings["eval"])}
    run_seeds = seeds(settings, where)
    roots: list[str] = []
    datasets = [
        (name, resolve_dataset(name, options, where, roots))
        for name, options in named_options(settings["datasets"], "datasets", where)
    ]
    grid = _grid(settings, where, common)
    check_rgb_only(datasets, settings["teacher"]["kind"], where)
    students = named_options(settings["students"], "students", where)
    for (dataset, options), student, seed in product(datasets, students, run_seeds):
        grid.add(dataset, options, student, seed)
    teachers = list(grid.teachers.values())
    check_processes(settings["launch"] or {}, [*teachers, *grid.stages.values(), *grid.students],
                    where)
    trials = [trial for group in grid.trials.values() for trial in group]
    stages = list(grid.stages.values())
    return Suite(settings["name"], path, settings, teachers, grid.students, roots, trials, stages)
