"""One report written in two formats at once: ``report.md`` (Markdown) and ``index.html``.

A :class:`Document` collects headings, tables, summary tables, figures and paragraphs; each
call appends the block to both texts, so the two pages hold the same content in the same order.
Markdown escapes with :func:`kdbench.report.render.markdown.escape`, HTML with
:func:`kdbench.report.render.html.escape`; HTML tables are sortable and their cells link to the
run pages (``link``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdbench.report.cells.tables import Table
from kdbench.report.render import html, markdown
from kdbench.report.render.formats import render
from kdbench.report.words.text import SimpleTable


@dataclass
class Document:
    """The Markdown lines and HTML fragments of a report; ``link``: run id -> its page."""

    link: html.Link
    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def heading(self, level: int, title: str) -> None:
        """A heading of ``level`` (1 = the page title)."""
        self.md += ["#" * level + " " + markdown.escape(title), ""]
        self.html.append(f"<h{level}>{html.escape(title)}</h{level}>")

    def text(self, plain: str) -> None:
        """A paragraph of plain text."""
        self.md += [markdown.escape(plain), ""]
        self.html.append(f"<p>{html.escape(plain)}</p>")

    def tables(self, tables: list[Table], with_ranks: bool = False,
               power_delta: float | None = None) -> None:
        """Main tables, each with its ranks and seeds needed if asked."""
        self.md.append(render(tables, "markdown", with_ranks, power_delta))
        self.html.append(render(tables, "html", with_ranks, power_delta, self.link))

    def simple(self, table: SimpleTable, links: dict[str, str] | None = None) -> None:
        """A summary table; in HTML, cells equal to a key of ``links`` link to its value."""
        self.md.append(markdown.render_simple(table))
        self.html.append(html.render_simple(table, links))

    def image(self, name: str, alt: str) -> None:
        """A figure file beside the report (relative link)."""
        self.md += [f"![{markdown.escape(alt)}]({name})", ""]
        self.html.append(f'<p><img src="{html.escape(name)}" alt="{html.escape(alt)}"></p>')

    def files(self, names: list[str]) -> None:
        """Links to the other formats of the table above."""
        self.md += ["Files: " + ", ".join(f"[{n}]({n})" for n in names), ""]
        self.html.append('<p class="caption">Files: ' + ", ".join(
            f'<a href="{html.escape(n)}">{html.escape(n)}</a>' for n in names) + "</p>")
