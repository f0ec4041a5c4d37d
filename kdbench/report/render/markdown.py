"""Markdown rendering (GitHub-flavoured tables): ``**bold**``, ``<ins>`` underline, ``<sup>``."""

from __future__ import annotations

import re

from kdbench.report.cells.tables import Table
from kdbench.report.words import text

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#])")


def escape(s: str) -> str:
    """Backslash-escape the characters Markdown or a table row would interpret."""
    return _SPECIAL.sub(r"\\\1", s)


STYLE = text.Style(
    escape=escape,
    bold=lambda s: f"**{s}**",
    underline=lambda s: f"<ins>{s}</ins>",
    sup=lambda s: f"<sup>{s}</sup>",
)


def _rows(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    """Pipe-table lines: header, alignment row (``l`` or ``r`` per column), body."""
    rule = [":--" if a == "l" else "--:" for a in align]
    return ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]


def render_table(table: Table) -> str:
    """One table: optional title, the pipe table, the caption and the footnotes."""
    heads = text.sub_headers(table)
    header = [text.axis_header(a) for a in table.row_axes]
    for column in table.columns:
        label = escape(" / ".join(map(str, column.key)))
        header += [label] + [escape(h) for h in heads[1:]]
    body = []
    for ri, row in enumerate(table.rows):
        cells = text.row_labels(table, row, STYLE)
        for ci in range(len(table.columns)):
            cell = table.cells[ri, ci]
            cells += [text.cell_text(table, cell, STYLE), *text.extra_texts(table, cell, STYLE)]
        body.append(cells)
    align = ["l"] * len(table.row_axes) + ["r"] * (len(header) - len(table.row_axes))
    lines = [f"**{escape(table.title)}**", ""] if table.title else []
    lines += _rows(header, body, align)
    lines += ["", text.caption(table, STYLE)]
    if table.notes:
        lines += [""] + [f"- {note}" for note in text.notes(table, STYLE)]
    return "\n".join(lines) + "\n"


def render_simple(simple: text.SimpleTable) -> str:
    """A summary table with its title and caption."""
    align = ["l"] + ["r"] * (len(simple.header) - 1)
    lines = [f"**{escape(simple.title)}**", ""] if simple.title else []
    rows = [[escape(c) for c in row] for row in simple.rows]
    lines += _rows([escape(h) for h in simple.header], rows, align)
    if simple.caption:
        lines += ["", escape(simple.caption)]
    return "\n".join(lines) + "\n"
