"""What the runs behind a table cost: the cost table and the cost columns of ``--cost``.

Per (row, column) of a :class:`~kdbench.report.tables.TableSpec` layout, the mean over the
complete student runs (seeds) of

- ``gflops_per_step``: FLOPs of one training step in units of 1e9: teacher forward + student
  forward and backward + distillation loss forward and backward (its learnable parts
  included), counted with ``torch.utils.flop_counter`` on the run's first batch
  (:mod:`kdbench.train.cost`);
- ``steps`` trained and ``tflops`` spent (FLOPs of all steps, 1e12);
- ``step_s_median``: median wall seconds per step after warm-up;
- ``device_hours``: wall time of the whole run (training and evaluation) times its devices (1).

The teacher row is each column's teacher runs (a one-off cost shared by every method).
"""

from __future__ import annotations

import io
import math

import pandas as pd

from kdbench.report.frame import BASELINE, TEACHER
from kdbench.report.tables import TableSpec, budget_words, select_students
from kdbench.report.text import SimpleTable, number

COLUMNS: dict[str, tuple[str, int]] = {
    "steps": ("steps", 0),
    "gflops_per_step": ("GFLOPs/step", 2),
    "tflops": ("TFLOPs", 3),
    "step_s_median": ("s/step", 3),
    "device_hours": ("device-h", 4),
}
"""Cost column -> (header, decimals)."""


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


def _order(method: str) -> tuple[int, str]:
    return ({TEACHER: 0, BASELINE: 1}.get(method, 2), method)


def cost_table(frame: pd.DataFrame, spec: TableSpec) -> SimpleTable:
    """The cost table of ``spec``'s layout: one row per row key, the cost columns per column."""
    table = means(frame, spec)
    col_keys = sorted({tuple(k) for k in table[list(spec.cols)].itertuples(index=False)}, key=str)
    row_keys = sorted(
        {tuple(k) for k in table[list(spec.rows)].itertuples(index=False)},
        key=lambda k: (_order(str(k[spec.rows.index("method")])), tuple(map(str, k))),
    )
    header = [*spec.rows]
    for key in col_keys:
        prefix = " / ".join(map(str, key))
        header += [f"{prefix}: {label}" if prefix else label for label, _ in COLUMNS.values()]
    indexed = table.set_index([*spec.rows, *spec.cols])
    rows = []
    for row in row_keys:
        cells = [str(v) for v in row]
        for key in col_keys:
            found = indexed.index.isin([(*row, *key)])
            values = indexed[found].iloc[0] if found.any() else None
            for name, (_, decimals) in COLUMNS.items():
                value = math.nan if values is None else float(values[name])
                cells.append(number(value, decimals))
        rows.append(cells)
    caption = (
        "Mean over the complete runs (seeds) of each cell: steps trained; FLOPs per training "
        "step (teacher forward + student forward/backward + distillation loss "
        "forward/backward, counted with torch.utils.flop_counter on the run's first batch; "
        "matrix products and convolutions only); FLOPs of all steps; median seconds per step "
        "after warm-up; device-hours of the whole run. Teacher: the one-off cost of the column's "
        "teacher runs. " + budget_words(select_students(frame, spec), spec)
    )
    return SimpleTable("Cost per run", header, rows, caption.strip())


def add_cost_columns(csv_text: str, frame: pd.DataFrame, spec: TableSpec) -> str:
    """A tidy CSV (:mod:`kdbench.report.tidy`) with the cost columns appended to every line."""
    tidy = pd.read_csv(io.StringIO(csv_text), dtype=str, keep_default_na=False)
    cost = means(frame, spec).astype({k: str for k in (*spec.rows, *spec.cols)})
    merged = tidy.merge(cost, on=[*spec.rows, *spec.cols], how="left")
    return merged.to_csv(index=False)

