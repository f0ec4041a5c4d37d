"""Small inline SVG line charts for the run pages (no matplotlib: a page per run must be cheap).

:func:`line_chart` draws one or more series ``(label, xs, ys)`` in a ``width`` × ``height``
box: a linear x axis from min to max step, a linear y axis from the smallest to the largest
finite value (log10 when ``log`` and every value is positive), the axis extremes as tick labels
and a legend. Points are mapped as

    px = left + (x − x_min) / (x_max − x_min) · plot_width
    py = top + (1 − (y − y_min) / (y_max − y_min)) · plot_height

(a span of zero is widened to 1). Labels are HTML-escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

Series = tuple[str, Sequence[float], Sequence[float]]
"""(label, xs, ys) of one line."""
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 24, 36


def _span(values: list[float]) -> tuple[float, float]:
    """(low, high) of ``values``, widened to a span of 1 when they are all equal."""
    low, high = min(values), max(values)
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def _fmt(v: float, log: bool) -> str:
    """A tick label (the value itself on a log axis)."""
    return f"{10 ** v:.3g}" if log else f"{v:.4g}"


def line_chart(series: list[Series], title: str, y_label: str, log: bool = False,
               width: int = 480, height: int = 240) -> str:
    """An ``<svg>`` element with the lines of ``series`` (empty string when nothing is finite)."""
    points = [(label, [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)
                       if math.isfinite(float(y))]) for label, xs, ys in series]
    log = log and all(y > 0 for _, p in points for _, y in p)
    points = [(label, [(x, math.log10(y) if log else y) for x, y in p]) for label, p in points]
    points = [(label, p) for label, p in points if p]
    if not points:
        return ""
    x0, x1 = _span([x for _, p in points for x, _ in p])
    y0, y1 = _span([y for _, p in points for _, y in p])
    pw, ph = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM

    def xy(x: float, y: float) -> str:
        return (f"{_LEFT + (x - x0) / (x1 - x0) * pw:.1f},"
                f"{_TOP + (1 - (y - y0) / (y1 - y0)) * ph:.1f}")

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
             f'<rect x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
             f'<text x="{width / 2:.0f}" y="15" text-anchor="middle" font-size="12">'
             f"{esc(title)}</text>",
             f'<text x="{_LEFT - 4}" y="{_TOP + 10}" text-anchor="end" font-size="10">'
             f"{_fmt(y1, log)}</text>",
             f'<text x="{_LEFT - 4}" y="{_TOP + ph}" text-anchor="end" font-size="10">'
             f"{_fmt(y0, log)}</text>",
             f'<text x="{_LEFT}" y="{height - 20}" font-size="10">{x0:.4g}</text>',
             f'<text x="{_LEFT + pw}" y="{height - 20}" text-anchor="end" font-size="10">'
             f"{x1:.4g}</text>",
             f'<text x="{_LEFT + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" '
             f'font-size="10">step; {esc(y_label)}{" (log scale)" if log else ""}</text>']
    for i, (label, p) in enumerate(points):
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                     + " ".join(xy(x, y) for x, y in p) + f'"><title>{esc(label)}</title>'
                     "</polyline>")
        parts.append(f'<text x="{_LEFT + 6}" y="{_TOP + 14 + 12 * i}" font-size="10" '
                     f'fill="{colour}">{esc(label)}</text>')
    return "\n".join(parts) + "\n</svg>"
