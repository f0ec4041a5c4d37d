"""``kdbench report``: every table and figure of a results folder, and a Markdown summary.

Layout of the output folder (``<p>`` = ``<suite>_`` when the results hold several suites and
the suite is not a row or column axis; each suite then gets its own section):

- ``<p><metric>.md|.tex|.csv`` per metric: the main table with Δ, gap share, significance,
  average ranks and seeds needed; ``<p>cd_<metric>.png|.pdf`` its critical-difference diagram;
- ``<p>per_class.md|.tex|.csv`` and ``<p>per_class_<i>.png``: per-class IoU tables and bars;
- ``<p>curves_<i>.png``: training loss against step per method, one figure per data set and
  student;
- ``<p>cost.md|.tex|.csv``: what the runs cost (steps, FLOPs, s/step, device-hours) and
  ``<p>cost_miou.png``: mIoU against device-hours per method;
- when the runs have several budgets (``train.budget`` a list: equal steps, equal FLOPs, ...)
  each budget gets the sections above (``<p><budget>_...``), followed by
  ``<p>rankings.md|.tex``: the ranking under every budget side by side, with their costs;
- ``report.md``: all of the above embedded, plus the runs that failed or are still running.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from kdbench.errors import KdbenchError
from kdbench.report.cells import cost, summary
from kdbench.report.cells.tables import (
    PER_CLASS,
    Table,
    TableSpec,
    build_tables,
    metric_info,
    select_students,
)
from kdbench.report.records.frame import (
    TEACHER,
    corrupt_row,
    histories,
    read_records,
    records_to_frame,
    rows_to_frame,
)
from kdbench.report.render import latex, markdown, plots
from kdbench.report.render.formats import render
from kdbench.report.words import summaries
from kdbench.results.store import RunStore


@dataclass(frozen=True)
class ReportOptions:
    """What the report contains: the metrics of the main tables, the table layout and tests."""

    metrics: tuple[str, ...] = ("miou", "mfsc", "pixel_acc")
    table: TableSpec = TableSpec(gap=True)
    power_delta: float = 1.0


def _slug(text: str) -> str:
    """``text`` made safe as part of a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "suite"


def _write_formats(out: Path, name: str, tables: list[Table], power_delta: float | None) -> None:
    """``name``.md, .tex and .csv of ``tables`` (with ranks, and power if given)."""
    for fmt, suffix in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
        text = render(tables, fmt, with_ranks=power_delta is not None, power_delta=power_delta)
        (out / f"{name}.{suffix}").write_text(text)


def _section(frame: pd.DataFrame, hist: pd.DataFrame, out: Path, prefix: str,
             options: ReportOptions) -> list[str]:
    """The Markdown lines of one suite (or of everything) and the files they link to; with
    several budgets, one part per budget and their rankings side by side."""
    spec = options.table
    labels = cost.budgets(frame, spec)
    if len(labels) > 1 and "budget" not in spec.rows + spec.cols:
        lines: list[str] = []
        for label in labels:
            part = replace(options, table=cost.for_budget(spec, label))
            lines += [f"### Budget: {markdown.escape(label)}", ""]
            lines += _metrics(frame, hist, out, f"{prefix}{_slug(label)}_", part)
            lines += _cost(frame, out, f"{prefix}{_slug(label)}_", part.table)
        return lines + _comparison(frame, out, prefix, options)
    lines = _metrics(frame, hist, out, prefix, options)
    lines += _cost(frame, out, prefix, spec)
    return lines + _cost_figure(frame, out, prefix, options)


def _cost(frame: pd.DataFrame, out: Path, prefix: str, spec: TableSpec) -> list[str]:
    """The cost table of ``spec``'s runs (.md, .tex, .csv) and its Markdown lines."""
    table = summaries.cost_table(frame, spec)
    name = f"{prefix}cost"
    (out / f"{name}.md").write_text(markdown.render_simple(table))
    (out / f"{name}.tex").write_text(latex.render_simple(table))
    cost.means(frame, spec).to_csv(out / f"{name}.csv", index=False)
    return ["### Cost", "", markdown.render_simple(table),
            f"Files: [{name}.tex]({name}.tex), [{name}.csv]({name}.csv)", ""]


