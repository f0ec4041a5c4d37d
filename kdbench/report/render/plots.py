"""Figures of the report (matplotlib, Agg backend): CD diagram, training curves, class bars.

Each function writes its figure to the given path stem (``.png``, and ``.pdf`` for the
critical-difference diagram) and returns the paths written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdbench.report.cells.summary import Ranks, cliques
from kdbench.report.cells.tables import Table
from kdbench.report.records.frame import BASELINE, STAT_PREFIX, TEACHER
from kdbench.report.words.text import ROW_LABELS


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain(text: str) -> str:
    """``text`` shown literally by matplotlib (a ``$`` would start mathtext)."""
    return text.replace("$", r"\$")


def _order(method: str) -> tuple[int, str]:
    """Teacher first, then the baseline, then the methods by name."""
    return ({TEACHER: 0, BASELINE: 1}.get(method, 2), method)


def cd_diagram(ranks: Ranks, stem: Path, title: str) -> list[Path]:
    """Demšar's critical-difference diagram of ``ranks``: ``stem``.png and ``stem``.pdf.

    A rank axis (1 = best, on the left), each method joined to its average rank, the critical
    difference drawn as a bar above the axis, and a thick line under every group of methods
    whose average ranks differ by less than the CD.
    """
    plt = _pyplot()
    k = len(ranks.methods)
    order = np.argsort(ranks.average, kind="stable")
    r = ranks.average[order]
    names = [ranks.methods[i] for i in order]
    groups = cliques(r, ranks.cd)
    left = (k + 1) // 2
    step = 0.35
    bar_depth = 0.2 + 0.15 * len(groups)
    bottom = -(bar_depth + step * (max(left, k - left) + 1))
    fig, ax = plt.subplots(figsize=(7.0, 1.4 - 0.45 * bottom))
    ax.hlines(0.0, 1, k, color="black", linewidth=1)
    for tick in range(1, k + 1):
        ax.vlines(tick, 0.0, 0.08, color="black", linewidth=1)
        ax.text(tick, 0.13, str(tick), ha="center", va="bottom", fontsize=9)
    ax.hlines(0.55, 1, 1 + ranks.cd, color="black", linewidth=1.5)
    ax.vlines([1, 1 + ranks.cd], 0.5, 0.6, color="black", linewidth=1.5)
    ax.text(1 + ranks.cd / 2, 0.63, f"CD = {ranks.cd:.2f}", ha="center", va="bottom", fontsize=9)
    for g, (i, j) in enumerate(groups):
        y = -0.15 * (g + 1)
        ax.hlines(y, r[i] - 0.04, r[j] + 0.04, color="black", linewidth=3)
    for pos, (name, rank) in enumerate(zip(names, r, strict=True)):
        on_left = pos < left
        level = pos if on_left else k - 1 - pos
        y = -(bar_depth + step * (level + 1))
        x_end = 0.6 if on_left else k + 0.4
        ax.plot([rank, rank, x_end], [0.0, y, y], color="black", linewidth=0.8)
        label = _plain(f"{name} ({rank:.2f})" if on_left else f"({rank:.2f}) {name}")
        ax.text(x_end + (-0.05 if on_left else 0.05), y, label, va="center",
                ha="right" if on_left else "left", fontsize=9)
    ax.set_xlim(-1.5, k + 2.5)
    ax.set_ylim(bottom - 0.1, 0.95)
    ax.axis("off")
    heading = f"{_plain(title)} (Friedman p = {ranks.p:.3g}, {len(ranks.blocks)} columns)"
    ax.set_title(heading, fontsize=10)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def training_curves(history: pd.DataFrame, path: Path, title: str) -> list[Path]:
    """Training loss against step, one line per method (mean over seeds, band = min..max).

    ``history``: rows of :func:`kdbench.report.records.frame.histories` for one context. When
    some run logged Spearman correlations of its per-pixel weights with its per-pixel loss
    (DWLD's ``w_t_spearman``, ``w_n_spearman``), a second panel plots them against step.
    """
    plt = _pyplot()
    ranked = [c for c in history.columns
              if c.startswith(STAT_PREFIX) and c.endswith("_spearman") and history[c].notna().any()]
    fig, axes = plt.subplots(1, 2 if ranked else 1, figsize=(11.0 if ranked else 6.4, 4.0),
                             squeeze=False)
    ax = axes[0, 0]
    for method in sorted(history["method"].unique(), key=_order):
        runs = history[history["method"] == method]
        curve = runs.groupby("step")["loss"].agg(["mean", "min", "max"])
        label = _plain(ROW_LABELS.get(method, method))
        line = ax.plot(curve.index, curve["mean"], label=label)[0]
        ax.fill_between(curve.index, curve["min"], curve["max"], alpha=0.2,
                        color=line.get_color(), linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if (history["loss"] > 0).all():
        ax.set_yscale("log")
    ax.set_title(_plain(title), fontsize=10)
    ax.legend(fontsize=8)
    if ranked:
        _weight_correlations(axes[0, 1], history, ranked)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return [path]


def _weight_correlations(ax: Any, history: pd.DataFrame, columns: list[str]) -> None:
    """Mean over seeds of each ``stat.*_spearman`` column against step, one line per method
    and column (e.g. ``lix w_t_spearman``)."""
    for method in sorted(history["method"].unique(), key=_order):
        runs = history[history["method"] == method]
        for column in columns:
            curve = runs.groupby("step")[column].mean().dropna()
            if not curve.empty:
                name = column[len(STAT_PREFIX):]
                ax.plot(curve.index, curve.values,
                        label=_plain(f"{ROW_LABELS.get(method, method)} {name}"))
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("Spearman(weight, per-pixel loss)")
    ax.set_title("per-pixel weights vs per-pixel loss", fontsize=10)
    ax.legend(fontsize=7)


def class_bars(table: Table, path: Path) -> list[Path]:
    """Per-class IoU of a per-class table: grouped bars (one per row), error bars = sample std."""
    plt = _pyplot()
    classes = [c.key[0] for c in table.columns]
    width = 0.8 / len(table.rows)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(classes) + 2), 4.0))
    x = np.arange(len(classes))
    for ri, row in enumerate(table.rows):
        cells = [table.cells[ri, ci] for ci in range(len(classes))]
        means = [c.mean for c in cells]
        errors = [0.0 if np.isnan(c.std) else c.std for c in cells]
        label = _plain(" / ".join(ROW_LABELS.get(v, str(v)) for v in row))
        ax.bar(x + (ri - (len(table.rows) - 1) / 2) * width, means, width, yerr=errors,
               label=label, capsize=1.5)
    ax.set_xticks(x, [_plain(c) for c in classes], rotation=45, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_title(_plain(table.title or "per-class IoU"), fontsize=10)
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return [path]


def cost_plot(points: pd.DataFrame, metric: str, label: str, path: Path) -> list[Path]:
    """``label`` against device-hours, one colour per method and one marker per budget.

    ``points``: columns ``method``, ``budget``, ``device_hours`` and ``metric`` (one point per
    method, budget and table column; :func:`kdbench.report.cells.cost.cost_points`).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = dict(zip(sorted(points["budget"].astype(str).unique()), "os^Dv<>p", strict=False))
    methods = sorted(points["method"].astype(str).unique(), key=_order)
    colours = plt.get_cmap("tab10")
    for i, method in enumerate(methods):
        for budget, marker in markers.items():
            sel = points[(points["method"] == method) & (points["budget"].astype(str) == budget)]
            if not sel.empty:
                ax.scatter(sel["device_hours"], sel[metric], color=colours(i % 10),
                           marker=marker, s=40)
    for i, method in enumerate(methods):
        ax.scatter([], [], color=colours(i % 10), marker="o", label=_plain(method))
    for budget, marker in markers.items():
        ax.scatter([], [], color="grey", marker=marker, label=_plain(budget))
    ax.set_xlabel("device-hours per run")
    ax.set_ylabel(_plain(label))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return [path]
