"""Built tables (with their rank, power, cost and trace summaries) -> the text of one format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.report.cells import bayes, iqm, summary
from kdbench.report.cells.tables import BAYES, PER_CLASS, Table, TableSpec
from kdbench.report.render import html, latex, markdown, tidy
from kdbench.report.words import summaries
from kdbench.report.words.text import SimpleTable

FORMATS = ("markdown", "latex", "csv", "html")
_MODULES = {"markdown": markdown, "latex": latex, "html": html}


def render(
    tables: list[Table], fmt: str, with_ranks: bool = False, power_delta: float | None = None,
    link: html.Link | None = None,
) -> str:
    """``tables`` in format ``fmt``; each followed by its average ranks and seeds needed if asked.

    Markdown, LaTeX and HTML (a fragment: sortable ``<table>`` elements, see
    :mod:`kdbench.report.render.html`) put the summaries after each table as small tables; CSV
    adds them as columns (see :mod:`kdbench.report.render.tidy`). The Bayesian comparison and
    the interquartile mean (:func:`comparisons`) follow a table in Markdown, LaTeX and HTML;
    CSV holds the cells only. ``link`` (HTML only): run id
    -> the href of its page, which every cell links to.
    """
    if fmt not in FORMATS:
        raise KdbenchError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "csv":
        frames = []
        for table in tables:
            r = summary.ranks(table) if with_ranks else None
            p = None if power_delta is None else (power_delta, summary.power(table, power_delta))
            frames.append(tidy.frame(table, r, p, with_ranks))
        return tidy.concat(frames)
    module = _MODULES[fmt]
    parts = ["% kdbench table: needs \\usepackage{booktabs}\n"] if fmt == "latex" else []
    for table in tables:
        parts.append(html.render_table(table, link) if fmt == "html"
                     else module.render_table(table))
        if with_ranks:
            r = summary.ranks(table)
            parts.append(module.escape(summaries.NO_RANKS) + "\n" if r is None
                         else module.render_simple(summaries.ranks_table(table, r)))
        if power_delta is not None:
            rows = summary.power(table, power_delta)
            parts.append(module.render_simple(summaries.power_table(table, rows, power_delta)))
        parts += [module.render_simple(s) for s in comparisons(table)]
    return "\n".join(parts)


def comparisons(table: Table) -> list[SimpleTable]:
    """The Bayesian comparison and the interquartile mean of a main table, as its spec asks
    (none for per-class tables)."""
    spec = table.spec
    if spec.metric == PER_CLASS:
        return []
    out = []
    if spec.test == BAYES and spec.rope is not None:
        out.append(summaries.bayes_table(table, bayes.comparisons(table, spec.rope)))
    if spec.aggregate == "iqm":
        out.append(summaries.iqm_table(table, iqm.aggregates(table)))
    return out


def with_cost(text: str, frame: Any, spec: TableSpec, fmt: str) -> str:
    """``text`` (a rendered table) with the cost of its runs: columns in CSV, else a table."""
    if fmt == "csv":
        return tidy.add_cost_columns(text, frame, spec)
    return text + "\n" + _MODULES[fmt].render_simple(summaries.cost_table(frame, spec))


def with_trace(text: str, frame: Any, spec: TableSpec, fmt: str, results: str | Path) -> str:
    """``text`` with the runs of every cell and their reproducing commands."""
    if fmt == "csv":
        return tidy.add_trace_columns(text, frame, spec, results)
    return text + "\n" + _MODULES[fmt].render_simple(summaries.trace_table(frame, spec, results))
