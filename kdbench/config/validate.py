"""Validation of a suite's entries against the registries: seeds, data sets (their options and
data), backbones, heads, method rows, the teacher, evaluation, launch resources and plugins.
Each check raises a one-line :class:`KdbenchError` naming the suite file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdbench.config.budgets import MATCHED_BASELINE
from kdbench.config.spec import RunSpec, stage_of
from kdbench.errors import KdbenchError
from kdbench.resources import check_launch, processes


def seeds(settings: dict[str, Any], where: str) -> list[int]:
    seeds = settings["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise KdbenchError(f"{where}: seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise KdbenchError(f"{where}: seeds: duplicate seed in {seeds!r}")
    return seeds


def named_options(value: Any, key: str, where: str) -> list[tuple[str, dict[str, Any]]]:
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


def method_rows(value: Any, where: str) -> tuple[list[tuple[str, Terms]], dict[str, Terms]]:
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
            terms = named_options(body, f"methods.{label}", where)
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


def check_head_taps(
    rows: list[tuple[str, Terms]], heads: dict[str, dict[str, Any]], where: str
) -> None:
    """A row term reading a head's own tap (``feature: aspp``) needs a head with that tap for
    the student and the teacher (:func:`kdbench.models.heads.heads_with_tap`)."""
    from kdbench.models.heads import heads_with_tap

    having = heads_with_tap("aspp")
    for label, terms in rows:
        for name, options in terms:
            if options.get("feature") != "aspp":
                continue
            for role, model_head in heads.items():
                if model_head["name"] not in having:
                    raise KdbenchError(
                        f"{where}: methods.{label}: method {name!r}: feature: aspp reads the "
                        f"head's aspp tap, which the {role}'s head {model_head['name']!r} does "
                        f"not have; heads with it: {', '.join(having)}"
                    )


def resolve_dataset(
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


def check_backbone(name: str, key: str, where: str) -> None:
    from kdbench.models.backbone import is_backbone

    if not is_backbone(name):
        raise KdbenchError(
            f"{where}: {key}: unknown backbone {name!r}: not a timm model name "
            "(see `kdbench list backbones`)"
        )


def head(value: Any, key: str, where: str) -> dict[str, Any]:
    """``name`` or ``{name: {options}}`` -> ``{"name", "options"}``, checked against the head
    registry and the head's constructor (common options: kdbench.models.heads)."""
    from kdbench.method import canonical
    from kdbench.models.heads import head_options
    from kdbench.options import resolve
    from kdbench.registry import HEADS

    entries = named_options(value if isinstance(value, dict) else [value], key, where)
    if len(entries) != 1:
        raise KdbenchError(f"{where}: {key}: expected one head, got {len(entries)}")
    name, options = entries[0]
    if name not in HEADS:
        raise KdbenchError(
            f"{where}: {key}: unknown head {name!r}; known: {', '.join(HEADS.names())}"
        )
    resolved = resolve(head_options(name), options, f"{where}: {key}.{name}")
    return {"name": name, "options": canonical(resolved)}


def resolved_eval(protocol: dict[str, Any]) -> dict[str, Any]:
    """The protocol with ``scales`` as floats, and null for the single scale ``[1.0]``."""
    scales = protocol["scales"]
    if scales is not None:
        scales = [float(s) for s in scales]
    return {**protocol, "scales": None if scales == [1.0] else scales}


def check_eval(protocol: dict[str, Any], where: str) -> None:
    if protocol["size"] is not None and protocol["scale"] is not None:
        raise KdbenchError(f"{where}: eval: give size or scale, not both")
    slide = protocol["mode"] == "slide"
    for key in ("window", "stride"):
        if slide and protocol[key] is None:
            raise KdbenchError(f"{where}: eval.{key}: required with mode: slide ([h, w])")
        if not slide and protocol[key] is not None:
            raise KdbenchError(f"{where}: eval.{key}: only used with mode: slide")


def check_processes(launch: dict[str, Any], runs: list[RunSpec], where: str) -> None:
    """Every run's batch divides among the processes that train it (``launch.tasks_per_node``
    x ``nodes``): each trains an equal shard of the global batch."""
    for spec in runs:
        stage = stage_of(spec.kind)
        n, batch = processes(launch, stage), spec.train["batch_size"]
        if batch % n:
            raise KdbenchError(
                f"{where}: train.batch_size: {batch} does not divide among the {n} processes "
                f"that train each {stage} run (launch tasks_per_node x nodes); expected a "
                f"multiple of {n}"
            )


def plugins(entries: list[Any], path: Path) -> tuple[tuple[str, str], ...]:
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


def methods_code(terms: tuple[tuple[str, dict[str, Any]], ...]) -> str:
    from kdbench.provenance import methods_hash
    from kdbench.registry import METHODS

    return methods_hash(METHODS.get(name) for name, _ in terms)


def check_students(students: list[tuple[str, dict[str, Any]]], where: str) -> None:
    """Every student a timm backbone; its only option ``pretrained`` (bool, null or a path)."""
    for name, options in students:
        check_backbone(name, "students", where)
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


def check_teacher(teacher: dict[str, Any], where: str) -> None:
    """The ``teacher:`` section's kind registered, its backbones timm models."""
    from kdbench.registry import TEACHERS

    if teacher["kind"] not in TEACHERS:
        raise KdbenchError(
            f"{where}: teacher.kind: unknown teacher {teacher['kind']!r}; known: "
            + ", ".join(TEACHERS.names())
        )
    for key in ("backbone", "x_backbone"):
        if teacher[key]:
            check_backbone(teacher[key], f"teacher.{key}", where)


def check_rgb_only(datasets: list[tuple[str, Any]], kind: str, where: str) -> None:
    """An RGB-only data set (no second modality) trains only the ``rgb`` teacher."""
    from kdbench.registry import DATASETS

    for name, _ in datasets:
        if getattr(DATASETS.get(name), "rgb_only", False) and kind != "rgb":
            raise KdbenchError(
                f"{where}: teacher.kind: {kind!r} needs a second modality, which data set "
                f"{name!r} has not (RGB only); set teacher: {{kind: rgb}}"
            )


def check_launch_section(launch: dict[str, Any], where: str) -> None:
    """Validate the ``launch:`` section (:func:`kdbench.resources.check_launch`)."""
    try:
        check_launch(launch)
    except KdbenchError as exc:
        raise KdbenchError(f"{where}: {exc}") from None
