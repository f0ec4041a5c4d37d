"""Suite YAML -> validated, fully resolved run specs.

A suite is a grid: ``datasets x students x methods x seeds``, plus the RGB-X teachers those
student runs need (one per dataset, teacher configuration and seed). Each run becomes a frozen
:class:`RunSpec` whose id is a short hash of its canonical, fully resolved config (every method
and data set option with its default filled in) and of the source of the method files it uses
(:mod:`kdbench.provenance`), so the same run has the same id in every suite that contains it,
and a changed recipe, default or loss gets a new id. The student baseline reads no teacher, so
its id does not depend on one. Everything is validated here, before anything starts: data set
options by name and annotated type, data folders, plugin files (recorded by path and hash).

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


AMP_MODES = ("off", "fp16", "bf16")


def amp_mode(value: Any) -> str:
    """``train.amp`` as one of :data:`AMP_MODES`; YAML reads a bare ``off`` as false."""
    return "off" if value is False else value


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


def budget_label(budget: dict[str, Any]) -> str:
    """``{"flops": 2e12}`` -> ``"2e+12 FLOPs"``: a budget's table label (matched: its base's)."""
    kind, amount = next(iter(budget.items()))
    if kind == "match":
        return budget_label(amount["budget"])
    if kind == "steps":
        return f"{amount} steps"
    return f"{amount:g} FLOPs" if kind == "flops" else f"{amount:g} s"


MATCHED_BASELINE = "none-matched"
"""Row label of the compute-matched baseline, the ``methods`` entry ``{none: {budget: match}}``:
the student alone given the FLOPs the costliest method of the suite spends."""


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
    "channels_last": Field((bool,), False),
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
}
"""The evaluation protocol (kdbench.train.evaluation): labels at native resolution, the network
input resized to ``size`` or by ``scale`` (neither: as loaded), ``whole`` or ``slide``
inference; ``batch_size`` null = the training batch size."""

TEACHER_SCHEMA: dict[str, Field] = {
    "kind": Field((str,), "intermediate"),
    "backbone": Field((str, type(None)), None),
    "x_backbone": Field((str, type(None)), None),
    "pretrained": Field((str, bool, type(None)), None),
    "decoder_channels": Field((int,), 64, check=positive),
    "head": Field((str, dict, type(None)), None),
    "seed": Field((int, type(None)), None),
    "train": Field((dict,), None),
}
"""The RGB-X teacher: ``backbone`` and ``head`` default to the students', ``seed`` null = the
run's seed."""


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


