"""Rankings under different budgets side by side (equal steps, equal FLOPs, equal time).

For every budget of the selected student runs the table of ``spec`` is built on that budget's
runs alone; within each of its columns the student rows (baseline included, teacher excluded)
are ranked by their mean (1 = best, ties share the average rank) and the ranks averaged over
the columns. :func:`rankings_table` puts, per budget, each method's mean metric, its average
rank and its mean cost (TFLOPs of training, device-hours) side by side, so a reader sees at
once whether a method's place comes from its method or from the compute it was given.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from kdbench.report import cost
from kdbench.report.frame import BASELINE, TEACHER
from kdbench.report.tables import UNKNOWN, TableSpec, build_tables, select_students
from kdbench.report.text import SimpleTable, number


def _placed(spec: TableSpec) -> TableSpec:
    """``spec`` with ``budget`` among its column axes (so runs may differ in it)."""
    return spec if "budget" in spec.rows + spec.cols else replace(spec, cols=(*spec.cols, "budget"))


def budgets(frame: pd.DataFrame, spec: TableSpec) -> list[str]:
    """The budget labels of the selected student runs, steps budgets first."""
    students = select_students(frame, _placed(spec))
    labels = {str(b) for b in students["budget"].dropna()} - {UNKNOWN}
    return sorted(labels, key=lambda b: (not b.endswith(" steps"), b))


def for_budget(spec: TableSpec, budget: str) -> TableSpec:
    """``spec`` restricted to the runs of one budget."""
    return replace(spec, where=(*spec.where, ("budget", (budget,))))


def ranking(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Per student method of ``spec``'s table: ``mean`` (over columns of the cell means),
    ``rank`` (average over columns of the rank within the column), ``tflops`` and
    ``device_hours`` (mean cost), indexed by method."""
    table = build_tables(frame, spec)[0]
    sign = -1.0 if table.higher_is_better else 1.0
    methods: dict[str, dict[str, list[float]]] = {}
    for ci in range(len(table.columns)):
        cells = [
            (table.method(row), table.cells[ri, ci])
            for ri, row in enumerate(table.rows)
            if table.method(row) != TEACHER and table.cells[ri, ci].n
        ]
        ranks = rankdata([sign * c.mean for _, c in cells]) if cells else []
        for (method, cell), rank in zip(cells, ranks, strict=True):
            entry = methods.setdefault(method, {"mean": [], "rank": []})
            entry["mean"].append(cell.mean)
            entry["rank"].append(float(rank))
    costs = cost.means(frame, spec).groupby("method")[["tflops", "device_hours"]].mean()
    out = pd.DataFrame(
        {m: {"mean": np.mean(v["mean"]), "rank": np.mean(v["rank"])} for m, v in methods.items()}
    ).T
    return out.join(costs, how="left")


def rankings_table(frame: pd.DataFrame, spec: TableSpec, label: str) -> SimpleTable:
    """Each budget's ranking side by side (``label``: the metric's name, e.g. "mIoU (%)")."""
    labels = budgets(frame, spec)
    per_budget = {b: ranking(frame, for_budget(spec, b)) for b in labels}
    methods = sorted(
        {m for r in per_budget.values() for m in r.index},
        key=lambda m: (m != BASELINE, m),
    )
    header = ["method"]
    for b in labels:
        header += [f"{b}: {label}", f"{b}: rank", f"{b}: TFLOPs", f"{b}: device-h"]
    rows = []
    for method in methods:
        cells = [method]
        for b in labels:
            r = per_budget[b]
            if method in r.index:
                v = r.loc[method]
                cells += [
                    number(v["mean"], spec.decimals),
                    number(v["rank"], 2),
                    number(v["tflops"], 3),
                    number(v["device_hours"], 4),
                ]
            else:
                cells += ["–"] * 4
        rows.append(cells)
    caption = (
        f"Per budget: {label} averaged over the columns of the table (each a mean over seeds), "
        "the method's rank among the student rows averaged over the columns (1 = best; the "
        "baseline included, the teacher excluded), and the mean cost of its runs (FLOPs of "
        "all training steps, device-hours of the whole run)."
    )
    return SimpleTable("Rankings by budget", header, rows, caption)


def cost_points(frame: pd.DataFrame, spec: TableSpec, metric: str) -> pd.DataFrame:
    """Columns ``method``, ``budget``, ``device_hours``, ``metric``: the mean over seeds of every
    (method, budget, column) of the selected complete student runs (the cost plot's points)."""
    students = select_students(frame, _placed(spec))
    done = students[students["status"] == "complete"]
    keys = ["method", "budget", *[c for c in spec.cols if c != "budget"]]
    return done.groupby(keys, dropna=False)[["device_hours", metric]].mean().reset_index()
