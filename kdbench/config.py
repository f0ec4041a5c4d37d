"""Suite YAML -> validated, fully resolved run specs.

A suite is a grid: ``datasets x students x methods x seeds``, plus the RGB-X teachers those
student runs need (one per dataset, teacher configuration and seed). Each run becomes a frozen
:class:`RunSpec` whose id is a short hash of its canonical resolved config, so the same run has
the same id in every suite that contains it, and a changed recipe gets a new id.

The suite format (every key, type and default) is :data:`SUITE_SCHEMA`; the README documents it.
``--set key.path=value`` overrides are applied to the YAML before validation, their values
parsed as YAML (``--set train.steps=50``, ``--set seeds=[0]``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdbench.errors import KdbenchError
from kdbench.schema import Field, check, non_negative, one_of, positive

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


def budget_label(budget: dict[str, Any]) -> str:
    """``{"flops": 2e12}`` -> ``"2e+12 FLOPs"``: a budget's table label (matched: its base's)."""
    kind, amount = next(iter(budget.items()))
    if kind == "match":
        return budget_label(amount["budget"])
    if kind == "steps":
        return f"{amount} steps"
    return f"{amount:g} FLOPs" if kind == "flops" else f"{amount:g} s"


MATCHED_BASELINE = "none-matched"
"""Row label of the compute-matched baseline (``matched_baseline: true``)."""


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
    "amp": Field((bool,), False),
    "channels_last": Field((bool,), False),
    "log_every": Field((int,), 10, check=positive),
    "eval_every": Field((int,), 0, check=non_negative),
    "checkpoint_every": Field((int,), 50, check=positive),
    "budget": Field((dict, list, type(None)), None, check=_budgets),
}
"""The training recipe; the same for every method of a suite (teachers may override it).
``budget``: one budget (``{steps: N}``, ``{flops: F}`` or ``{seconds: S}``), a list of them (a
grid axis: every student run once per budget), or null for
``{steps: train.steps}`` (see :mod:`kdbench.train.budget`). Teachers train with
``teacher.train.budget`` if given, else ``train.steps`` steps, whatever the students' budget."""

TEACHER_SCHEMA: dict[str, Field] = {
    "kind": Field((str,), "intermediate"),
    "backbone": Field((str, type(None)), None),
    "x_backbone": Field((str, type(None)), None),
    "pretrained": Field((str, type(None)), None),
    "decoder_channels": Field((int,), 64, check=positive),
    "seed": Field((int, type(None)), None),
    "train": Field((dict,), None),
}
"""The RGB-X teacher: ``backbone`` defaults to each student's, ``seed`` null = the run's seed."""


def _fraction(value: Any) -> str | None:
    return None if 0.0 < value < 1.0 else "expected a fraction between 0 and 1"


