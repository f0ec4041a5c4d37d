"""The small tables beside a main table, as :class:`~kdbench.report.words.text.SimpleTable`.

Average ranks and seeds needed (:mod:`kdbench.report.cells.summary`), the Bayesian
comparison with the baseline (:mod:`kdbench.report.cells.bayes`), the interquartile mean
(:mod:`kdbench.report.cells.iqm`), the cost of every cell and
the rankings under each budget (:mod:`kdbench.report.cells.cost`), and the runs behind every
cell with the command that reproduces each (:mod:`kdbench.report.cells.trace`): the numbers
come from the cells layer, this module says them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kdbench.report.cells import bayes, cost, iqm, trace
from kdbench.report.cells.stats import BOOTSTRAP_SEED
from kdbench.report.cells.summary import TARGET_POWER, PowerRow, Ranks
from kdbench.report.cells.tables import Table, TableSpec, budget_labels, select_students
from kdbench.report.records.frame import BASELINE, TEACHER
from kdbench.report.words.text import SimpleTable, budget_sentence, number
from kdbench.reproduce import command

NO_RANKS = "Average ranks need at least two methods and two columns with every method's value."
COST_HEADERS: dict[str, tuple[str, int]] = {
    "steps": ("steps", 0),
    "gflops_per_step": ("GFLOPs/step", 2),
    "tflops": ("TFLOPs", 3),
    "step_s_median": ("s/step", 3),
    "device_hours": ("device-h", 4),
}
"""Cost column (:data:`kdbench.report.cells.cost.COLUMNS`) -> (header, decimals)."""


def ranks_table(table: Table, r: Ranks) -> SimpleTable:
    """Average ranks as a summary table; the caption gives Friedman, CD and dropped blocks."""
    order = np.argsort(r.average, kind="stable")
    rows = [[r.methods[i], f"{r.average[i]:.2f}"] for i in order]
    caption = (
        f"{table.metric_label}: ranks within each of {len(r.blocks)} columns (1 = best). "
        f"Friedman χ²({len(r.methods) - 1}) = {r.chi2:.2f}, p = {r.p:.3g}; "
        f"Nemenyi critical difference at α = {r.alpha:g}: {r.cd:.2f}."
    )
    if r.dropped:
        caption += f" Left out for missing values: {', '.join(r.dropped)}."
    return SimpleTable(f"Average ranks ({table.metric_label})", ["method", "average rank"], rows,
                       caption)


def power_table(table: Table, rows: list[PowerRow], delta: float,
                target: float = TARGET_POWER) -> SimpleTable:
    """Seeds needed per context as a summary table."""
    body = [
        [
            p.context,
            number(p.sd, 2),
            str(p.dof),
            str(p.seeds),
            number(p.power_now, 2),
            "–" if p.needed is None else str(p.needed),
        ]
        for p in rows
    ]
    caption = (
        f"Seeds a paired t-test (α = {table.spec.alpha:g}) needs to detect Δ = {delta:g} with "
        f"power {target:g}, from the sd of paired differences to the baseline pooled over the "
        "methods of each column (– when fewer than two paired seeds)."
    )
    header = ["column", "sd of differences", "df", "seeds now", "power now", "seeds needed"]
    return SimpleTable(f"Seeds needed for Δ = {delta:g} ({table.metric_label})", header, body,
                       caption)


def _order(method: str) -> tuple[int, str]:
    return ({TEACHER: 0, BASELINE: 1}.get(method, 2), method)


def cost_table(frame: pd.DataFrame, spec: TableSpec) -> SimpleTable:
    """The cost table of ``spec``'s layout: one row per row key, the cost columns per column."""
    table = cost.means(frame, spec)
    col_keys = sorted({tuple(k) for k in table[list(spec.cols)].itertuples(index=False)}, key=str)
    row_keys = sorted(
        {tuple(k) for k in table[list(spec.rows)].itertuples(index=False)},
        key=lambda k: (_order(str(k[spec.rows.index("method")])), tuple(map(str, k))),
    )
    header = [*spec.rows]
    for key in col_keys:
        prefix = " / ".join(map(str, key))
        header += [f"{prefix}: {COST_HEADERS[c][0]}" if prefix else COST_HEADERS[c][0]
                   for c in cost.COLUMNS]
    indexed = table.set_index([*spec.rows, *spec.cols])
    rows = []
    for row in row_keys:
        cells = [str(v) for v in row]
        for key in col_keys:
            found = indexed.index.isin([(*row, *key)])
            values = indexed[found].iloc[0] if found.any() else None
            for name in cost.COLUMNS:
                value = math.nan if values is None else float(values[name])
                cells.append(number(value, COST_HEADERS[name][1]))
        rows.append(cells)
    caption = (
        "Mean over the complete runs (seeds) of each cell: steps trained; FLOPs per training "
        "step (teacher forward + student forward/backward + distillation loss "
        "forward/backward, counted with torch.utils.flop_counter on the run's first batch; "
        "matrix products and convolutions only); FLOPs of all steps; median seconds per step "
        "after warm-up; device-hours of the whole run. Teacher: the one-off cost of the column's "
        "teacher runs. " + budget_sentence(budget_labels(select_students(frame, spec)), spec)
    )
    return SimpleTable("Cost per run", header, rows, caption.strip())


