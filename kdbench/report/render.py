"""Built tables (and their rank and power summaries) -> the text of one output format."""

from __future__ import annotations

from kdbench.errors import KdbenchError
from kdbench.report import latex, markdown, summary, tidy
from kdbench.report.tables import Table

FORMATS = ("markdown", "latex", "csv")


def render(
    tables: list[Table], fmt: str, with_ranks: bool = False, power_delta: float | None = None
) -> str:
    """``tables`` in format ``fmt``; each followed by its average ranks and seeds needed if asked.

    Markdown and LaTeX put the summaries after each table as small tables; CSV adds them as
    columns (see :mod:`kdbench.report.tidy`).
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
    module = markdown if fmt == "markdown" else latex
    parts = [] if fmt == "markdown" else ["% kdbench table: needs \\usepackage{booktabs}\n"]
    for table in tables:
        parts.append(module.render_table(table))
        if with_ranks:
            r = summary.ranks(table)
            parts.append(module.escape(summary.NO_RANKS) + "\n" if r is None
                         else module.render_simple(summary.ranks_table(table, r)))
        if power_delta is not None:
            rows = summary.power(table, power_delta)
            parts.append(module.render_simple(summary.power_table(table, rows, power_delta)))
    return "\n".join(parts)