def _cost_figure(frame: pd.DataFrame, out: Path, prefix: str, options: ReportOptions) -> list[str]:
    """The figure of the first metric against device-hours per method (and budget)."""
    metric = options.metrics[0]
    points = cost.cost_points(frame, options.table, metric)
    if points.empty or points["device_hours"].isna().all():
        return []
    path = out / f"{prefix}cost_{metric}.png"
    plots.cost_plot(points, metric, metric_info(metric, frame)[0], path)
    return [f"![{markdown.escape(metric)} against device-hours]({path.name})", ""]


def _comparison(frame: pd.DataFrame, out: Path, prefix: str, options: ReportOptions) -> list[str]:
    """The rankings of every budget side by side, and the cost figure of all budgets."""
    metric = options.metrics[0]
    spec = replace(options.table, metric=metric)
    label = metric_info(metric, frame)[0]
    table = summaries.rankings_table(frame, spec, label)
    name = f"{prefix}rankings"
    (out / f"{name}.md").write_text(markdown.render_simple(table))
    (out / f"{name}.tex").write_text(latex.render_simple(table))
    lines = ["### Rankings at equal steps and at equal compute", "",
             markdown.render_simple(table), f"Files: [{name}.tex]({name}.tex)", ""]
    return lines + _cost_figure(frame, out, prefix, options)


def _metrics(frame: pd.DataFrame, hist: pd.DataFrame, out: Path, prefix: str,
             options: ReportOptions) -> list[str]:
    """The metric tables, per-class tables and training curves of one budget's runs."""
    lines: list[str] = []
    for metric in options.metrics:
        spec = replace(options.table, metric=metric)
        tables = build_tables(frame, spec)
        name = f"{prefix}{metric}"
        _write_formats(out, name, tables, options.power_delta)
        lines += [f"### {tables[0].metric_label}", "",
                  render(tables, "markdown", True, options.power_delta),
                  f"Files: [{name}.tex]({name}.tex), [{name}.csv]({name}.csv)", ""]
        ranks = summary.ranks(tables[0])
        if ranks is not None:
            stem = out / f"{prefix}cd_{metric}"
            plots.cd_diagram(ranks, stem, tables[0].metric_label)
            lines += [f"![critical-difference diagram]({stem.name}.png)", ""]
    try:
        spec = replace(options.table, metric=PER_CLASS, gap=False, delta=None)
        per_class = build_tables(frame, spec)
    except KdbenchError:
        per_class = []
    if per_class:
        name = f"{prefix}{PER_CLASS}"
        _write_formats(out, name, per_class, None)
        lines += ["### Per-class IoU", ""]
        for i, table in enumerate(per_class):
            path = out / f"{name}_{i}.png"
            plots.class_bars(table, path)
            lines += [markdown.render_table(table), f"![per-class IoU]({path.name})", ""]
        lines += [f"Files: [{name}.tex]({name}.tex), [{name}.csv]({name}.csv)", ""]
    students = select_students(frame, options.table)
    lines += _curves(hist, students, out, prefix)
    return lines


def _curves(hist: pd.DataFrame, students: pd.DataFrame, out: Path, prefix: str) -> list[str]:
    """Training-curve figures of the data set/student pairs of ``students`` and their teachers."""
    if hist.empty:
        return []
    lines = ["### Training curves", ""]
    keep = hist["id"].isin(students["id"]) | hist["id"].isin(students["teacher"])
    pairs = students[["dataset", "student"]].drop_duplicates().sort_values(["dataset", "student"])
    for i, (dataset, student) in enumerate(pairs.itertuples(index=False)):
        runs = hist[keep & (hist["dataset"] == dataset) & (hist["student"] == student)]
        if runs.empty:
            continue
        path = out / f"{prefix}curves_{i}.png"
        plots.training_curves(runs, path, f"{dataset} / {student}")
        lines += [f"![training curves {dataset} / {student}]({path.name})", ""]
    return lines