@dataclass(frozen=True)
class RunSpec:
    """One training run, fully resolved. ``id`` hashes everything but ``suite`` and ``device``."""

    kind: str
    """``"teacher"`` or ``"student"``."""
    dataset: str
    dataset_options: dict[str, Any]
    model: dict[str, Any]
    """Student: ``backbone``, ``pretrained``, ``decoder_channels``, ``head`` ({name, options});
    teachers add ``kind`` and ``x_backbone``."""
    method: str
    """Row label (``"teacher"`` for teachers)."""
    method_terms: tuple[tuple[str, dict[str, Any]], ...]
    """``(registered name, options)`` with every option's default filled in."""
    seed: int
    train: dict[str, Any]
    teacher_id: str | None = None
    """The teacher run a distilling student reads; None for teachers and the baseline."""
    code: str = ""
    """Hash of the source files of the run's methods (:func:`kdbench.provenance.methods_hash`)."""
    eval: dict[str, Any] = field(default_factory=dict)
    """The evaluation protocol (:data:`EVAL_SCHEMA`, resolved)."""
    suite: str = field(default="", compare=False)
    device: str = field(default="auto", compare=False)
    plugins: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """``(path, SHA-256)`` of the suite's plugin files, imported by every process that trains."""

    @property
    def id(self) -> str:
        return run_id(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> RunSpec:
        """The spec of a stored ``config`` (:meth:`to_dict`'s inverse)."""
        config = dict(config)
        config["method_terms"] = tuple((n, o) for n, o in config["method_terms"])
        config["plugins"] = tuple((p, h) for p, h in config.get("plugins", ()))
        return cls(**config)

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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["method_terms"] = [list(t) for t in self.method_terms]
        out["plugins"] = [list(p) for p in self.plugins]
        return out


IDENTITY_EXCLUDED = ("suite", "device", "plugins")
"""Spec fields that are not part of a run's identity (where and under which name it runs)."""
TRAIN_NOT_IDENTITY = ("workers", "log")
"""Recipe keys that cannot change a run's result (the batches do not depend on the number of
DataLoader workers: a test; the trackers only read the history), so that changing them reuses
the runs already trained."""


def run_id(spec: RunSpec) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of the spec's identity fields: the
    fully resolved config (every default filled in) and the hash of its methods' source."""
    identity = spec.to_dict()
    for key in IDENTITY_EXCLUDED:
        identity.pop(key)
    identity["train"] = {k: v for k, v in identity["train"].items() if k not in TRAIN_NOT_IDENTITY}
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
    data_roots: list[str] = field(default_factory=list)
    """The data folders the suite's data sets read (checked again on a resolved-suite cache hit)."""
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


MAX_NODES = 100_000
"""Most values a suite may hold, aliases expanded (a YAML alias bomb expands to billions)."""


def _check_size(data: Any, path: Path) -> None:
    """Refuse a suite whose values, aliases expanded, exceed :data:`MAX_NODES` (or a cycle)."""
    budget = MAX_NODES
    todo = [data]
    while todo:
        node = todo.pop()
        budget -= 1
        if budget < 0:
            raise KdbenchError(
                f"{path}: more than {MAX_NODES} values once YAML aliases are expanded"
            )
        if isinstance(node, dict):
            todo += list(node.keys()) + list(node.values())
        elif isinstance(node, list):
            todo += node


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KdbenchError(f"{path}: suite file not found")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise KdbenchError(f"{path}: cannot read the suite ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise KdbenchError(f"{path}: not a text file (expected UTF-8 YAML)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise KdbenchError(f"{path}: not valid YAML{line}") from None
    except RecursionError:
        raise KdbenchError(f"{path}: nested too deeply") from None
    if not isinstance(data, dict):
        raise KdbenchError(f"{path}: expected a mapping at the top level")
    _check_size(data, path)
    return data


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read, override, validate and expand a suite file into run specs."""
    path = Path(path)
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    _check_size(data, path)
    if "matched_baseline" in data:
        raise KdbenchError(
            f"{path}: matched_baseline: no longer a key; the compute-matched baseline is the "
            "methods entry {none: {budget: match}}"
        )
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


Terms = tuple[tuple[str, dict[str, Any]], ...]
"""A row's methods: ``((registered name, options), ...)``."""


def _is_matched_baseline(label: str, body: Any, where: str) -> bool:
    """Whether the methods entry ``{label: body}`` is ``{none: {budget: match}}``, the
    compute-matched baseline; a ``budget`` on any other row, or of any other value, is an error."""
    if label == MATCHED_BASELINE:
        raise KdbenchError(
            f"{where}: methods.{label}: the label of the compute-matched baseline; write it "
            "{none: {budget: match}}"
        )
    if not isinstance(body, dict) or "budget" not in body:
        return False
    if label != "none":
        raise KdbenchError(
            f"{where}: methods.{label}.budget: only the baseline takes a budget; expected "
            "{none: {budget: match}}"
        )
    if body["budget"] != "match":
        raise KdbenchError(
            f"{where}: methods.none.budget: expected match (the student alone given the FLOPs of "
            f"the costliest method), got {body['budget']!r}"
        )
    if len(body) > 1:
        others = ", ".join(str(k) for k in body if k != "budget")
        raise KdbenchError(f"{where}: methods.none: expected {{budget: match}} alone, got {others}")
    return True


def _method_rows(value: Any, where: str) -> tuple[list[tuple[str, Terms]], dict[str, Terms]]:
    """Rows of the table: label -> terms. A row is a method name, or a mapping of several;
    ``{none: {budget: match}}`` is the compute-matched baseline (row :data:`MATCHED_BASELINE`).

    Returns the rows with every option resolved (defaults filled in) and, per row label, the
    options as the suite gives them (what tuning keeps fixed)."""
    from kdbench.method import check_options  # imports torch; only needed past --help
    from kdbench.registry import METHODS

    rows = []
    given: dict[str, Terms] = {}
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
        if _is_matched_baseline(label, body, where):
            rows.append((MATCHED_BASELINE, ()))
            given[MATCHED_BASELINE] = ()
            continue
        if body is None or body == {}:
            terms = [(label, {})]
        elif isinstance(body, str):
            terms = [(body, {})]
        else:
            terms = _named_options(body, f"methods.{label}", where)
        resolved = []
        for name, options in terms:
            if name not in METHODS:
                raise KdbenchError(
                    f"{where}: methods.{label}: unknown method {name!r}; known: "
                    + ", ".join(METHODS.names())
                )
            try:
                check_options(name, METHODS.get(name), options)
                resolved.append((name, METHODS.get(name).resolve_options(options)))
            except KdbenchError as exc:
                raise KdbenchError(f"{where}: methods.{label}: {exc}") from None
        given[label] = tuple((n, o) for n, o in terms if n != "none")
        rows.append((label, tuple((n, o) for n, o in resolved if n != "none")))
    labels = [label for label, _ in rows]
    if len(set(labels)) != len(labels):
        raise KdbenchError(f"{where}: methods: duplicate row label")
    if MATCHED_BASELINE in labels and not any(terms for _, terms in rows):
        raise KdbenchError(f"{where}: methods.none.budget: match: no distillation method to match")
    return rows, given


def _resolve_dataset(
    name: str, options: dict[str, Any], where: str, roots: list[str]
) -> dict[str, Any]:
    """The data set's options checked by name and type, defaults filled in; its data present
    (its data folder, if it reads one, is appended to ``roots``)."""
    from kdbench.options import resolve_kwargs
    from kdbench.registry import DATASETS

    if name not in DATASETS:
        raise KdbenchError(
            f"{where}: datasets: unknown dataset {name!r}; known: {', '.join(DATASETS.names())}"
        )
    cls = DATASETS.get(name)
    resolved = resolve_kwargs(cls, options, f"{where}: datasets.{name}")
    check_available = getattr(cls, "check_available", None)
    if check_available is not None:
        try:
            root = check_available(resolved)
        except KdbenchError as exc:
            raise KdbenchError(f"{where}: datasets.{name}: {exc}") from None
        if root is not None:
            roots.append(str(root))
    return resolved


def _check_backbone(name: str, key: str, where: str) -> None:
    from kdbench.models.backbone import is_backbone

    if not is_backbone(name):
        raise KdbenchError(
            f"{where}: {key}: unknown backbone {name!r}: not a timm model name "
            "(see `kdbench list backbones`)"
        )


def _head(value: Any, key: str, where: str) -> dict[str, Any]:
    """``name`` or ``{name: {options}}`` -> ``{"name", "options"}``, checked against the head
    registry and the head's constructor (common options: kdbench.models.heads)."""
    from kdbench.method import canonical
    from kdbench.models.heads import COMMON_OPTIONS, split_options
    from kdbench.registry import HEADS

    entries = _named_options(value if isinstance(value, dict) else [value], key, where)
    if len(entries) != 1:
        raise KdbenchError(f"{where}: {key}: expected one head, got {len(entries)}")
    name, options = entries[0]
    if name not in HEADS:
        raise KdbenchError(
            f"{where}: {key}: unknown head {name!r}; known: {', '.join(HEADS.names())}"
        )
    params = dict(list(inspect.signature(HEADS.get(name)).parameters.items())[4:])
    for option in options:
        if option not in params and option not in COMMON_OPTIONS:
            known = ", ".join([*params, *COMMON_OPTIONS])
            raise KdbenchError(f"{where}: {key}.{name}.{option}: unknown option; options: {known}")
    try:
        common, own = split_options(options)
    except KdbenchError as exc:
        raise KdbenchError(f"{where}: {key}.{name}: {exc}") from None
    defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}
    return {"name": name, "options": canonical({**defaults, **common, **own})}


def _check_eval(protocol: dict[str, Any], where: str) -> None:
    if protocol["size"] is not None and protocol["scale"] is not None:
        raise KdbenchError(f"{where}: eval: give size or scale, not both")
    slide = protocol["mode"] == "slide"
    for key in ("window", "stride"):
        if slide and protocol[key] is None:
            raise KdbenchError(f"{where}: eval.{key}: required with mode: slide ([h, w])")
        if not slide and protocol[key] is not None:
            raise KdbenchError(f"{where}: eval.{key}: only used with mode: slide")


def _check_launch(launch: dict[str, Any], where: str) -> None:
    """Validate the ``launch:`` section (``executor: local`` takes only ``jobs``)."""
    options = dict(launch)
    executor = options.pop("executor", "local")
    try:
        if executor == "slurm":
            from kdbench.launch.slurm import from_options

            from_options(options, Path("."))  # builds nothing on disk: validation only
        elif executor != "local":
            raise KdbenchError(f"launch.executor: expected local or slurm, got {executor!r}")
        else:
            from kdbench.launch.workers import check_local_options

            check_local_options(options)
    except KdbenchError as exc:
        raise KdbenchError(f"{where}: {exc}") from None


def _check_processes(launch: dict[str, Any], runs: list[RunSpec], where: str) -> None:
    """Every run's batch divides among the processes that train it (``launch.tasks_per_node``
    x ``nodes``): each trains an equal shard of the global batch."""
    from kdbench.launch.slurm_options import processes

    for spec in runs:
        stage = "teacher" if spec.kind == "teacher" else "student"
        n, batch = processes(launch, stage), spec.train["batch_size"]
        if batch % n:
            raise KdbenchError(
                f"{where}: train.batch_size: {batch} does not divide among the {n} processes "
                f"that train each {stage} run (launch tasks_per_node x nodes); expected a "
                f"multiple of {n}"
            )


def _plugins(entries: list[Any], path: Path) -> tuple[tuple[str, str], ...]:
    """Import the suite's plugin files (relative to the suite's folder); their absolute paths
    and content hashes, which every training process checks and imports again."""
    from kdbench.provenance import file_hash
    from kdbench.registry import load_plugin_file

    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            raise KdbenchError(f"{path}: plugins[{i}]: expected a path to a .py file")
        plugin = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        try:
            load_plugin_file(plugin)
        except KdbenchError as exc:
            raise KdbenchError(f"{path}: plugins[{i}]: {exc}") from None
        out.append((str(plugin.resolve()), file_hash(plugin)))
    return tuple(out)


def _methods_code(terms: tuple[tuple[str, dict[str, Any]], ...]) -> str:
    from kdbench.provenance import methods_hash
    from kdbench.registry import METHODS

    return methods_hash(METHODS.get(name) for name, _ in terms)


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
    from kdbench.registry import TEACHERS

    where = str(path)
    plugins = _plugins(settings["plugins"], path)
    seeds = _seeds(settings, where)
    roots: list[str] = []
    datasets = [
        (name, _resolve_dataset(name, options, where, roots))
        for name, options in _named_options(settings["datasets"], "datasets", where)
    ]
    students = _named_options(settings["students"], "students", where)
    for name, options in students:
        _check_backbone(name, "students", where)
        for key, value in options.items():
            if key != "pretrained":
                raise KdbenchError(
                    f"{where}: students.{name}.{key}: unknown option; options: pretrained"
                )
            if not isinstance(value, str | bool | None):
                raise KdbenchError(
                    f"{where}: students.{name}.pretrained: expected true, false, null or a "
                    f"file path, got {value!r}"
                )
    rows, given = _method_rows(settings["methods"], where)
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
    student_head = _head(settings["head"], "head", where)
    teacher_head = (
        student_head
        if teacher_cfg["head"] is None
        else _head(teacher_cfg["head"], "teacher.head", where)
    )
    _check_eval(settings["eval"], where)
    budgets = _budget_list(settings["train"])
    train = {**settings["train"], "amp": amp_mode(settings["train"]["amp"])}
    teacher_train = check(
        {**train, "budget": None, **(teacher_cfg["train"] or {})},
        TRAIN_SCHEMA,
        where,
        "teacher.train.",
    )
    teacher_train["amp"] = amp_mode(teacher_train["amp"])
    teacher_budgets = _budget_list(teacher_train)
    if len(teacher_budgets) > 1:
        raise KdbenchError(f"{where}: teacher.train.budget: expected one budget, not a list")
    teacher_train = _with_budget(teacher_train, teacher_budgets[0])

    teachers: dict[str, RunSpec] = {}
    student_runs: list[RunSpec] = []
    trials: dict[tuple[str, str, str], list[RunSpec]] = {}
    common = {
        "suite": settings["name"],
        "device": settings["device"],
        "plugins": plugins,
        "eval": settings["eval"],
    }
    codes = {label: _methods_code(terms) for label, terms in rows}
    for dataset, dataset_options in datasets:
        for backbone, student_options in students:
            teacher_model = {
                "kind": teacher_cfg["kind"],
                "backbone": teacher_cfg["backbone"] or backbone,
                "x_backbone": teacher_cfg["x_backbone"],
                "pretrained": teacher_cfg["pretrained"] or None,
                "decoder_channels": teacher_cfg["decoder_channels"],
                "head": teacher_head,
            }
            student_model = {
                "backbone": backbone,
                "pretrained": student_options.get("pretrained") or None,
                "decoder_channels": settings["decoder_channels"],
                "head": student_head,
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
                                    teacher, student_model, seed, label, given[label], run_train,
                                    settings, codes[label], common,
                                )
                            run_train["tune"] = {"trials": [t.id for t in trials[key]]}
                        # the baseline reads no teacher; the matched one counts FLOPs with it
                        reads_teacher = bool(terms) or label == MATCHED_BASELINE
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
                                teacher_id=teacher.id if reads_teacher else None,
                                code=codes[label],
                                **common,
                            )
                        )
    trial_runs = [t for group in trials.values() for t in group]
    _check_processes(settings["launch"] or {}, [*teachers.values(), *student_runs], where)
    return Suite(
        settings["name"],
        path,
        settings,
        list(teachers.values()),
        student_runs,
        roots,
        trial_runs,
    )


def _trials(
    teacher: RunSpec,
    model: dict[str, Any],
    seed: int,
    label: str,
    given: Terms,
    train: dict[str, Any],
    settings: dict[str, Any],
    code: str,
    common: dict[str, Any],
) -> list[RunSpec]:
    """The tuning trials of one row: ``tune.trials`` option sets sampled from each term's
    search space (the options ``given`` by the suite stay fixed; the rest resolved), trained on
    the training split minus the held-out ``tune.split`` (``train.holdout``) with the student's
    recipe, the suite's first seed and budget."""
    from kdbench.registry import METHODS
    from kdbench.search import trial_options

    tune = settings["tune"]
    out = []
    for i in range(tune["trials"]):
        sampled = tuple(
            (
                name,
                METHODS.get(name).resolve_options(
                    trial_options(
                        METHODS.get(name).search_space, options, tune["seed"], f"{label}/{name}", i
                    )
                ),
            )
            for name, options in given
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
                code=code,
                **common,
            )
        )
    return out
