"""LaTeX rendering: a ``table`` float holding a booktabs ``tabular``.

The output needs ``\\usepackage{booktabs}`` in the document preamble.

Every string that reaches the output goes through :func:`escape`: the ten LaTeX specials
(``& % $ # _ { } ~ ^ \\``), ``< > |`` (which the OT1 font encoding would misprint) and the few
Unicode symbols this package writes (± − Δ α · – † × χ ² ≤ ≥), so that pdflatex compiles
whatever a run or method is called.
"""

from __future__ import annotations

import re

from kdbench.report.cells.tables import Table
from kdbench.report.words import text

_REPLACEMENTS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "Δ": r"$\Delta$",
    "α": r"$\alpha$",
    "·": r"$\cdot$",
    "–": "--",
    "†": r"$\dagger$",
    "×": r"$\times$",
    "χ": r"$\chi$",
    "²": r"\textsuperscript{2}",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
}
_SPECIAL = re.compile("|".join(map(re.escape, _REPLACEMENTS)))


def escape(s: str) -> str:
    """``s`` as LaTeX text: each special character replaced in one pass (module docstring)."""
    return _SPECIAL.sub(lambda m: _REPLACEMENTS[m.group(0)], s)


STYLE = text.Style(
    escape=escape,
    bold=lambda s: rf"\textbf{{{s}}}",
    underline=lambda s: rf"\underline{{{s}}}",
    sup=lambda s: rf"\textsuperscript{{{s}}}",
)


def _header(table: Table, width: int) -> list[str]:
    """Header lines: one per column axis (equal neighbours merged), then the sub-columns."""
    lead = len(table.row_axes)
    keys = [c.key for c in table.columns]
    levels = len(table.col_axes)
    lines = []
    for level in range(levels):
        cells = [""] * lead if level < levels - 1 or width > 1 else [
            text.axis_header(a) for a in table.row_axes
        ]
        rules = []
        start = 0
        while start < len(keys):
            end = start
            while end + 1 < len(keys) and keys[end + 1][: level + 1] == keys[start][: level + 1]:
                end += 1
            span = (end - start + 1) * width
            first = lead + start * width + 1
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{escape(str(keys[start][level]))}}}")
            rules.append(rf"\cmidrule(lr){{{first}-{first + span - 1}}}")
            start = end + 1
        lines.append(" & ".join(cells) + r" \\")
        if level < levels - 1 or width > 1:
            lines.append(" ".join(rules))
    if width > 1:
        heads = [escape(h) for h in text.sub_headers(table)]
        cells = [text.axis_header(a) for a in table.row_axes] + heads * len(keys)
        lines.append(" & ".join(cells) + r" \\")
    return lines


def render_table(table: Table) -> str:
    """One ``table`` float: caption, booktabs tabular, footnotes under it."""
    width = len(text.sub_headers(table))
    spec = "l" * len(table.row_axes) + "r" * (width * len(table.columns))
    lines = [
        r"\begin{table}[tbp]",
        r"\centering",
        rf"\caption{{{text.caption(table, STYLE)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        *_header(table, width),
        r"\midrule",
    ]
    previous = None
    for ri, row in enumerate(table.rows):
        reference = table.method(row) in text.ROW_LABELS
        if previous is not None and previous != reference:
            lines.append(r"\midrule")
        previous = reference
        cells = text.row_labels(table, row, STYLE)
        for ci in range(len(table.columns)):
            cell = table.cells[ri, ci]
            cells += [text.cell_text(table, cell, STYLE), *text.extra_texts(table, cell, STYLE)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip{\footnotesize")
        lines += [note + r"\par" for note in text.notes(table, STYLE)]
        lines.append("}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render_simple(simple: text.SimpleTable) -> str:
    """A summary table as a ``table`` float with its caption."""
    lines = [
        r"\begin{table}[tbp]",
        r"\centering",
        rf"\caption{{{escape(simple.title + ('. ' + simple.caption if simple.caption else ''))}}}",
        rf"\begin{{tabular}}{{l{'r' * (len(simple.header) - 1)}}}",
        r"\toprule",
        " & ".join(escape(h) for h in simple.header) + r" \\",
        r"\midrule",
        *(" & ".join(escape(c) for c in row) + r" \\" for row in simple.rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def document(body: str) -> str:
    """A complete article around ``body`` (what the pdflatex test compiles)."""
    return (
        "\\documentclass{article}\n\\usepackage{booktabs}\n"
        "\\begin{document}\n" + body + "\\end{document}\n"
    )
