"""HTML rendering of tables: sortable ``<table>`` elements with the Markdown table's marks.

Every user string (axis values, method names, errors, footnotes) passes through
:func:`escape` (``html.escape`` with quotes), so a name such as ``<script>`` shows as text.
A sortable table carries ``class="sortable"``; each numeric body cell carries its value in
``data-v`` (the cell's mean, Δ or gap), which the page's script (:data:`SORT_SCRIPT`) sorts by
when a header is clicked (numbers before text, ascending then descending). A cell links each
of its runs (``seed 0``, ``seed 1``, …; teacher cells: ``T1``, ``T2``, …) to the run's page
through ``link(run_id) -> href``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from kdbench.report.cells.tables import Cell, Table
from kdbench.report.words import text

Link = Callable[[str], str]
"""Run id -> the href of its page."""


def escape(s: object) -> str:
    """``s`` as HTML text (``&``, ``<``, ``>``, quotes escaped)."""
    return html.escape(str(s), quote=True)


STYLE = text.Style(
    escape=escape,
    bold=lambda s: f"<strong>{s}</strong>",
    underline=lambda s: f"<u>{s}</u>",
    sup=lambda s: f"<sup>{s}</sup>",
)

SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("data-dir") !== "asc";
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
    th.setAttribute("data-dir", asc ? "asc" : "desc");
    function key(row) {
      var c = row.children[i];
      if (!c) { return ""; }
      var v = c.getAttribute("data-v");
      return v !== null && v !== "" ? parseFloat(v) : c.textContent.trim();
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), r;
      if (typeof x === "number" && typeof y === "number") { r = x - y; }
      else if (typeof x === "number") { r = -1; }
      else if (typeof y === "number") { r = 1; }
      else { r = String(x).localeCompare(String(y)); }
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""
"""Click a header of a ``table.sortable``: its body rows sorted by that column."""


def _td(content: str, value: float | None = None, cls: str = "") -> str:
    """A body cell; ``value`` (when finite) is what sorting uses."""
    attrs = f' class="{cls}"' if cls else ""
    if value is not None and math.isfinite(value):
        attrs += f' data-v="{value!r}"'
    return f"<td{attrs}>{content}</td>"


def _grid(header: list[str], rows: list[str], caption: str, title: str | None) -> str:
    """A sortable table from escaped header texts and ready ``<tr>`` rows."""
    head = "".join(f'<th title="sort">{h}</th>' for h in header)
    out = f"<h4>{escape(title)}</h4>\n" if title else ""
    out += (f'<table class="sortable">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table>\n")
    return out + (f'<p class="caption">{caption}</p>\n' if caption else "")


def _runs(cell: Cell, link: Link | None) -> str:
    """The links from a cell to the pages of its runs."""
    if link is None or not cell.runs:
        return ""
    items = sorted(cell.runs.items())
    if cell.role == "teacher":
        names = [f"T{i + 1}" for i in range(len(items))]
    else:
        names = [f"seed {key}" for key, _ in items]
    anchors = [f'<a href="{escape(link(run_id))}">{escape(name)}</a>'
               for name, (_, run_id) in zip(names, items, strict=True)]
    return f'<span class="runs">{" ".join(anchors)}</span>'


def render_table(table: Table, link: Link | None = None) -> str:
    """One main table: title, sortable grid (one header per value and sub-column), caption and
    footnotes, each cell linking to its runs."""
    heads = text.sub_headers(table)
    header = [escape(text.axis_header(a)) for a in table.row_axes]
    for column in table.columns:
        label = " / ".join(map(str, column.key))
        header += [escape(f"{label}: {heads[0]}")] + [escape(h) for h in heads[1:]]
    body = []
    for ri, row in enumerate(table.rows):
        cells = [_td(label, cls="label") for label in text.row_labels(table, row, STYLE)]
        for ci in range(len(table.columns)):
            cell = table.cells[ri, ci]
            content = text.cell_text(table, cell, STYLE) + _runs(cell, link)
            cells.append(_td(content, cell.mean if cell.n else None))
            numbers = [cell.delta] * table.show_delta + [cell.gap] * table.show_gap
            extras = text.extra_texts(table, cell, STYLE)
            cells += [_td(e, v) for e, v in zip(extras, numbers, strict=True)]
        role = table.cells[ri, 0].role if table.columns else "method"
        body.append(f'<tr class="{role}">' + "".join(cells) + "</tr>")
    out = _grid(header, body, text.caption(table, STYLE), table.title)
    if table.notes:
        out += ('<ul class="notes">\n'
                + "\n".join(f"<li>{n}</li>" for n in text.notes(table, STYLE)) + "\n</ul>\n")
    return out


def _number(cell: str) -> float | None:
    """The number a summary-table cell shows (U+2212 minus, ``+``), or None for text."""
    try:
        return float(cell.replace("−", "-"))
    except ValueError:
        return None


def render_simple(simple: text.SimpleTable, links: dict[str, str] | None = None) -> str:
    """A summary table; cells equal to a key of ``links`` become links to its value."""
    links = links or {}
    rows = []
    for row in simple.rows:
        cells = []
        for c in row:
            shown = f'<a href="{escape(links[c])}">{escape(c)}</a>' if c in links else escape(c)
            cells.append(_td(shown, _number(c)))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _grid([escape(h) for h in simple.header], rows, escape(simple.caption),
                 simple.title or None)
