"""Aggregate performance over tasks (Agarwal, Schwarzer, Castro, Courville and Bellemare, "Deep
reinforcement learning at the edge of the statistical precipice", NeurIPS 2021).

A *task* is one column (and context row) of a table; its *runs* are the seeds of the method's
cell there. Scores are the metric in its own units (no normalisation: every column of a table
reports the same metric, e.g. mIoU in percent).

- Interquartile mean: the mean of the middle half of the N scores pooled over all tasks and
  seeds, IQM(x) = mean(x_(k+1), …, x_(N−k)) with x_(i) sorted and k = ⌊N/4⌋ (scipy's
  ``trim_mean(x, 0.25)``, as the authors' rliable library).
- Stratified bootstrap: a resample draws, within each task m separately, n_m runs with
  replacement from its n_m runs, then pools them; the 95% interval is the 2.5 and 97.5
  percentiles of the statistic over B resamples (numpy ``default_rng(seed)``).
- Probability of improvement of X over Y: P(X > Y) = (1/M) Σ_m (1/(n_m k_m)) Σ_i Σ_j S(x_mi,
  y_mj), S(x, y) = 1 if x > y, ½ if x = y, 0 otherwise (better = lower for a lower-is-better
  metric), over the M tasks where both have runs; its interval resamples X and Y
  independently, stratified by task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdbench.report.cells.stats import BOOTSTRAP_SEED
from kdbench.report.cells.tables import Table
from kdbench.report.records.frame import BASELINE

LEVEL = 0.95


def iqm(scores: np.ndarray) -> np.ndarray:
    """The interquartile mean along the last axis: shape (..., N) -> (...)."""
    n = scores.shape[-1]
    k = n // 4
    return np.sort(scores, axis=-1)[..., k : n - k].mean(axis=-1)


def resample(tasks: list[np.ndarray], rng: np.random.Generator, b: int) -> list[np.ndarray]:
    """``b`` stratified resamples: per task of n_m runs, an array (b, n_m) drawn from its runs."""
    return [t[rng.integers(0, t.size, size=(b, t.size))] for t in tasks]


def improvement(x: list[np.ndarray], y: list[np.ndarray]) -> np.ndarray:
    """P(X > Y) averaged over tasks; each task's runs along the last axis: (..., n_m) and
    (..., k_m) -> (...)."""
    per_task = []
    for xm, ym in zip(x, y, strict=True):
        diff = xm[..., :, None] - ym[..., None, :]
        per_task.append(((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1)))
    return np.mean(per_task, axis=0)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap ``samples`` (shape (B,))."""
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Aggregate:
    """One method's IQM with its interval, and its probability of improvement over the baseline
    with its interval (None for the baseline, or without a task in common)."""

    method: str
    runs: int
    tasks: int
    iqm: float
    iqm_ci: tuple[float, float]
    poi: float | None
    poi_ci: tuple[float, float] | None


def aggregate(method: str, tasks: list[np.ndarray], base: list[np.ndarray] | None,
              resamples: int, seed: int = BOOTSTRAP_SEED) -> Aggregate:
    """The :class:`Aggregate` of one method from its tasks' scores (and, paired by task, the
    baseline's; scores oriented so that higher is better)."""
    rng = np.random.default_rng(seed)
    pooled = np.concatenate(tasks)
    boot = iqm(np.concatenate(resample(tasks, rng, resamples), axis=1))
    score = float(iqm(pooled))
    if not base or not any(b.size for b in base):
        return Aggregate(method, pooled.size, len(tasks), score, interval(boot), None, None)
    mine = [t for t, b in zip(tasks, base, strict=True) if b.size]
    theirs = [b for b in base if b.size]
    poi = float(improvement(mine, theirs))
    boot_poi = improvement(resample(mine, rng, resamples), resample(theirs, rng, resamples))
    return Aggregate(method, pooled.size, len(tasks), score, interval(boot), poi,
                     interval(boot_poi))


def aggregates(table: Table) -> list[Aggregate]:
    """One :class:`Aggregate` per student row method of ``table`` (baseline first), over the
    tasks where the method has values. IQM and its interval are in the metric's units; the
    probability of improvement counts lower as better for a lower-is-better metric."""
    sign = 1.0 if table.higher_is_better else -1.0
    out = []
    pairs = table.against_baseline()
    for method in sorted(pairs, key=lambda m: (m != BASELINE, m)):
        cells = [(c, b) for c, b in pairs[method] if c.n]
        if not cells:
            continue
        tasks = [sign * np.fromiter(c.values.values(), np.float64) for c, _ in cells]
        base = None if method == BASELINE else [
            sign * np.fromiter(b.values.values(), np.float64) for _, b in cells]
        a = aggregate(method, tasks, base, table.spec.resamples)
        lo, hi = (sign * a.iqm_ci[0], sign * a.iqm_ci[1])
        out.append(Aggregate(a.method, a.runs, a.tasks, sign * a.iqm,
                             (min(lo, hi), max(lo, hi)), a.poi, a.poi_ci))
    return out
