"""The table model: which runs go in which cell, the reference rows, significance and placing.

A table has rows keyed by the ``rows`` axes (which must include ``method``) and columns keyed by
the ``cols`` axes. A cell aggregates the runs of one (row, column) over seeds. Its *context* is
every axis but the method: the runs of one context are compared with each other.

- Expected seeds of a context = every seed that any student run of the context has (any method,
  any status). A seed a cell lacks is *missing*; failed, running and null-valued runs are
  counted, never averaged: such a cell shows ``n/N`` and a footnote naming each seed.
- Reference rows, always present: the student baseline (method ``none``) and the teacher. The
  teacher cell of a context aggregates the teachers that the context's student runs name in
  ``axes.teacher`` (one value per teacher run); if none names one, the teacher runs whose
  suite/dataset/student axes match the context.
- Δ = mean(cell) − mean(baseline). Gap share = 100·(m − b)/(T − b) with T the teacher mean, shown
  only when the teacher is better than the baseline.
- Significance: for each method cell, the paired test
  (:func:`~kdbench.report.cells.stats.paired_pvalue`) of its values against the baseline's on
  the seeds both have; Holm's correction over the
  method cells of the context (teacher and baseline excluded). A rejected test marks the cell
  better (+1) or worse (−1) by the sign of the mean paired difference.
- Provenance: a cell whose runs (of any status, before de-duplication) come from different
  resolved recipes or different method code gets a footnote naming them, never a silent merge;
  unreadable (corrupt) records are left out of every table with a footnote naming them.
- Placing among the student rows of a context (baseline included, teacher excluded) on the
  means rounded as displayed: every cell with the best value is first (bold), every cell with
  the next value second (underlined); needs two cells with values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kdbench.errors import KdbenchError
from kdbench.report.cells import stats
from kdbench.report.records.frame import (
    AXES,
    BASELINE,
    BEST_PREFIX,
    IOU_PREFIX,
    SCALAR_METRICS,
    TEACHER,
    class_columns,
)

METRICS: dict[str, tuple[str, bool]] = {
    "miou": ("mIoU (%)", True),
    "mfsc": ("mFsc (%)", True),
    "pixel_acc": ("pixel accuracy (%)", True),
    "wall_time_s": ("wall time (s)", False),
    "step_time_s": ("step time (s)", False),
    "peak_memory_mb": ("peak memory (MB)", False),
    "extra_params": ("extra parameters", False),
    "gflops_per_step": ("GFLOPs per training step", False),
    "tflops": ("TFLOPs per run", False),
    "step_s_median": ("median s per step", False),
    "device_hours": ("device-hours", False),
}
"""Metric name -> (label, higher is better). ``iou.<class>`` and ``per_class`` are also metrics."""
PER_CLASS = "per_class"
CELL_FORMATS = ("std", "ci", "bootstrap", "mean")
BAYES = "bayes"
"""The ``--test`` of the Bayesian comparison table (no cell marks)."""
AGGREGATES = ("iqm",)
CHECKPOINTS = ("final", "best")
WHERE_AXES = (*AXES, "seed")
UNKNOWN = "-"
"""How a run whose record lacks an axis value is labelled."""
_STATUS_RANK = {"complete": 0, "running": 1}


@dataclass(frozen=True)
class TableSpec:
    """What a table shows (the options of ``kdbench table``).

    ``cell``: "std" (mean ± sample std), "ci" (mean and 95% t interval), "bootstrap" (mean and
    95% percentile bootstrap interval with ``resamples`` resamples, shown only for cells of at
    least ``stats.BOOTSTRAP_MIN_N`` values: it under-covers below) or "mean". ``delta``: show
    the Δ sub-column (None: yes for scalar metrics, no for per-class tables). ``where``: (axis,
    accepted values) filters on the student runs; the baseline is kept whatever the method
    filter says.
    """

    metric: str = "miou"
    rows: tuple[str, ...] = ("method",)
    cols: tuple[str, ...] = ("dataset", "student")
    cell: str = "std"
    test: str = "ttest"
    alpha: float = 0.05
    delta: bool | None = None
    gap: bool = False
    decimals: int = 1
    resamples: int = stats.BOOTSTRAP_RESAMPLES
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    rope: float | None = None
    """``test="bayes"``: the half-width of the region of practical equivalence (metric units)."""
    aggregate: str | None = None
    """``"iqm"``: add the interquartile mean with the probability of improvement."""
    checkpoint: str = "final"
    """"final" (the final model) or "best" (:func:`at_checkpoint`)."""


@dataclass(frozen=True)
class Column:
    """One table column: its header labels, the axis values its runs have, the value column."""

    key: tuple[str, ...]
    match: tuple[tuple[str, Any], ...]
    value: str


@dataclass
class Cell:
    """The runs of one (row, column), aggregated over seeds (teacher cells: over teacher runs).

    ``values``: run key (seed, or teacher run id) -> metric value of the complete runs;
    ``expected``: how many runs the cell should have; ``problems``: one phrase per run not
    averaged; ``empty``: what the cell shows when no run has a value.
    """

    role: str
    values: dict[Any, float] = field(default_factory=dict)
    expected: int = 0
    problems: list[str] = field(default_factory=list)
    failed: int = 0
    running: int = 0
    missing: int = 0
    empty: str = ""
    mean: float = math.nan
    std: float = math.nan
    ci: tuple[float, float] | None = None
    delta: float | None = None
    gap: float | None = None
    diffs: np.ndarray | None = None
    p: float = math.nan
    p_holm: float = math.nan
    mark: int = 0
    place: int = 0
    note: str | None = None
    mixed: str | None = None
    """Set when the cell's runs differ in resolved recipe or method code: which runs."""
    final_only: list[str] = field(default_factory=list)
    """``--checkpoint best``: keys of averaged runs without periodic evaluation (final values)."""
    runs: dict[str, str] = field(default_factory=dict)
    """Run key (seed, or teacher run id, as text) -> run id of every run of the cell that has
    a record (averaged or not): what a cell links to."""

    @property
    def n(self) -> int:
        """The number of runs averaged."""
        return len(self.values)


