"""CSV output: the tables in tidy (long) form, one line per cell, numbers unformatted.

Columns: ``table`` (title of a per-class table, else empty), the row axes, the column axes
(``class`` for per-class tables), ``metric``, ``role`` (teacher | baseline | method), ``n``,
``expected``, ``failed``, ``running``, ``missing``, ``mean``, ``std``, ``ci_low``, ``ci_high``,
``delta``, ``gap_pct``, ``p_value``, ``p_holm``, ``mark`` (+1 significantly better than the
baseline, −1 worse, 0 neither), ``place`` (1 best, 2 second, 0 other), ``note`` (why runs are
missing from the mean). With ranks: ``average_rank`` per method; with a power figure:
``power_delta`` and ``seeds_needed`` per column. ``kdbench table --cost`` appends the cost
columns of :mod:`kdbench.report.cells.cost` to every line; ``--trace`` appends ``runs``
(``seed:id`` joined by ``;``, teacher cells ``teacher:id``) and ``commands`` (the commands that
reproduce them, joined by ``;``).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.report.cells import cost, trace
from kdbench.report.cells.summary import PowerRow, Ranks
from kdbench.report.cells.tables import Table, TableSpec
from kdbench.reproduce import command


def _nan(x: float | None) -> float:
    """None as NaN (an empty CSV field)."""
    return math.nan if x is None else x


def frame(
    table: Table,
    ranks: Ranks | None = None,
    power: tuple[float, list[PowerRow]] | None = None,
    with_ranks: bool = False,
) -> pd.DataFrame:
    """One row per cell of ``table`` (columns in the module docstring).

    ``with_ranks`` adds the ``average_rank`` column, empty when ``ranks`` is None (too few
    complete columns to rank).
    """
    average = dict(zip(ranks.methods, ranks.average, strict=True)) if ranks else {}
    needed = {p.key: p.needed for p in power[1]} if power else {}
    rows: list[dict[str, Any]] = []
    for (ri, ci), cell in sorted(table.cells.items()):
        row_key, column = table.rows[ri], table.columns[ci]
        line: dict[str, Any] = {"table": table.title or ""}
        line.update(zip(table.row_axes, row_key, strict=True))
        line.update(column.match)
        if table.col_axes == ("class",):
            line["class"] = column.key[0]
        ci_low, ci_high = cell.ci if cell.ci else (math.nan, math.nan)
        line.update(
            metric=column.value,
            role=cell.role,
            n=cell.n,
            expected=cell.expected,
            failed=cell.failed,
            running=cell.running,
            missing=cell.missing,
            mean=cell.mean,
            std=cell.std,
            ci_low=ci_low,
            ci_high=ci_high,
            delta=_nan(cell.delta),
            gap_pct=_nan(cell.gap),
            p_value=cell.p,
            p_holm=cell.p_holm,
            mark=cell.mark,
            place=cell.place,
            note="; ".join(cell.problems),
        )
        if with_ranks:
            line["average_rank"] = average.get(table.method(row_key), math.nan)
        if power:
            line["power_delta"] = power[0]
            line["seeds_needed"] = needed.get((*table.context_row(row_key), *column.key))
        rows.append(line)
    return pd.DataFrame(rows)


def concat(frames: list[pd.DataFrame]) -> str:
    """The CSV text of several :func:`frame` results (columns united, missing ones empty)."""
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def add_cost_columns(csv_text: str, frame: pd.DataFrame, spec: TableSpec) -> str:
    """A tidy CSV with the cost columns appended to every line."""
    tidy = pd.read_csv(io.StringIO(csv_text), dtype=str, keep_default_na=False)
    means = cost.means(frame, spec).astype({k: str for k in (*spec.rows, *spec.cols)})
    merged = tidy.merge(means, on=[*spec.rows, *spec.cols], how="left")
    return merged.to_csv(index=False)


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

    lines = trace.runs(frame, spec).astype({k: str for k in keys})
    cells = lines.groupby(keys, sort=False)[["seed", "id"]].apply(joined).reset_index()
    return tidy.merge(cells, on=keys, how="left").to_csv(index=False)
