"""The words and numbers of a table, shared by the Markdown and LaTeX renderers.

Everything is composed as plain Unicode text (numbers use the minus sign U+2212) and passed
through the renderer's :class:`Style`, whose ``escape`` makes any string safe for the format:
this module decides *what* a cell or caption says, a renderer only *how* it is marked up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from kdbench.report.cells import stats
from kdbench.report.cells.tables import BAYES, Cell, Table, TableSpec
from kdbench.report.records.frame import BASELINE, TEACHER

BETTER = "*"
WORSE = "†"
ROW_LABELS = {TEACHER: "Teacher (RGB-X)", BASELINE: "Baseline (none)"}
BEST_SENTENCE = (
    "Best checkpoint: each run's evaluation with the highest mIoU among its periodic "
    "evaluations and the final one, chosen on the evaluation split itself (as CIRKD does)."
)
TEST_NAMES = {"ttest": "t-test", "wilcoxon": "Wilcoxon signed-rank test"}


@dataclass(frozen=True)
class Style:
    """How one output format escapes text and marks it bold, underlined or superscript."""

    escape: Callable[[str], str]
    bold: Callable[[str], str]
    underline: Callable[[str], str]
    sup: Callable[[str], str]


@dataclass(frozen=True)
class SimpleTable:
    """A small table of plain strings (summaries): a header row, rows and a caption."""

    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


def number(x: float | None, decimals: int, signed: bool = False) -> str:
    """``x`` to ``decimals`` decimals, minus sign U+2212, ``+`` if ``signed``; "–" if undefined."""
    if x is None or not math.isfinite(x):
        return "–"
    text = f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"
    return text.replace("-", "−")


def cell_text(table: Table, cell: Cell, style: Style) -> str:
    """The value column of one cell: spread, placing, significance mark, n/N and footnote."""
    note = style.sup(style.escape(cell.note)) if cell.note else ""
    if cell.n == 0:
        return style.escape(cell.empty) + note
    d = table.spec.decimals
    main = number(cell.mean, d)
    if table.spec.cell == "std" and cell.n >= 2:
        main += f" ± {number(cell.std, d)}"
    elif cell.ci is not None:
        main += f" [{number(cell.ci[0], d)}, {number(cell.ci[1], d)}]"
    text = style.escape(main)
    if cell.place == 1:
        text = style.bold(text)
    elif cell.place == 2:
        text = style.underline(text)
    if cell.mark:
        text += style.sup(style.escape(BETTER if cell.mark > 0 else WORSE))
    if cell.n < cell.expected or table.seed_counts != {cell.expected}:
        text += style.escape(f" ({cell.n}/{cell.expected})")
    return text + note


def extra_texts(table: Table, cell: Cell, style: Style) -> list[str]:
    """The Δ and gap-share sub-columns of one cell (those the table shows)."""
    out = []
    d = table.spec.decimals
    if table.show_delta:
        out.append(style.escape(number(cell.delta, d, signed=True) if cell.role != "baseline"
                                else ""))
    if table.show_gap:
        out.append(style.escape(number(cell.gap, 0) if cell.role == "method" else ""))
    return out


def sub_headers(table: Table) -> list[str]:
    """Headers of the sub-columns under each column (unescaped)."""
    heads = [table.metric_label]
    if table.show_delta:
        heads.append("Δ")
    if table.show_gap:
        heads.append("gap (%)")
    return heads


def row_labels(table: Table, row: tuple, style: Style) -> list[str]:
    """The label cells of one row: method names, with the reference rows spelled out."""
    labels = []
    for axis, value in zip(table.row_axes, row, strict=True):
        text = ROW_LABELS.get(value, str(value)) if axis == "method" else str(value)
        labels.append(style.escape(text))
    return labels


def axis_header(axis: str) -> str:
    """Header of a row-label column: the axis name, capitalised."""
    return axis.capitalize()


def caption(table: Table, style: Style) -> str:
    """What the table shows and how to read every mark, as escaped text."""
    spec = table.spec
    counts = table.seed_counts
    seeds = f"{next(iter(counts))} seeds" if len(counts) == 1 else "the seeds of each column"
    spread = {
        "std": f"mean ± sample std over {seeds}",
        "ci": f"mean [95% CI of the mean: t interval, mean ± t(0.975, n − 1)·s/sqrt(n)] "
        f"over {seeds}",
        "bootstrap": f"mean [95% percentile bootstrap interval of the mean, {spec.resamples} "
        f"resamples, seed {stats.BOOTSTRAP_SEED}; shown only where n ≥ {stats.BOOTSTRAP_MIN_N}, "
        f"it under-covers below] over {seeds}",
        "mean": f"mean over {seeds}",
    }[spec.cell]
    title = f"{table.title}: " if table.title else ""
    at = " of the best checkpoint" if spec.checkpoint == "best" else ""
    parts = [
        f"{title}{table.metric_label}{at}, {spread}; (n/N): n of N expected runs averaged.",
        "Teacher: the RGB-X teacher runs the column's students distil from.",
        "Baseline: the student trained with cross-entropy only.",
    ]
    if spec.checkpoint == "best":
        parts.append(BEST_SENTENCE)
    if table.show_delta:
        parts.append("Δ: difference of means to the baseline.")
    if table.show_gap:
        parts.append("Gap: share of the teacher − baseline gap closed, 100·(m − b)/(T − b) "
                     "(– when the teacher is not better than the baseline).")
    if budget := budget_sentence(table.budgets, spec):
        parts.append(budget)
    parts.append("Bold: best, underlined: second-best student row (teacher excluded).")
    tests = [c for c in table.cells.values() if c.role == "method" and c.diffs is not None]
    m = max((c.diffs.size for c in tests), default=0)
    if spec.test == BAYES:
        parts.append("No significance marks: the Bayesian comparison with the baseline follows.")
        return style.escape(" ".join(parts))
    parts.append(
        f"{BETTER} / {WORSE}: significantly better / worse than the baseline "
        f"({TEST_NAMES[spec.test]} paired by seed, Holm-corrected over the methods of each "
        f"column, α = {spec.alpha:g})."
    )
    if spec.test == "wilcoxon" and m and stats.wilcoxon_min_pvalue(m) > spec.alpha:
        parts.append(f"With at most {m} paired seeds the smallest Wilcoxon p-value is "
                     f"{stats.wilcoxon_min_pvalue(m):.3g} > α: no method can be marked.")
    return style.escape(" ".join(parts))


def budget_sentence(budgets: tuple[str, ...], spec: TableSpec) -> str:
    """The training budget of runs with the budget labels ``budgets`` ("" for none)."""
    if not budgets:
        return ""
    if "budget" in spec.rows + spec.cols or len(budgets) > 1:
        return "Training budget per run as labelled (" + "; ".join(budgets) + ")."
    return f"Training budget per run: {budgets[0]}."


def notes(table: Table, style: Style) -> list[str]:
    """The footnotes: label mark then text, escaped."""
    return [f"{style.sup(style.escape(label))} {style.escape(text)}" for label, text in table.notes]
