"""Bayesian comparisons of each method with the baseline, with a region of practical
equivalence (ROPE) of half-width r (Benavoli, Corani, Demšar and Zaffalon, "Time for a change:
a tutorial for comparing multiple classifiers through Bayesian analysis", JMLR 18, 2017).

Differences are oriented so that a positive difference is better for the method (method −
baseline for a higher-is-better metric, baseline − method otherwise). Each comparison gives
(P(worse), P(equivalent), P(better)) = the posterior probabilities of the difference lying
left of −r, inside [−r, r], right of r.

- Across columns: the **Bayesian signed-rank test** (Benavoli et al. 2014; 2017, §5.2) on the
  q per-column differences of means z_1..z_q. Its Dirichlet-process posterior puts weights
  w ~ Dirichlet(s, 1, …, 1) on (z_0 = 0, z_1, …, z_q), prior strength s = 0.5 on the pseudo
  observation z_0; for each draw

      θ_left = Σ_i Σ_j w_i w_j H(−z_i − z_j − 2r),  θ_right = Σ_i Σ_j w_i w_j H(z_i + z_j − 2r),
      θ_rope = 1 − θ_left − θ_right,

  with H(a) = 1 for a > 0, ½ for a = 0, 0 otherwise (i, j over 0..q, i = j included). The
  probabilities are the shares of draws in which θ_left, θ_rope or θ_right is the largest
  (as baycomp's ``SignedRankTest``).
- Within one column: the **Bayesian correlated t-test** (Corani and Benavoli 2015; 2017, §4)
  on the n paired seed differences d_1..d_n. With a flat prior the posterior of the mean
  difference is Student t with n − 1 degrees of freedom, location mean(d) and scale
  sqrt(s_d² · (1/n + ρ/(1 − ρ))), s_d the sample std, ρ the correlation between the
  differences. Seeds are independent training runs evaluated on the same split (the pairing
  takes out the split), so tables use ρ = 0: the Bayesian paired t-test. (baycomp's
  ``CorrelatedTTest`` with ``runs=1`` is the cross-validation case ρ = 1/n.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from kdbench.report.cells.tables import Table
from kdbench.report.records.frame import BASELINE

PRIOR_STRENGTH = 0.5
SAMPLES = 50_000
SEED = 0


def _heaviside(a: np.ndarray) -> np.ndarray:
    """1 where a > 0, ½ where a = 0, 0 elsewhere."""
    return (a > 0).astype(np.float64) + 0.5 * (a == 0)


def signed_rank(diffs: Sequence[float], rope: float, samples: int = SAMPLES,
                seed: int = SEED, prior: float = PRIOR_STRENGTH) -> tuple[float, float, float]:
    """(P(worse), P(equivalent), P(better)) of the Bayesian signed-rank test on ``diffs``.

    ``diffs``: shape (q,), q ≥ 1 per-column differences (positive = better); ``rope`` ≥ 0; the
    Dirichlet draws come from ``numpy.random.default_rng(seed)``.
    """
    z = np.concatenate([[0.0], np.asarray(diffs, dtype=np.float64)])
    sums = z[:, None] + z[None, :]                             # (q+1, q+1)
    right, left = _heaviside(sums - 2 * rope), _heaviside(-sums - 2 * rope)
    weights = np.ones_like(z)
    weights[0] = prior
    w = np.random.default_rng(seed).dirichlet(weights, samples)  # (samples, q+1)
    theta = np.empty((samples, 3))
    theta[:, 0] = ((w @ left) * w).sum(axis=1)                # wᵀ H_left w per draw
    theta[:, 2] = ((w @ right) * w).sum(axis=1)
    theta[:, 1] = 1.0 - theta[:, 0] - theta[:, 2]
    winners = np.bincount(np.argmax(theta, axis=1), minlength=3) / samples
    return float(winners[0]), float(winners[1]), float(winners[2])


def correlated_t(diffs: Sequence[float], rope: float,
                 rho: float = 0.0) -> tuple[float, float, float]:
    """(P(worse), P(equivalent), P(better)) of the Bayesian correlated t-test on ``diffs``.

    ``diffs``: shape (n,), n ≥ 2 paired differences (positive = better); ``rho`` in [0, 1).
    A zero sample std puts all the mass on mean(d).
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = d.size
    if n < 2:
        raise ValueError(f"the correlated t-test needs at least 2 differences, got {n}")
    mean = float(d.mean())
    scale = math.sqrt(float(d.var(ddof=1)) * (1.0 / n + rho / (1.0 - rho)))
    if scale == 0.0:
        left, right = float(mean < -rope), float(mean > rope)
    else:
        left = float(stats.t.cdf(-rope, n - 1, mean, scale))
        right = float(stats.t.sf(rope, n - 1, mean, scale))
    return left, 1.0 - left - right, right


@dataclass(frozen=True)
class Comparison:
    """One method against the baseline: which test, on how many values, and its probabilities.

    ``test``: "signed-rank" (over ``n`` columns), "paired-t" (over ``n`` seeds of the one
    column) or "" when there is too little to test (fewer than 2 columns and 2 paired seeds).
    ``mean``: the mean of the differences tested (positive = better).
    """

    method: str
    test: str
    n: int
    mean: float
    probs: tuple[float, float, float] | None


def compare(method: str, column_diffs: list[float], seed_diffs: list[np.ndarray],
            rope: float) -> Comparison:
    """The comparison of ``method``: signed-rank over its columns when it has two or more,
    else the paired t-test over the seeds of its one column (``seed_diffs[0]``)."""
    if len(column_diffs) >= 2:
        return Comparison(method, "signed-rank", len(column_diffs), float(np.mean(column_diffs)),
                          signed_rank(column_diffs, rope))
    if len(column_diffs) == 1 and seed_diffs and seed_diffs[0].size >= 2:
        d = seed_diffs[0]
        return Comparison(method, "paired-t", d.size, float(d.mean()), correlated_t(d, rope))
    return Comparison(method, "", len(column_diffs), math.nan, None)


def comparisons(table: Table, rope: float) -> list[Comparison]:
    """One :class:`Comparison` per method of ``table`` (baseline and teacher excluded), on the
    columns (and context rows) where both the method and the baseline have values."""
    sign = 1.0 if table.higher_is_better else -1.0
    out = []
    for method, pairs in table.against_baseline().items():
        if method == BASELINE:
            continue
        both = [(cell, base) for cell, base in pairs if cell.n and base.n]
        column_diffs = [sign * (cell.mean - base.mean) for cell, base in both]
        seed_diffs = [sign * cell.diffs for cell, _ in both if cell.diffs is not None]
        out.append(compare(method, column_diffs, seed_diffs, rope))
    return out