@dataclass
class Table:
    """A built table: rows, columns, cells by (row index, column index), numbered footnotes."""

    spec: TableSpec
    metric_label: str
    higher_is_better: bool
    title: str | None
    row_axes: tuple[str, ...]
    col_axes: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    columns: list[Column]
    cells: dict[tuple[int, int], Cell]
    notes: list[tuple[str, str]]
    show_delta: bool
    show_gap: bool
    seed_counts: set[int] = field(default_factory=set)
    """The expected seed counts of the student cells (one element when uniform)."""
    budgets: tuple[str, ...] = ()
    """The budget labels of the table's student runs (:func:`budget_labels`)."""

    @property
    def method_axis(self) -> int:
        """Position of ``method`` in the row keys."""
        return self.row_axes.index("method")

    def method(self, row: tuple[Any, ...]) -> str:
        """The method of a row key."""
        return str(row[self.method_axis])

    def context_row(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """The row key without its method: rows sharing it share a baseline and a teacher."""
        return row[: self.method_axis] + row[self.method_axis + 1 :]

    def against_baseline(self) -> dict[str, list[tuple[Cell, Cell]]]:
        """Method (baseline included, teacher excluded) -> its (cell, baseline cell) pairs, one
        per column and context row, in table order: the *tasks* a method is compared on."""
        base = {(self.context_row(row), ci): self.cells[ri, ci]
                for ri, row in enumerate(self.rows) if self.method(row) == BASELINE
                for ci in range(len(self.columns))}
        out: dict[str, list[tuple[Cell, Cell]]] = {}
        for ri, row in enumerate(self.rows):
            if self.method(row) == TEACHER:
                continue
            for ci in range(len(self.columns)):
                pair = (self.cells[ri, ci], base[self.context_row(row), ci])
                out.setdefault(self.method(row), []).append(pair)
        return out


def metric_info(metric: str, frame: pd.DataFrame) -> tuple[str, bool]:
    """(label, higher is better) of a scalar metric; a :class:`KdbenchError` if unknown."""
    if metric in METRICS:
        return METRICS[metric]
    if metric.startswith(IOU_PREFIX) and metric in frame.columns:
        return f"IoU of {metric[len(IOU_PREFIX):]} (%)", True
    known = ", ".join([*METRICS, PER_CLASS, "iou.<class>"])
    raise KdbenchError(f"unknown metric {metric!r}; known: {known}")


def check_spec(spec: TableSpec) -> None:
    """Raise :class:`KdbenchError` for axes, cell formats, tests or levels a table cannot use."""
    for axis in (*spec.rows, *spec.cols):
        if axis not in AXES:
            raise KdbenchError(f"unknown axis {axis!r} in --rows/--cols; known: {', '.join(AXES)}")
    if len(set(spec.rows + spec.cols)) != len(spec.rows) + len(spec.cols):
        raise KdbenchError("--rows and --cols must name each axis at most once")
    if "method" not in spec.rows:
        raise KdbenchError("--rows must include 'method' (reference rows and tests are per method)")
    if not spec.cols and spec.metric != PER_CLASS:
        raise KdbenchError("--cols must name at least one axis")
    if spec.cell not in CELL_FORMATS:
        raise KdbenchError(f"unknown cell format {spec.cell!r}; known: {', '.join(CELL_FORMATS)}")
    if spec.test not in (*stats.TESTS, BAYES):
        raise KdbenchError(f"unknown test {spec.test!r}; known: {', '.join(stats.TESTS)}, {BAYES}")
    if (spec.test == BAYES) != (spec.rope is not None) or (spec.rope or 0.0) < 0.0:
        raise KdbenchError("--test bayes needs --rope R (R >= 0, in the metric's units), and "
                           "--rope only goes with --test bayes")
    if spec.checkpoint not in CHECKPOINTS:
        raise KdbenchError(f"unknown checkpoint {spec.checkpoint!r}; known: "
                           f"{', '.join(CHECKPOINTS)}")
    if spec.aggregate is not None and spec.aggregate not in AGGREGATES:
        raise KdbenchError(f"unknown aggregate {spec.aggregate!r}; known: {', '.join(AGGREGATES)}")
    if not 0.0 < spec.alpha < 1.0:
        raise KdbenchError(f"--alpha {spec.alpha}: expected a level between 0 and 1")
    if spec.decimals < 0 or spec.resamples < 1:
        raise KdbenchError("--decimals must be >= 0 and the bootstrap resamples >= 1")


def _sort_key(value: Any) -> tuple[int, Any]:
    """Orders axis values (ints numerically, None last) without comparing across types."""
    if value is None:
        return (2, 0)
    return (0, value) if isinstance(value, (int, np.integer)) else (1, str(value))


def select_students(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The student runs a table aggregates: filtered, checked for unplaced axes, deduplicated.

    Of several runs with the same axes and seed, a complete one wins over a running one over a
    failed one; two complete ones are a :class:`KdbenchError` (they would be averaged silently).
    """
    students = frame[frame["kind"] == "student"].copy()  # not teachers, not tuning trials
    students[list(AXES)] = students[list(AXES)].fillna(UNKNOWN)
    students["seed"] = [None if pd.isna(s) else int(s) for s in students["seed"]]
    for axis, accepted in spec.where:
        if axis not in WHERE_AXES:
            raise KdbenchError(f"--where {axis}=...: unknown axis; known: {', '.join(WHERE_AXES)}")
        keep = students[axis].astype(str).isin(accepted)
        if axis == "method":
            keep |= students["method"] == BASELINE
        students = students[keep]
    if students.empty:
        raise KdbenchError("no student runs match the selection")
    placed = set(spec.rows + spec.cols)
    for axis in AXES:
        values = students[axis].drop_duplicates().tolist()
        if axis not in placed and len(values) > 1:
            shown = ", ".join(sorted(map(str, values)))
            raise KdbenchError(
                f"the student runs differ in {axis} ({shown}); put {axis} in --rows or --cols "
                f"or select one with --where {axis}=VALUE"
            )
    key = [*spec.rows, *spec.cols, "seed"]
    complete = students[students["status"] == "complete"]
    clash = complete[complete.duplicated(key, keep=False)]
    if not clash.empty:
        first = clash.iloc[0]
        ids = clash.loc[(clash[key] == first[key]).all(axis=1), "id"].tolist()
        where = ", ".join(f"{a}={first[a]}" for a in key)
        raise KdbenchError(
            f"several complete runs for {where}: {', '.join(ids)}; keep one "
            "(e.g. --suite FILE or --where suite=…)"
        )
    rank = students["status"].map(_STATUS_RANK).fillna(2)
    students = students.assign(_rank=rank, _mixed=_mixtures(students, [*spec.rows, *spec.cols]))
    students = students.sort_values("_rank", kind="stable")
    return students.drop_duplicates(key).drop(columns="_rank")


def _mixtures(students: pd.DataFrame, cell_axes: list[str]) -> list[str | None]:
    """Per run: a phrase naming the runs of its cell when they differ in resolved recipe or in
    method code (any status), else None."""
    out: list[str | None] = [None] * len(students)
    position = {index: i for i, index in enumerate(students.index)}
    for _, group in students.groupby(cell_axes, dropna=False, sort=False):
        kinds = [
            what
            for column, what in (("recipe", "resolved recipes"), ("code", "method code"))
            if group[column].dropna().nunique() > 1
        ]
        if not kinds:
            continue
        runs = ", ".join(
            f"{r.id} (seed {r.seed}, {r.status}, recipe {r.recipe}, code {r.code or '-'})"
            for r in group.sort_values(["seed", "id"]).itertuples()
        )
        text = f"mixes runs of different {' and '.join(kinds)}: {runs}"
        for index in group.index:
            out[position[index]] = text
    return out


def build_tables(frame: pd.DataFrame, spec: TableSpec) -> list[Table]:
    """The tables of ``spec`` over the runs of ``frame`` (a :func:`load_results` frame).

    One table for a scalar metric; for ``per_class`` one table per column key, whose columns are
    the classes with a value in that column's runs or teachers. Records that cannot be read are
    left out with a footnote naming them; each table keeps the runs' budget labels.
    """
    check_spec(spec)
    corrupt = frame[frame["status"] == "corrupt"]
    frame = at_checkpoint(frame[frame["status"] != "corrupt"], spec.checkpoint)
    students = select_students(frame, spec)
    tables = _tables(frame, students, spec)
    for table in tables:
        table.budgets = budget_labels(students)
        if not corrupt.empty:
            left_out = "left out, unreadable: " + "; ".join(
                f"{r.id} ({r.error})" for r in corrupt.itertuples()
            )
            table.notes.append((_letters(len(table.notes)), left_out))
    return tables


def at_checkpoint(frame: pd.DataFrame, checkpoint: str) -> pd.DataFrame:
    """``frame`` with the metrics of ``checkpoint`` and a ``_final`` flag per run.

    "final": unchanged, ``_final`` False. "best": each run's mIoU, mFsc, pixel accuracy and
    per-class IoU (``iou.<class>``) are those of its best evaluation by mIoU among the periodic
    ones (``best.*``, chosen on the evaluation split, as CIRKD does) and the final one (which
    wins ties); a class the best evaluation has no score for is NaN there (records written
    before per-class scores were kept), never the final model's. A complete run without
    periodic evaluation keeps its final values and is flagged ``_final`` (its cell gets a
    footnote, never a silent final value).
    """
    if checkpoint == "final":
        return frame.assign(_final=False)
    has_best = frame[BEST_PREFIX + "miou"].notna()
    use_best = has_best & ~(frame["miou"] >= frame[BEST_PREFIX + "miou"])
    out = frame.assign(_final=~has_best & (frame["status"] == "complete"))
    for name in [*SCALAR_METRICS, *class_columns(frame)]:
        best = frame.get(BEST_PREFIX + name, pd.Series(math.nan, index=frame.index))
        out[name] = best.where(use_best, frame[name])
    return out


def budget_labels(students: pd.DataFrame) -> tuple[str, ...]:
    """The budget labels of the selected student runs, sorted (none for old records)."""
    return tuple(sorted({str(b) for b in students["budget"].dropna()} - {UNKNOWN}))


def _tables(frame: pd.DataFrame, students: pd.DataFrame, spec: TableSpec) -> list[Table]:
    """The tables of :func:`build_tables` (one per column key for ``per_class``)."""
    teachers = frame[frame["kind"] == TEACHER].set_index("id", drop=False).copy()
    teachers[list(AXES)] = teachers[list(AXES)].fillna(UNKNOWN)
    col_keys = sorted(
        {tuple(k) for k in students[list(spec.cols)].itertuples(index=False)},
        key=lambda k: tuple(map(_sort_key, k)),
    )
    if spec.metric != PER_CLASS:
        label, higher = metric_info(spec.metric, frame)
        columns = [Column(k, tuple(zip(spec.cols, k, strict=True)), spec.metric) for k in col_keys]
        return [_build(students, teachers, spec, columns, spec.cols, label, higher, None)]
    tables = []
    for key in col_keys:
        match = tuple(zip(spec.cols, key, strict=True))
        runs = students[_matches(students, match)]
        used = pd.concat([runs, teachers[teachers["id"].isin(runs["teacher"])]])
        classes = [c for c in class_columns(frame) if used[c].notna().any()]
        if not classes:
            continue
        columns = [Column((c[len(IOU_PREFIX) :],), match, c) for c in classes]
        title = " / ".join(map(str, key)) or None
        tables.append(_build(students, teachers, spec, columns, ("class",), "IoU (%)", True, title))
    if not tables:
        raise KdbenchError("no per-class IoU in the selected runs")
    return tables


def _matches(frame: pd.DataFrame, match: tuple[tuple[str, Any], ...]) -> pd.Series:
    """Boolean mask of the rows of ``frame`` whose axes equal ``match``."""
    mask = pd.Series(True, index=frame.index)
    for axis, value in match:
        mask &= frame[axis] == value
    return mask


def _row_keys(students: pd.DataFrame, row_axes: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Row keys: every student row, plus the teacher and baseline rows of each context row.

    Order: teacher rows, then baseline rows, then methods, each sorted by their axis values.
    """
    m = row_axes.index("method")
    keys = {tuple(k) for k in students[list(row_axes)].itertuples(index=False)}
    for key in list(keys):
        keys.add(key[:m] + (TEACHER,) + key[m + 1 :])
        keys.add(key[:m] + (BASELINE,) + key[m + 1 :])

    def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
        """Sort key: reference rows first, then axis values."""
        role = {TEACHER: 0, BASELINE: 1}.get(key[m], 2)
        return (role, *map(_sort_key, key))

    return sorted(keys, key=order)


def _build(
    students: pd.DataFrame,
    teachers: pd.DataFrame,
    spec: TableSpec,
    columns: list[Column],
    col_axes: tuple[str, ...],
    label: str,
    higher: bool,
    title: str | None,
) -> Table:
    """Fill the cells of one table, then Δ, gap, tests and placing per context."""
    row_axes = spec.rows
    m = row_axes.index("method")
    context_axes = [a for a in row_axes if a != "method"] + list(spec.cols)
    rows = _row_keys(students, row_axes)
    needed = ["id", "status", "seed", "error", "_mixed", "_final"]
    needed += sorted({c.value for c in columns})
    runs = students[needed].to_dict("records")
    teacher_runs = {
        r["id"]: r for r in teachers.assign(_mixed=None)[needed].to_dict("records")
    }
    groups = students.groupby(list(row_axes + spec.cols), sort=False).indices
    seeds, teacher_ids = _contexts(students, context_axes)
    show_delta = spec.delta if spec.delta is not None else spec.metric != PER_CLASS
    table = Table(spec, label, higher, title, row_axes, col_axes, rows, columns, {}, [],
                  show_delta, spec.gap)
    for ci, column in enumerate(columns):
        col_values = tuple(v for _, v in column.match)
        for ri, row in enumerate(rows):
            context = table.context_row(row) + col_values
            if row[m] == TEACHER:
                ids = teacher_ids.get(context) or _matching_teachers(
                    teachers, dict(zip(context_axes, context, strict=True))
                )
                cell = _teacher_cell(ids, teacher_runs, column.value)
            else:
                index = groups.get(_group_key(row + col_values), [])
                role = "baseline" if row[m] == BASELINE else "method"
                cell_runs = [runs[i] for i in index]
                cell = _student_cell(cell_runs, seeds.get(context, []), column.value, role)
                cell.mixed = next((r["_mixed"] for r in cell_runs if r["_mixed"]), None)
            _summarise(cell, spec)
            table.cells[ri, ci] = cell
            if cell.role != "teacher" and cell.expected:
                table.seed_counts.add(cell.expected)
    _compare(table)
    _number_notes(table)
    return table


def _contexts(
    students: pd.DataFrame, context_axes: list[str]
) -> tuple[dict[tuple[Any, ...], list[Any]], dict[tuple[Any, ...], list[str]]]:
    """Per context (tuple of its axis values): the expected seeds and the teacher ids used."""
    seeds: dict[tuple[Any, ...], list[Any]] = {}
    teacher_ids: dict[tuple[Any, ...], list[str]] = {}
    keys = (
        students[context_axes].itertuples(index=False, name=None)
        if context_axes
        else [()] * len(students)
    )
    for key, seed, teacher in zip(keys, students["seed"], students["teacher"], strict=True):
        seeds.setdefault(key, []).append(seed)
        if isinstance(teacher, str):
            teacher_ids.setdefault(key, []).append(teacher)
    return (
        {k: sorted(set(v), key=_sort_key) for k, v in seeds.items()},
        {k: sorted(set(v)) for k, v in teacher_ids.items()},
    )


def _group_key(key: tuple[Any, ...]) -> Any:
    """The key pandas' ``groupby(...).indices`` uses: a scalar for one grouping column."""
    return key[0] if len(key) == 1 else key


def _student_cell(runs: list[dict[str, Any]], seeds: list[Any], value: str, role: str) -> Cell:
    """The cell of one method: one value per expected seed, or the reason it has none."""
    cell = Cell(role=role, expected=len(seeds))
    by_seed = {r["seed"]: r for r in runs}
    reasons: dict[str, list[str]] = {}
    for seed in seeds:
        _add_run(cell, by_seed.get(seed), seed, value, reasons)
    cell.problems = _phrases(reasons, "seed")
    return cell


def _matching_teachers(teachers: pd.DataFrame, context: dict[str, Any]) -> list[str]:
    """Teacher run ids whose suite/dataset/student axes equal those of ``context``."""
    axes = [a for a in ("suite", "dataset", "student") if a in context]
    return sorted(teachers.loc[_matches(teachers, tuple((a, context[a]) for a in axes)), "id"])


def _teacher_cell(ids: list[str], teachers: dict[str, dict[str, Any]], value: str) -> Cell:
    """The teacher reference of one context: one value per teacher run in ``ids``."""
    cell = Cell(role="teacher", expected=len(ids))
    reasons: dict[str, list[str]] = {}
    for run_id in ids:
        _add_run(cell, teachers.get(run_id), run_id, value, reasons)
    cell.problems = _phrases(reasons, "teacher")
    return cell


def _add_run(
    cell: Cell, run: dict[str, Any] | None, key: Any, value: str, reasons: dict[str, list[str]]
) -> None:
    """Count one expected run into ``cell``: its value, or its key under the reason it has none."""
    if run is not None:
        cell.runs[str(key)] = run["id"]
    if run is None:
        cell.missing += 1
        reason = "missing"
    elif run["status"] == "complete":
        v = run[value]
        if isinstance(v, (int, float)) and math.isfinite(v):
            cell.values[key] = float(v)
            if run["_final"]:
                cell.final_only.append(str(key))
            return
        reason = "null"
    elif run["status"] == "running":
        cell.running += 1
        reason = "running"
    else:
        cell.failed += 1
        reason = f"failed (run {run['id']}: {run.get('error') or 'no error recorded'})"
    reasons.setdefault(reason, []).append(str(key))


_VERBS = {
    "missing": ("has no record", "have no record"),
    "null": ("has a null value", "have null values"),
    "running": ("is still running", "are still running"),
}


def _phrases(reasons: dict[str, list[str]], noun: str) -> list[str]:
    """``{"missing": ["0", "2"]}`` -> ``["seeds 0, 2 have no record"]``."""
    out = []
    for reason, keys in reasons.items():
        plural = len(keys) > 1
        verb = _VERBS[reason][plural] if reason in _VERBS else reason
        out.append(f"{noun}{'s' if plural else ''} {', '.join(keys)} {verb}")
    return out


def _summarise(cell: Cell, spec: TableSpec) -> None:
    """Mean, sample std and the interval of the cell's values; the empty label."""
    values = np.fromiter(cell.values.values(), dtype=np.float64, count=cell.n)
    if cell.n == 0:
        cell.empty = ("failed" if cell.failed else "running" if cell.running
                      else "missing" if cell.missing else "n/a")
        return
    cell.mean = float(values.mean())
    if cell.n >= 2:
        cell.std = float(values.std(ddof=1))
        if spec.cell == "ci":
            cell.ci = stats.t_ci(values)
        elif spec.cell == "bootstrap" and cell.n >= stats.BOOTSTRAP_MIN_N:
            cell.ci = stats.bootstrap_ci(values, resamples=spec.resamples)


def _compare(table: Table) -> None:
    """Δ, gap share, paired tests with Holm's correction and placing, context by context."""
    spec = table.spec
    sign = 1.0 if table.higher_is_better else -1.0
    by_context: dict[tuple[Any, ...], dict[str, int]] = {}
    for ri, row in enumerate(table.rows):
        by_context.setdefault(table.context_row(row), {})[table.method(row)] = ri
    for ci in range(len(table.columns)):
        for members in by_context.values():
            cells = {method: table.cells[ri, ci] for method, ri in members.items()}
            base, teacher = cells[BASELINE], cells[TEACHER]
            tested = []
            for method, cell in cells.items():
                if method == BASELINE or not cell.n or not base.n:
                    continue
                cell.delta = cell.mean - base.mean
                if method == TEACHER:
                    continue
                if teacher.n and sign * (teacher.mean - base.mean) > 0:
                    cell.gap = 100.0 * cell.delta / (teacher.mean - base.mean)
                seeds = [s for s in cell.values if s in base.values]
                cell.diffs = np.array([cell.values[s] - base.values[s] for s in seeds])
                a = [cell.values[s] for s in seeds]
                b = [base.values[s] for s in seeds]
                if spec.test != BAYES:
                    cell.p = stats.paired_pvalue(a, b, spec.test)
                    tested.append(cell)
            adjusted, reject = stats.holm([c.p for c in tested], spec.alpha)
            for cell, p_holm, rejected in zip(tested, adjusted, reject, strict=True):
                cell.p_holm = float(p_holm)
                if rejected:
                    cell.mark = 1 if sign * float(np.mean(cell.diffs)) > 0 else -1
            _place([c for m, c in cells.items() if m != TEACHER and c.n], spec.decimals, sign)


def _place(cells: list[Cell], decimals: int, sign: float) -> None:
    """Mark the best (1) and second best (2) displayed values among ``cells``."""
    if len(cells) < 2:
        return
    shown = [round(c.mean, decimals) for c in cells]
    levels = sorted(set(shown), key=lambda v: -sign * v)
    for cell, value in zip(cells, shown, strict=True):
        if value == levels[0]:
            cell.place = 1
        elif len(levels) > 1 and value == levels[1]:
            cell.place = 2


def _letters(i: int) -> str:
    """Footnote label i (0-based): a … z, aa, ab, …"""
    label = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        label = chr(ord("a") + r) + label
    return label


def _number_notes(table: Table) -> None:
    """Give each cell with problems a footnote; identical texts share one label."""
    labels: dict[str, str] = {}
    for (_, _), cell in sorted(table.cells.items()):
        texts = []
        if cell.problems:
            noun = "teacher runs" if cell.role == "teacher" else "seeds"
            lost = cell.expected - cell.n
            texts.append(
                f"{lost} of {cell.expected} {noun} not averaged: " + "; ".join(cell.problems)
            )
        if cell.mixed:
            texts.append(cell.mixed)
        if cell.final_only:
            noun = "teacher" if cell.role == "teacher" else "seed"
            many = len(cell.final_only) > 1
            texts.append(f"{noun}{'s' if many else ''} {', '.join(cell.final_only)} "
                         f"{'have' if many else 'has'} no periodic evaluation: the final "
                         "model's value")
        if not texts:
            continue
        text = "; ".join(texts)
        if text not in labels:
            labels[text] = _letters(len(labels))
            table.notes.append((labels[text], text))
        cell.note = labels[text]
