"""Where every number of a table comes from: the runs behind each cell.

``kdbench table --trace`` lists, per cell (row key, column key), every run it aggregates
(student cells: one per seed; teacher cells: the teachers its students distilled from) with
the run's status (:func:`runs`), and the command that trains it again from its record
(:func:`kdbench.reproduce.command`).
"""

from __future__ import annotations

import pandas as pd

from kdbench.report.cells.tables import TableSpec, select_students
from kdbench.report.records.frame import BASELINE, TEACHER


def runs(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """One line per run behind a cell: the row and column axes, ``seed`` (teachers: the word
    "teacher"), ``id`` and ``status``; teachers once per column they serve."""
    students = select_students(frame, spec)
    keys = [*spec.rows, *spec.cols]
    lines = students[[*keys, "seed", "id", "status"]].copy()
    context = [k for k in keys if k != "method"]
    links = students[["teacher", *context]].dropna(subset=["teacher"]).drop_duplicates()
    teachers = frame.loc[frame["kind"] == TEACHER, ["id", "status"]]
    linked = links.merge(teachers, left_on="teacher", right_on="id", how="left")
    linked["id"] = linked["teacher"]
    linked["status"] = linked["status"].fillna("missing")
    linked = linked.assign(method=TEACHER, seed=TEACHER)[[*keys, "seed", "id", "status"]]
    out = pd.concat([linked, lines.astype({"seed": object})], ignore_index=True)
    role = out["method"].map({TEACHER: 0, BASELINE: 1}).fillna(2)
    order = out.assign(_role=role).sort_values(
        ["_role", *keys, "seed"], key=lambda c: c if c.name == "_role" else c.astype(str)
    )
    return order.drop(columns="_role")
