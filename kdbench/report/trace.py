"""Where every number of a table comes from: the runs behind each cell and how to redo them.

``kdbench table --trace`` lists, per cell (row key, column key), every run it aggregates
(student cells: one per seed; teacher cells: the teachers its students distilled from) with
the run's status and the command that trains it again from its record
(:func:`kdbench.reproduce.command`). In CSV the tidy lines gain ``runs`` (``seed:id`` joined by
``;``, teacher cells ``teacher:id``) and ``commands`` (joined by ``;``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.report.frame import BASELINE, TEACHER
from kdbench.report.tables import TableSpec, select_students
from kdbench.report.text import SimpleTable
from kdbench.reproduce import command


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


def trace_table(frame: pd.DataFrame, spec: TableSpec, results: str | Path) -> SimpleTable:
    """The runs of every cell with the command that reproduces each."""
    lines = runs(frame, spec)
    header = [*spec.rows, *spec.cols, "seed", "run", "status", "reproduce with"]
    rows = [
        [*(str(r[k]) for k in (*spec.rows, *spec.cols, "seed", "id", "status")),
         command(results, r["id"])]
        for r in lines.to_dict("records")
    ]
    caption = ("Every run behind every cell (teacher rows: the teacher runs the column's "
               "students distilled from); the command trains the run again from its record "
               "into another folder and compares its metrics with the recorded ones.")
    return SimpleTable("Runs behind each cell", header, rows, caption)


def add_trace_columns(
    csv_text: str, frame: pd.DataFrame, spec: TableSpec, results: str | Path
) -> str:
    """A tidy CSV with ``runs`` and ``commands`` columns on every line."""
    tidy = pd.read_csv(io.StringIO(csv_text), dtype=str, keep_default_na=False)
    keys = [*spec.rows, *spec.cols]

    def joined(group: pd.DataFrame) -> pd.Series:
        records: list[dict[str, Any]] = group.to_dict("records")
        return pd.Series({
            "runs": ";".join(f"{r['seed']}:{r['id']}" for r in records),
            "commands": ";".join(command(results, r["id"]) for r in records),
        })

    lines = runs(frame, spec).astype({k: str for k in keys})
    cells = lines.groupby(keys, sort=False)[["seed", "id"]].apply(joined).reset_index()
    return tidy.merge(cells, on=keys, how="left").to_csv(index=False)
