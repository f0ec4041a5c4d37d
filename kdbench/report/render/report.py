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
- ``figure_<i>.png``: the qualitative figure (:mod:`kdbench.figure`) of each (suite, data set,
  student, budget) cell whose runs' weights are in the results folder (a line saying why not,
  otherwise);
- ``report.md``: all of the above embedded, plus the runs that failed or are still running;
- ``index.html`` and ``runs/<id>.html``: the same content as an offline page set (sortable
  tables whose cells link to their runs' pages, the figures, a table of all runs), one page
  per run (:mod:`kdbench.report.render.site`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
    BASELINE,
    TEACHER,
    corrupt_row,
    histories,
    read_records,
    records_to_frame,
    rows_to_frame,
)
from kdbench.report.render import latex, markdown, plots, site
from kdbench.report.render.document import Document
from kdbench.report.render.formats import render
from kdbench.report.words import summaries
from kdbench.report.words.text import SimpleTable, number
from kdbench.results.store import RunStore


@dataclass(frozen=True)
class ReportOptions:
    """What the report contains: the metrics of the main tables, the table layout and tests."""

    metrics: tuple[str, ...] = ("miou", "mfsc", "pixel_acc")
    table: TableSpec = TableSpec(gap=True)
    power_delta: float = 1.0
    figure: bool = True
    """Draw the qualitative figures (:func:`_figures`)."""


FIGURE_IMAGES = 4
FIGURE_AMONG = 32
"""The report's figures show the 4 images the students disagree on most among the first 32
evaluation images (inference of every shown run on the CPU; ``kdbench figure`` searches all)."""


def _slug(text: str) -> str:
    """``text`` made safe as part of a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "suite"


def _write_formats(out: Path, name: str, tables: list[Table], power_delta: float | None) -> None:
    """``name``.md, .tex and .csv of ``tables`` (with ranks, and power if given)."""
    for fmt, suffix in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
        text = render(tables, fmt, with_ranks=power_delta is not None, power_delta=power_delta)
        (out / f"{name}.{suffix}").write_text(text)


def _section(frame: pd.DataFrame, hist: pd.DataFrame, out: Path, prefix: str,
             options: ReportOptions, doc: Document) -> None:
    """One suite (or everything) and the files it links to; with several budgets, one part per
    budget and their rankings side by side."""
    spec = options.table
    labels = cost.budgets(frame, spec)
    if len(labels) > 1 and "budget" not in spec.rows + spec.cols:
        for label in labels:
            part = replace(options, table=cost.for_budget(spec, label))
            doc.heading(3, f"Budget: {label}")
            _metrics(frame, hist, out, f"{prefix}{_slug(label)}_", part, doc)
            _cost(frame, out, f"{prefix}{_slug(label)}_", part.table, doc)
        _comparison(frame, out, prefix, options, doc)
        return
    _metrics(frame, hist, out, prefix, options, doc)
    _cost(frame, out, prefix, spec, doc)
    _cost_figure(frame, out, prefix, options, doc)


def _cost(frame: pd.DataFrame, out: Path, prefix: str, spec: TableSpec, doc: Document) -> None:
    """The cost table of ``spec``'s runs (.md, .tex, .csv)."""
    table = summaries.cost_table(frame, spec)
    name = f"{prefix}cost"
    (out / f"{name}.md").write_text(markdown.render_simple(table))
    (out / f"{name}.tex").write_text(latex.render_simple(table))
    cost.means(frame, spec).to_csv(out / f"{name}.csv", index=False)
    doc.heading(3, "Cost")
    doc.simple(table)
    doc.files([f"{name}.tex", f"{name}.csv"])


def _cost_figure(frame: pd.DataFrame, out: Path, prefix: str, options: ReportOptions,
                 doc: Document) -> None:
    """The figure of the first metric against device-hours per method (and budget)."""
    metric = options.metrics[0]
    points = cost.cost_points(frame, options.table, metric)
    if points.empty or points["device_hours"].isna().all():
        return
    path = out / f"{prefix}cost_{metric}.png"
    plots.cost_plot(points, metric, metric_info(metric, frame)[0], path)
    doc.image(path.name, f"{metric} against device-hours")


def _comparison(frame: pd.DataFrame, out: Path, prefix: str, options: ReportOptions,
                doc: Document) -> None:
    """The rankings of every budget side by side, and the cost figure of all budgets."""
    metric = options.metrics[0]
    spec = replace(options.table, metric=metric)
    label = metric_info(metric, frame)[0]
    table = summaries.rankings_table(frame, spec, label)
    name = f"{prefix}rankings"
    (out / f"{name}.md").write_text(markdown.render_simple(table))
    (out / f"{name}.tex").write_text(latex.render_simple(table))
    doc.heading(3, "Rankings at equal steps and at equal compute")
    doc.simple(table)
    doc.files([f"{name}.tex"])
    _cost_figure(frame, out, prefix, options, doc)


def _metrics(frame: pd.DataFrame, hist: pd.DataFrame, out: Path, prefix: str,
             options: ReportOptions, doc: Document) -> None:
    """The metric tables, per-class tables and training curves of one budget's runs."""
    for metric in options.metrics:
        spec = replace(options.table, metric=metric)
        tables = build_tables(frame, spec)
        name = f"{prefix}{metric}"
        _write_formats(out, name, tables, options.power_delta)
        doc.heading(3, tables[0].metric_label)
        doc.tables(tables, True, options.power_delta)
        doc.files([f"{name}.tex", f"{name}.csv"])
        ranks = summary.ranks(tables[0])
        if ranks is not None:
            stem = out / f"{prefix}cd_{metric}"
            plots.cd_diagram(ranks, stem, tables[0].metric_label)
            doc.image(f"{stem.name}.png", "critical-difference diagram")
    try:
        spec = replace(options.table, metric=PER_CLASS, gap=False, delta=None)
        per_class = build_tables(frame, spec)
    except KdbenchError:
        per_class = []
    if per_class:
        name = f"{prefix}{PER_CLASS}"
        _write_formats(out, name, per_class, None)
        best = options.table.checkpoint == "best"
        doc.heading(3, "Per-class IoU" + (" of the best checkpoint" if best else ""))
        for i, table in enumerate(per_class):
            path = out / f"{name}_{i}.png"
            plots.class_bars(table, path)
            doc.tables([table])
            doc.image(path.name, "per-class IoU")
        doc.files([f"{name}.tex", f"{name}.csv"])
    students = select_students(frame, options.table)
    _curves(hist, students, out, prefix, doc)


def _curves(hist: pd.DataFrame, students: pd.DataFrame, out: Path, prefix: str,
            doc: Document) -> None:
    """Training-curve figures of the data set/student pairs of ``students`` and their teachers."""
    if hist.empty:
        return
    doc.heading(3, "Training curves")
    keep = hist["id"].isin(students["id"]) | hist["id"].isin(students["teacher"])
    pairs = students[["dataset", "student"]].drop_duplicates().sort_values(["dataset", "student"])
    for i, (dataset, student) in enumerate(pairs.itertuples(index=False)):
        runs = hist[keep & (hist["dataset"] == dataset) & (hist["student"] == student)]
        if runs.empty:
            continue
        path = out / f"{prefix}curves_{i}.png"
        plots.training_curves(runs, path, f"{dataset} / {student}")
        doc.image(path.name, f"training curves {dataset} / {student}")


def _tuning(frame: pd.DataFrame, doc: Document) -> None:
    """The options every tuned row chose (one line per method, data set and student)."""
    tuned = frame[(frame["kind"] == "student") & frame["tuned"].notna()]
    if tuned.empty:
        return
    doc.heading(2, "Tuned options")
    doc.text("Chosen per row from the same number of trials for every method, each scored on a "
             "held-out part of the training split (never the evaluation split).")
    keys = ["suite", "dataset", "student", "method", "tuned"]
    rows = tuned[keys].drop_duplicates().sort_values(keys).itertuples(index=False)
    doc.simple(SimpleTable("", [*keys[:-1], "chosen options"], [[str(c) for c in r] for r in rows]))


def _figure_cells(records: list[dict[str, Any]], spec: TableSpec) -> dict[
        tuple[str, ...], list[dict[str, Any]]]:
    """(suite, data set, student, budget) -> the complete student runs of that cell that pass
    ``spec.where`` (the baseline always does), with the teachers they name."""
    by_id = {r["id"]: r for r in records}
    cells: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in records:
        axes = {**(r.get("axes") or {}), "suite": r.get("suite")}
        if r.get("kind") != "student" or r.get("status") != "complete" or not all(
                str(axes.get(a)) in ok or (a == "method" and axes.get(a) == BASELINE)
                for a, ok in spec.where):
            continue
        key = tuple(str(axes.get(a)) for a in ("suite", "dataset", "student", "budget"))
        cells.setdefault(key, []).append(r)
    for runs in cells.values():
        teachers = {r["axes"].get("teacher") for r in runs} & by_id.keys()
        runs += [by_id[t] for t in sorted(teachers)]
    return cells


def _figures(results: str | Path, records: list[dict[str, Any]], out: Path,
             spec: TableSpec, doc: Document) -> None:
    """The qualitative figure of each cell of :func:`_figure_cells` (:mod:`kdbench.figure`, the
    weights of ``spec.checkpoint``), or one line saying why a cell has none (weights not saved
    in the results folder, data set not on this machine); one line for all when none is drawn."""
    from kdbench.figure import make_figure

    cells = _figure_cells(records, spec)
    if not cells:
        return
    doc.heading(2, "Qualitative figure")
    several = len({key[0] for key in cells}) > 1
    failed: list[str] = []
    weights = ("final weights" if spec.checkpoint == "final" else "weights of the checkpoint "
               "the tables use: the best periodic evaluation's where it beat the final model")
    for i, (key, runs) in enumerate(sorted(cells.items())):
        title = " / ".join(key[int(not several):3])
        name = f"figure_{i}.png"
        try:
            shown = make_figure(results, out / name, images=FIGURE_IMAGES, records=runs,
                                checkpoint_name=spec.checkpoint, among=FIGURE_AMONG)
        except KdbenchError as exc:
            failed.append(f"{title}: no qualitative figure ({exc})")
            continue
        doc.text(f"{title}: evaluation images {', '.join(map(str, shown))}, the "
                 f"{len(shown)} of the first {FIGURE_AMONG} on which the students disagree "
                 "most (spread of per-image pixel accuracy). Columns: RGB, X, ground truth, "
                 "then the predictions of the teacher, the baseline and each method (the first "
                 f"seed they all have, {weights}). Other images, methods, error maps or a PDF: "
                 "kdbench figure.")
        doc.image(name, f"qualitative figure {title}")
    if len(failed) == len(cells) > 1:  # none drawn: one line for all
        n = len(cells) - 1
        failed = [f"{failed[0]}; the {n} other data set / student cell{'s' * (n > 1)} "
                  f"{'have' if n > 1 else 'has'} none either"]
    for line in failed:
        doc.text(line + ".")


RUN_COLUMNS = ("id", "suite", "kind", "dataset", "student", "method", "seed", "status", "miou")


def _shown(value: Any) -> str:
    """A value of the runs table as text: empty for missing, floats to two decimals."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return number(value, 2) if isinstance(value, float) else str(value)


def _runs_table(frame: pd.DataFrame, doc: Document, status: str | None) -> None:
    """The runs of ``frame`` (those not ``status``, if given) as a table; in HTML each id links
    to the run's page (corrupt records have none)."""
    runs = frame if status is None else frame[frame["status"] != status]
    header = [*RUN_COLUMNS] if status is None else [*RUN_COLUMNS[:-1], "error"]
    rows = [[_shown(v) for v in r] for r in runs.reindex(columns=header).itertuples(index=False)]
    links = {r: doc.link(r) for r in runs.loc[runs["status"] != "corrupt", "id"]}
    doc.simple(SimpleTable("", header, rows), links)


def _records(results: str | Path, run_ids: set[str] | None, suite: str | None) -> tuple[
        list[dict[str, Any]], pd.DataFrame, dict[str, list[dict[str, Any]]]]:
    """The selected records (named runs of ``suite`` when given, as
    :func:`~kdbench.report.records.frame.of_suite` does), their frame (corrupt records as
    rows) and their histories."""
    store = RunStore(results)
    records = [r for r in read_records(results) if run_ids is None or r["id"] in run_ids]
    if suite is not None:
        records = [{**r, "suite": suite} for r in records]
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
    return records, frame, {r["id"]: store.history(r["id"]) for r in records}


def write_report(
    results: str | Path,
    out: str | Path,
    options: ReportOptions,
    run_ids: set[str] | None = None,
    suite: str | None = None,
) -> Path:
    """Write every table and figure of the results folder into ``out``; returns report.md.

    ``run_ids`` (``--suite``) keeps only those runs, named runs of ``suite`` when given.
    Unreadable records are listed among the runs not complete and left out of the tables (with
    a footnote)."""
    if PER_CLASS in options.metrics:
        raise KdbenchError("--metrics: per_class tables are always in the report; name scalars")
    records, frame, runs = _records(results, run_ids, suite)
    hist = histories({**r, "history": runs[r["id"]]} for r in records)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = frame["status"].value_counts().to_dict()
    doc = Document(site.run_href)
    doc.heading(1, "kdbench report")
    doc.text(f"Results: {results}; {len(frame)} runs ("
             + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ").")
    spec = options.table
    students = frame[frame["kind"] != TEACHER]
    suites = sorted(students["suite"].dropna().astype(str).unique())
    for axis, accepted in spec.where:
        if axis == "suite":
            suites = [s for s in suites if s in accepted]
    if "suite" in spec.rows + spec.cols or len(suites) < 2:
        _section(frame, hist, out, "", options, doc)
    else:
        for suite in suites:
            table = replace(spec, where=(*spec.where, ("suite", (suite,))))
            doc.heading(2, f"Suite {suite}")
            _section(frame, hist, out, f"{_slug(suite)}_", replace(options, table=table), doc)
    if options.figure:
        _figures(results, records, out, spec, doc)
    _tuning(frame, doc)
    doc.heading(2, "Runs not complete")
    if (frame["status"] == "complete").all():
        doc.text("All runs are complete.")
    else:
        _runs_table(frame, doc, "complete")
    path = out / "report.md"
    path.write_text("\n".join(doc.md))
    doc.heading(2, "All runs")  # index.html only: report.md is written
    _runs_table(frame, doc, None)
    (out / "index.html").write_text(site.page("kdbench report", "\n".join(doc.html)),
                                    encoding="utf-8")
    site.write_run_pages(out, records, runs)
    return path