def rankings_table(frame: pd.DataFrame, spec: TableSpec, label: str) -> SimpleTable:
    """Each budget's ranking side by side (``label``: the metric's name, e.g. "mIoU (%)"): per
    budget, each method's mean metric, its average rank and its mean cost."""
    labels = cost.budgets(frame, spec)
    per_budget = {b: cost.ranking(frame, cost.for_budget(spec, b)) for b in labels}
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


def trace_table(frame: pd.DataFrame, spec: TableSpec, results: str | Path) -> SimpleTable:
    """The runs of every cell with the command that reproduces each."""
    lines = trace.runs(frame, spec)
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


TEST_WORDS = {"signed-rank": "signed-rank over {n} columns", "paired-t": "paired t over {n} seeds"}


def bayes_table(table: Table, rows: list[bayes.Comparison]) -> SimpleTable:
    """Each method against the baseline: the test used and P(worse), P(equivalent), P(better)."""
    rope = table.spec.rope or 0.0
    body = []
    for c in rows:
        test = TEST_WORDS[c.test].format(n=c.n) if c.test else "too few values to test"
        probs = ["–"] * 3 if c.probs is None else [f"{p:.3f}" for p in c.probs]
        body.append([c.method, test, number(c.mean, table.spec.decimals, signed=True), *probs])
    better = "higher" if table.higher_is_better else "lower"
    caption = (
        f"{table.metric_label}: each method against the baseline, with a region of practical "
        f"equivalence of ±{rope:g}. Across columns (two or more): the Bayesian signed-rank test "
        f"(Benavoli et al., JMLR 2017; Dirichlet prior strength {bayes.PRIOR_STRENGTH:g} on a "
        f"pseudo-difference of 0, {bayes.SAMPLES} posterior samples, seed {bayes.SEED}) on the "
        "per-column differences of means; within one column: the Bayesian correlated t-test "
        "with correlation 0 (seeds are independent runs), i.e. the Bayesian paired t-test on "
        f"the seed differences, posterior Student t with n − 1 df. Mean Δ: mean difference "
        f"tested ({better} is better, positive = better)."
    )
    header = ["method", "test", "mean Δ", "P(worse)", "P(equivalent)", "P(better)"]
    return SimpleTable(f"Bayesian comparison with the baseline ({table.metric_label})", header,
                       body, caption)


def iqm_table(table: Table, rows: list[iqm.Aggregate]) -> SimpleTable:
    """Each method's interquartile mean and probability of improvement, with their intervals."""
    d = table.spec.decimals
    body = []
    for a in rows:
        poi = ["–", "–"] if a.poi is None or a.poi_ci is None else [
            f"{a.poi:.2f}", f"[{a.poi_ci[0]:.2f}, {a.poi_ci[1]:.2f}]"]
        ci = f"[{number(a.iqm_ci[0], d)}, {number(a.iqm_ci[1], d)}]"
        body.append([a.method, str(a.tasks), str(a.runs), number(a.iqm, d), ci, *poi])
    caption = (
        f"{table.metric_label} pooled over the columns × seeds of each method: interquartile "
        "mean (the mean of the middle 50% of the runs) and the probability that a run of the "
        "method beats a run of the baseline on the same column, averaged over columns (Agarwal "
        "et al., NeurIPS 2021); 95% stratified-bootstrap intervals (runs resampled within each "
        f"column, {table.spec.resamples} resamples, seed {BOOTSTRAP_SEED}). Scores are not "
        "normalised across columns, so an IQM pooled over fewer columns than another's (see "
        "columns) is not comparable with it; the probability of improvement is, column by column."
    )
    header = ["method", "columns", "runs", "IQM", "IQM 95% CI", "P(improvement)",
              "P 95% CI"]
    return SimpleTable(f"Interquartile mean ({table.metric_label})", header, body, caption)
