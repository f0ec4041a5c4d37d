"""Summaries across the cells of a table: average ranks with Friedman/Nemenyi, seeds needed.

- Ranks: every context of the table (a column, and the non-method row axes) is a block, every
  student method (baseline included, teacher excluded) a treatment, the cell mean the score.
  For a complete design, methods with a value in fewer than half the blocks are left out, then
  the blocks lacking a value of a remaining method (both listed in the caption). Methods
  are ranked within each block (1 = best), ranks averaged over blocks; the Friedman test asks
  whether the methods differ at all, the Nemenyi critical difference says which average ranks
  differ (see :mod:`kdbench.report.cells.stats`).
- Power: per context, the standard deviation of the paired differences (method − baseline over
  shared seeds) pooled over the methods; from it the number of seeds a paired t-test needs to
  detect a difference Δ with the target power at the table's α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdbench.report.cells import stats
from kdbench.report.cells.tables import Table
from kdbench.report.records.frame import BASELINE, TEACHER

TARGET_POWER = 0.8


@dataclass
class Ranks:
    """Average ranks of the methods over the complete blocks, with the tests on them."""

    methods: list[str]
    blocks: list[str]
    dropped: list[str]
    """Methods and blocks left out for missing values."""
    average: np.ndarray
    chi2: float
    p: float
    cd: float
    alpha: float


@dataclass
class PowerRow:
    """Seeds needed in one context: pooled sd of paired differences and the power figures."""

    context: str
    key: tuple[Any, ...]
    sd: float
    dof: int
    seeds: int
    power_now: float
    needed: int | None


def _contexts(table: Table) -> list[tuple[tuple[Any, ...], int, dict[str, int]]]:
    """(context row, column index, {method: row index}) for every context of the table."""
    rows: dict[tuple[Any, ...], dict[str, int]] = {}
    for ri, row in enumerate(table.rows):
        rows.setdefault(table.context_row(row), {})[table.method(row)] = ri
    return [(ctx, ci, members) for ci in range(len(table.columns)) for ctx, members in rows.items()]


def context_label(table: Table, context_row: tuple[Any, ...], ci: int) -> str:
    """A context named by its axis values, e.g. ``kitti / resnet18``."""
    return " / ".join(map(str, (*context_row, *table.columns[ci].key)))


def ranks(table: Table) -> Ranks | None:
    """Average ranks, Friedman and Nemenyi over the table; None with < 2 methods or blocks."""
    contexts = _contexts(table)
    methods = sorted({table.method(r) for r in table.rows} - {TEACHER},
                     key=lambda m: (m != BASELINE, m))
    labels = [context_label(table, ctx, ci) for ctx, ci, _ in contexts]
    scores = np.array([
        [table.cells[members[m], ci].mean if m in members else math.nan for m in methods]
        for _, ci, members in contexts
    ]).reshape(len(contexts), len(methods))
    present = np.isfinite(scores)
    kept = present.sum(axis=0) * 2 >= len(contexts)
    complete = present[:, kept].all(axis=1)
    dropped = [m for m, k in zip(methods, kept, strict=True) if not k]
    dropped += [b for b, c in zip(labels, complete, strict=True) if not c]
    methods = [m for m, k in zip(methods, kept, strict=True) if k]
    matrix = scores[complete][:, kept]
    if len(methods) < 2 or matrix.shape[0] < 2:
        return None
    blocks = [b for b, c in zip(labels, complete, strict=True) if c]
    average = stats.block_ranks(matrix, table.higher_is_better).mean(axis=0)
    chi2, p = stats.friedman(matrix, table.higher_is_better)
    cd = stats.nemenyi_cd(len(methods), len(blocks), table.spec.alpha)
    return Ranks(methods, blocks, dropped, average, chi2, p, cd, table.spec.alpha)


def cliques(average: Sequence[float], cd: float) -> list[tuple[int, int]]:
    """Groups of methods no two of which differ significantly: maximal runs of rank order.

    With the average ranks sorted ascending (r_0 <= r_1 <= ...), a group is a maximal run
    i..j (j > i) with r_j − r_i < cd; returned as (i, j) positions in that sorted order.
    """
    ranks_sorted = np.sort(np.asarray(average, dtype=np.float64))
    groups: list[tuple[int, int]] = []
    for i in range(len(ranks_sorted)):
        j = int(np.searchsorted(ranks_sorted, ranks_sorted[i] + cd, side="left")) - 1
        if j > i and (not groups or j > groups[-1][1]):
            groups.append((i, j))
    return groups


def power(table: Table, delta: float, target: float = TARGET_POWER) -> list[PowerRow]:
    """Per context: seeds needed to detect ``delta`` with power ``target`` (module docstring)."""
    out = []
    for ctx, ci, members in _contexts(table):
        diffs = [
            table.cells[ri, ci].diffs
            for m, ri in members.items()
            if m not in (TEACHER, BASELINE) and table.cells[ri, ci].diffs is not None
        ]
        sd, dof = stats.pooled_sd(diffs)
        seeds = table.cells[members[BASELINE], ci].expected
        known = dof > 0
        now = float(stats.paired_t_power(delta, sd, seeds, table.spec.alpha)) if (
            known and seeds >= 2) else math.nan
        needed = stats.seeds_needed(delta, sd, table.spec.alpha, target) if known else None
        out.append(PowerRow(context_label(table, ctx, ci), (*ctx, *table.columns[ci].key),
                            sd, dof, seeds, now, needed))
    return out
