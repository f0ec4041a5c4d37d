"""What the runs behind a table cost, and the rankings under each budget with their costs.

Per (row, column) of a :class:`~kdbench.report.cells.tables.TableSpec` layout, :func:`means`
is the mean over the complete student runs (seeds) of

- ``gflops_per_step``: FLOPs of one training step in units of 1e9: teacher forward + student
  forward and backward + distillation loss forward and backward (its learnable parts
  included), counted with ``torch.utils.flop_counter`` on the run's first batch
  (:mod:`kdbench.train.cost`);
- ``steps`` trained and ``tflops`` spent (FLOPs of all steps, 1e12);
- ``step_s_median``: median wall seconds per step after warm-up;
- ``device_hours``: wall time of the whole run (training and evaluation) times its devices (1).

The teacher row is each column's teacher runs (a one-off cost shared by every method).

Rankings under different budgets (equal steps, equal FLOPs, equal time): for every budget of
the selected student runs the table of ``spec`` is built on that budget's runs alone; within
each of its columns the student rows (baseline included, teacher excluded) are ranked by their
mean (1 = best, ties share the average rank) and the ranks averaged over the columns
(:func:`ranking`), next to each method's mean cost, so that a reader sees at once whether a
method's place comes from its method or from the compute it was given.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from kdbench.report.cells.tables import TableSpec, budget_labels, build_tables, select_students
from kdbench.report.records.frame import TEACHER

COLUMNS = ("steps", "gflops_per_step", "tflops", "step_s_median", "device_hours")
"""The cost columns of :func:`means`, in order."""


def means(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Mean cost of the complete runs per (row axes, column axes), teachers as method "teacher".

    Teachers are the runs named by the selected students (keyed by the students' column axes).
    """
    students = select_students(frame, spec)
    keys = [*spec.rows, *spec.cols]
    done = students[students["status"] == "complete"]
    parts = [done.groupby(keys, dropna=False)[list(COLUMNS)].mean().reset_index()]
    context = [k for k in keys if k != "method"]  # never empty: a table has column axes
    teachers = frame[(frame["kind"] == TEACHER) & (frame["status"] == "complete")]
    links = students[["teacher", *context]].drop_duplicates()
    linked = links.merge(teachers[["id", *COLUMNS]], left_on="teacher", right_on="id")
    if not linked.empty:
        teacher_means = linked.groupby(context, dropna=False)[list(COLUMNS)].mean()
        parts.append(teacher_means.reset_index().assign(method=TEACHER))
    return pd.concat(parts, ignore_index=True)


def _placed(spec: TableSpec) -> TableSpec:
    """``spec`` with ``budget`` among its column axes (so runs may differ in it)."""
    return spec if "budget" in spec.rows + spec.cols else replace(spec, cols=(*spec.cols, "budget"))


def budgets(frame: pd.DataFrame, spec: TableSpec) -> list[str]:
    """The budget labels of the selected student runs, steps budgets first."""
    labels = budget_labels(select_students(frame, _placed(spec)))
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
    costs = means(frame, spec).groupby("method")[["tflops", "device_hours"]].mean()
    out = pd.DataFrame(
        {m: {"mean": np.mean(v["mean"]), "rank": np.mean(v["rank"])} for m, v in methods.items()}
    ).T
    return out.join(costs, how="left")


def cost_points(frame: pd.DataFrame, spec: TableSpec, metric: str) -> pd.DataFrame:
    """Columns ``method``, ``budget``, ``device_hours``, ``metric``: the mean over seeds of every
    (method, budget, column) of the selected complete student runs (the cost plot's points)."""
    students = select_students(frame, _placed(spec))
    done = students[students["status"] == "complete"]
    keys = ["method", "budget", *[c for c in spec.cols if c != "budget"]]
    return done.groupby(keys, dropna=False)[["device_hours", metric]].mean().reset_index()