TUNE_SCHEMA: dict[str, Field] = {
    "trials": Field((int,), 0, check=non_negative),
    "split": Field((float,), 0.2, check=_fraction),
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
    "teacher": Field((dict,), None, children=TEACHER_SCHEMA),
    "methods": Field((dict, list), required=True),
    "train": Field((dict,), None, children=TRAIN_SCHEMA),
    "device": Field((str,), "auto", check=one_of("auto", "cpu", "cuda")),
    "launch": Field((dict,), None),
    "plugins": Field((list,), []),
    "matched_baseline": Field((bool,), False),
    "tune": Field((dict,), None, children=TUNE_SCHEMA),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run, fully resolved. ``id`` hashes everything but ``suite`` and ``device``."""

    kind: str
    """``"teacher"`` or ``"student"``."""
    dataset: str
    dataset_options: dict[str, Any]
    model: dict[str, Any]
    """Student: ``backbone``, ``pretrained``, ``decoder_channels``; teachers add ``kind`` and
    ``x_backbone``."""
    method: str
    """Row label (``"teacher"`` for teachers)."""
    method_terms: tuple[tuple[str, dict[str, Any]], ...]
    seed: int
    train: dict[str, Any]
    teacher_id: str | None = None
    suite: str = field(default="", compare=False)
    device: str = field(default="auto", compare=False)

    @property
    def id(self) -> str:
        return run_id(self)

    @property
    def axes(self) -> dict[str, Any]:
        """The grid coordinates of this run, as tables use them."""
        return {
            "dataset": self.dataset,
            "student": self.model["backbone"],
            "method": self.method,
            "seed": self.seed,
            "teacher": self.teacher_id,
            "budget": budget_label(self.train.get("budget") or {"steps": self.train["steps"]}),
        }

    def describe(self) -> str:
        budget = f" budget={self.axes['budget']}" if self.train.get("budget") else ""
        return (
            f"{self.kind:7s} {self.dataset}/{self.model['backbone']} {self.method} seed={self.seed}"
            + budget
        )

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> RunSpec:
        """The spec of :meth:`to_dict`'s output (a record's ``config``)."""
        return cls(**{**config, "method_terms": tuple(tuple(t) for t in config["method_terms"])})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["method_terms"] = [list(t) for t in self.method_terms]
        return out


def run_id(spec: RunSpec) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of the spec's identity fields."""
    identity = spec.to_dict()
    for key in ("suite", "device"):
        identity.pop(key)
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass
class Suite:
    """A validated suite: its name, source file, resolved settings and runs (teachers first)."""

    name: str
    path: Path
    settings: dict[str, Any]
    teachers: list[RunSpec]
    students: list[RunSpec]
    trials: list[RunSpec] = field(default_factory=list)
    """Tuning trials (``tune:``): they train after the teachers, before the students."""

    @property
    def runs(self) -> list[RunSpec]:
        return self.teachers + self.trials + self.students

    @property
    def waves(self) -> list[list[RunSpec]]:
        if self.trials:
            return [self.teachers, self.trials, self.students]
        return [self.teachers, self.students]


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``key.path=value`` to ``data`` in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise KdbenchError(f"--set {assignment!r}: expected key.path=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    if not all(keys):
        raise KdbenchError(f"--set {assignment!r}: empty key in {path!r}")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise KdbenchError(f"--set {assignment!r}: {'.'.join(keys[: i + 1])} is not a mapping")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KdbenchError(f"--set {assignment!r}: value is not valid YAML ({exc})") from None


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KdbenchError(f"{path}: suite file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise KdbenchError(f"{path}: not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise KdbenchError(f"{path}: expected a mapping at the top level")
    return data


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read, override, validate and expand a suite file into run specs."""
    path = Path(path)
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    return expand(check(data, SUITE_SCHEMA, str(path)), path)


def _seeds(settings: dict[str, Any], where: str) -> list[int]:
    seeds = settings["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise KdbenchError(f"{where}: seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise KdbenchError(f"{where}: seeds: duplicate seed in {seeds!r}")
    return seeds


def _named_options(value: Any, key: str, where: str) -> list[tuple[str, dict[str, Any]]]:
    """``[a, {b: {opt: 1}}]`` or ``{a: {}, b: {opt: 1}}`` -> ``[(a, {}), (b, {opt: 1})]``."""
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    else:
        for i, entry in enumerate(value):
            if isinstance(entry, str):
                items.append((entry, {}))
            elif isinstance(entry, dict) and len(entry) == 1:
                items.extend(entry.items())
            else:
                raise KdbenchError(f"{where}: {key}[{i}]: expected a name or {{name: options}}")
    out = []
    for name, options in items:
        if not isinstance(name, str):
            raise KdbenchError(f"{where}: {key}: expected string names, got {name!r}")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise KdbenchError(f"{where}: {key}.{name}: expected a mapping of options")
        out.append((name, options))
    if not out:
        raise KdbenchError(f"{where}: {key}: expected at least one entry")
    return out


def _method_rows(
    value: Any, where: str
) -> list[tuple[str, tuple[tuple[str, dict[str, Any]], ...]]]:
    """Rows of the table: label -> terms. A row is a method name, or a mapping of several."""
    from kdbench.method import check_options  # imports torch; only needed past --help
    from kdbench.registry import METHODS

    rows = []
    entries: list[tuple[Any, Any]] = []
    for i, entry in enumerate([value] if isinstance(value, dict) else value):
        if isinstance(entry, dict) and (isinstance(value, dict) or len(entry) == 1):
            entries.extend(entry.items())
        elif isinstance(entry, str):
            entries.append((entry, None))
        else:
            raise KdbenchError(f"{where}: methods[{i}]: expected a name or {{label: methods}}")
    for label, body in entries:
        if not isinstance(label, str):
            raise KdbenchError(f"{where}: methods: expected a method name, got {label!r}")
        if body is None or body == {}:
            terms = [(label, {})]
        elif isinstance(body, str):
            terms = [(body, {})]
        else:
            terms = _named_options(body, f"methods.{label}", where)
        for name, options in terms:
            if name not in METHODS:
                raise KdbenchError(
                    f"{where}: methods.{label}: unknown method {name!r}; known: "
                    + ", ".join(METHODS.names())
                )
            try:
                check_options(name, METHODS.get(name), options)
            except KdbenchError as exc:
                raise KdbenchError(f"{where}: methods.{label}: {exc}") from None
        terms = [(n, o) for n, o in terms if n != "none"]
        rows.append((label, tuple(terms)))
    labels = [label for label, _ in rows]
    if len(set(labels)) != len(labels):
        raise KdbenchError(f"{where}: methods: duplicate row label")
    return rows


def _check_dataset(name: str, options: dict[str, Any], where: str) -> None:
    from kdbench.registry import DATASETS

    if name not in DATASETS:
        raise KdbenchError(
            f"{where}: datasets: unknown dataset {name!r}; known: {', '.join(DATASETS.names())}"
        )
    params = inspect.signature(DATASETS.get(name)).parameters
    for key in options:
        if key == "split" or key not in params:
            known = ", ".join(p for p in params if p != "split")
            raise KdbenchError(f"{where}: datasets.{name}.{key}: unknown option; options: {known}")


def _check_backbone(name: str, key: str, where: str) -> None:
    from kdbench.models.backbone import is_backbone

    if not is_backbone(name):
        raise KdbenchError(
            f"{where}: {key}: unknown backbone {name!r}: not a timm model name "
            "(see `kdbench list backbones`)"
        )


def _check_launch(launch: dict[str, Any], where: str) -> None:
    """Validate the ``launch:`` section (``executor: local`` takes no options)."""
    options = dict(launch)
    executor = options.pop("executor", "local")
    try:
        if executor == "slurm":
            from kdbench.launch.slurm import from_options

            from_options(options, Path("."))  # builds nothing on disk: validation only
        elif executor != "local":
            raise KdbenchError(f"launch.executor: expected local or slurm, got {executor!r}")
        elif options:
            raise KdbenchError(f"launch.{next(iter(options))}: the local executor takes no options")
    except KdbenchError as exc:
        raise KdbenchError(f"{where}: {exc}") from None


def _budget_list(train: dict[str, Any]) -> list[dict[str, Any]]:
    """The suite's budgets (a list is a grid axis); none given = ``{steps: train.steps}``."""
    budget = train["budget"]
    if budget is None:
        return [{"steps": train["steps"]}]
    return [dict(b) for b in budget] if isinstance(budget, list) else [dict(budget)]


def _with_budget(train: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """``train`` with one resolved budget. A steps budget is ``steps`` itself (no ``budget``
    key), so a steps run has one source of truth and keeps the id it had before budgets."""
    out = {k: v for k, v in train.items() if k != "budget"}
    if "steps" in budget:
        return {**out, "steps": budget["steps"]}
    return {**out, "budget": budget}


def matched(budget: dict[str, Any], rows: list[tuple[str, Any]]) -> dict[str, Any]:
    """The compute-matched budget: the FLOPs the costliest of ``rows`` spends under ``budget``
    (resolved at run time by :mod:`kdbench.train.budget`)."""
    return {"match": {"budget": budget, "rows": [[label, [list(t) for t in terms]]
                                                 for label, terms in rows]}}


def expand(settings: dict[str, Any], path: Path) -> Suite:
    """Expand validated settings into teacher and student run specs (teachers deduplicated)."""
    from kdbench.registry import TEACHERS, load_plugin_file

    where = str(path)
    for plugin in settings["plugins"]:
        load_plugin_file((path.parent / plugin) if not Path(plugin).is_absolute() else plugin)
    seeds = _seeds(settings, where)
    datasets = _named_options(settings["datasets"], "datasets", where)
    for name, options in datasets:
        _check_dataset(name, options, where)
    students = _named_options(settings["students"], "students", where)
    for name, options in students:
        _check_backbone(name, "students", where)
        for key in options:
            if key != "pretrained":
                raise KdbenchError(
                    f"{where}: students.{name}.{key}: unknown option; options: pretrained"
                )
    rows = _method_rows(settings["methods"], where)
    teacher_cfg = settings["teacher"]
    if teacher_cfg["kind"] not in TEACHERS:
        raise KdbenchError(
            f"{where}: teacher.kind: unknown teacher {teacher_cfg['kind']!r}; known: "
            + ", ".join(TEACHERS.names())
        )
    for key in ("backbone", "x_backbone"):
        if teacher_cfg[key]:
            _check_backbone(teacher_cfg[key], f"teacher.{key}", where)
    _check_launch(settings["launch"] or {}, where)
    budgets = _budget_list(settings["train"])
    train = settings["train"]
    teacher_train = check(
        {**train, "budget": None, **(teacher_cfg["train"] or {})},
        TRAIN_SCHEMA,
        where,
        "teacher.train.",
    )
    teacher_budgets = _budget_list(teacher_train)
    if len(teacher_budgets) > 1:
        raise KdbenchError(f"{where}: teacher.train.budget: expected one budget, not a list")
    teacher_train = _with_budget(teacher_train, teacher_budgets[0])
    if settings["matched_baseline"]:
        if not any(terms for _, terms in rows):
            raise KdbenchError(f"{where}: matched_baseline: no distillation method to match")
        rows.append((MATCHED_BASELINE, ()))

    teachers: dict[str, RunSpec] = {}
    student_runs: list[RunSpec] = []
    trials: dict[tuple[str, str, str], list[RunSpec]] = {}
    common = {"suite": settings["name"], "device": settings["device"]}
    for dataset, dataset_options in datasets:
        for backbone, student_options in students:
            teacher_model = {
                "kind": teacher_cfg["kind"],
                "backbone": teacher_cfg["backbone"] or backbone,
                "x_backbone": teacher_cfg["x_backbone"],
                "pretrained": teacher_cfg["pretrained"],
                "decoder_channels": teacher_cfg["decoder_channels"],
            }
            student_model = {
                "backbone": backbone,
                "pretrained": student_options.get("pretrained"),
                "decoder_channels": settings["decoder_channels"],
            }
            for seed in seeds:
                teacher = RunSpec(
                    kind="teacher",
                    dataset=dataset,
                    dataset_options=dataset_options,
                    model=teacher_model,
                    method="teacher",
                    method_terms=(),
                    seed=seed if teacher_cfg["seed"] is None else teacher_cfg["seed"],
                    train=teacher_train,
                    **common,
                )
                teachers.setdefault(teacher.id, teacher)
                for budget in budgets:
                    for label, terms in rows:
                        run_budget = budget
                        if label == MATCHED_BASELINE:
                            run_budget = matched(budget, [r for r in rows if r[1]])
                        run_train = _with_budget(train, run_budget)
                        if settings["tune"]["trials"] and terms:
                            key = (dataset, backbone, label)
                            if key not in trials:  # the first seed's teacher and budget
                                trials[key] = _trials(
                                    teacher, student_model, seed, label, terms, run_train, settings
                                )
                            run_train["tune"] = {"trials": [t.id for t in trials[key]]}
                        student_runs.append(
                            RunSpec(
                                kind="student",
                                dataset=dataset,
                                dataset_options=dataset_options,
                                model=student_model,
                                method=label,
                                method_terms=terms,
                                seed=seed,
                                train=run_train,
                                teacher_id=teacher.id,
                                **common,
                            )
                        )
    trial_runs = [t for group in trials.values() for t in group]
    return Suite(
        settings["name"], path, settings, list(teachers.values()), student_runs, trial_runs
    )


def _trials(
    teacher: RunSpec,
    model: dict[str, Any],
    seed: int,
    label: str,
    terms: tuple[tuple[str, dict[str, Any]], ...],
    train: dict[str, Any],
    settings: dict[str, Any],
) -> list[RunSpec]:
    """The tuning trials of one row: ``tune.trials`` option sets sampled from each term's
    search space (options the suite sets stay fixed), trained on the training split minus the
    held-out ``tune.split`` (``train.holdout``) with the student's recipe, the suite's first
    seed and budget."""
    from kdbench.registry import METHODS
    from kdbench.search import trial_options

    def space(name: str) -> Any:
        return METHODS.get(name).search_space

    tune = settings["tune"]
    out = []
    for i in range(tune["trials"]):
        sampled = tuple(
            (name, trial_options(space(name), options, tune["seed"], f"{label}/{name}", i))
            for name, options in terms
        )
        out.append(
            RunSpec(
                kind="trial",
                dataset=teacher.dataset,
                dataset_options=teacher.dataset_options,
                model=model,
                method=label,
                method_terms=sampled,
                seed=seed,
                train={**train, "holdout": {"split": tune["split"], "seed": tune["seed"]}},
                teacher_id=teacher.id,
                suite=teacher.suite,
                device=teacher.device,
            )
        )
    return out