def _tuning(frame: pd.DataFrame) -> list[str]:
    """The options every tuned row chose (one line per method, data set and student)."""
    tuned = frame[(frame["kind"] == "student") & frame["tuned"].notna()]
    if tuned.empty:
        return []
    lines = ["## Tuned options", "",
             "Chosen per row from the same number of trials for every method, each scored on a "
             "held-out part of the training split (never the evaluation split).", "",
             "| suite | dataset | student | method | chosen options |",
             "| :-- | :-- | :-- | :-- | :-- |"]
    keys = ["suite", "dataset", "student", "method", "tuned"]
    for r in tuned[keys].drop_duplicates().sort_values(keys).itertuples(index=False):
        lines.append("| " + " | ".join(markdown.escape(str(c)) for c in r) + " |")
    return lines + [""]


def _problems(frame: pd.DataFrame) -> list[str]:
    """A table of the runs that failed or are still running."""
    bad = frame[frame["status"] != "complete"]
    if bad.empty:
        return ["All runs are complete.", ""]
    lines = ["| id | suite | dataset | student | method | seed | status | error |",
             "| :-- | :-- | :-- | :-- | :-- | --: | :-- | :-- |"]
    for r in bad.itertuples(index=False):
        cells = [r.id, r.suite, r.dataset, r.student, r.method, r.seed, r.status, r.error or ""]
        lines.append("| " + " | ".join(markdown.escape(str(c)) for c in cells) + " |")
    return lines + [""]


def write_report(
    results: str | Path,
    out: str | Path,
    options: ReportOptions,
    run_ids: set[str] | None = None,
) -> Path:
    """Write every table and figure of the results folder into ``out``; returns report.md.

    ``run_ids`` (``--suite``) keeps only those runs. Unreadable records are listed among the
    runs not complete and left out of the tables (with a footnote)."""
    if PER_CLASS in options.metrics:
        raise KdbenchError("--metrics: per_class tables are always in the report; name scalars")
    store = RunStore(results)
    records = [r for r in read_records(results) if run_ids is None or r["id"] in run_ids]
    corrupt = [
        corrupt_row(run_id, problem)
        for run_id, _, problem in store.scan()
        if problem is not None and (run_ids is None or run_id in run_ids)
    ]
    if not records:
        raise KdbenchError(f"{results}: no readable record of the selected runs")
    frame = records_to_frame(records)
    if corrupt:
        frame = pd.concat([frame, rows_to_frame(corrupt)], ignore_index=True)
    hist = histories({**r, "history": store.history(r["id"])} for r in records)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = frame["status"].value_counts().to_dict()
    lines = [
        "# kdbench report",
        "",
        f"Results: `{results}`; {len(frame)} runs ("
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ").",
        "",
    ]
    spec = options.table
    students = frame[frame["kind"] != TEACHER]
    suites = sorted(students["suite"].dropna().astype(str).unique())
    for axis, accepted in spec.where:
        if axis == "suite":
            suites = [s for s in suites if s in accepted]
    if "suite" in spec.rows + spec.cols or len(suites) < 2:
        lines += _section(frame, hist, out, "", options)
    else:
        for suite in suites:
            table = replace(spec, where=(*spec.where, ("suite", (suite,))))
            lines += [f"## Suite {markdown.escape(suite)}", ""]
            lines += _section(frame, hist, out, f"{_slug(suite)}_", replace(options, table=table))
    lines += _tuning(frame)
    lines += ["## Runs not complete", "", *_problems(frame)]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
