"""Training budgets: how many steps a run trains, decided before its first step.

A resolved budget (``spec.train["budget"]``, set by :func:`kdbench.config.expand`) is one of

- ``{"steps": N}``: N steps (the default, ``train.steps``);
- ``{"flops": F}``: as many steps as F FLOPs pay for, teacher forward and distillation loss
  included: ``steps = max(1, floor(F / c))`` with c the FLOPs of one step counted on the run's
  first batch (:func:`kdbench.train.cost.count_step_flops`). Deterministic: a re-run counts the
  same c and trains the same steps;
- ``{"seconds": S}``: ``steps = max(1, floor(S / t))`` with t the median time of a few
  calibration steps measured once; t and the step count are written to
  ``<results>/budgets/<run id>.json`` before training, and every later session or re-run of
  the same spec in that folder reads them back instead of measuring again, so a rerun
  reproduces the run;
- ``{"match": {"budget": B, "rows": [[label, terms], ...]}}`` (the compute-matched baseline):
  the FLOPs the most expensive of ``rows`` spends under B, given to the student alone, which
  then trains ``floor(max_m F_m / c)`` steps, c its own cost per step. Under a steps budget N,
  F_m = N·c_m with c_m row m's FLOPs per step counted on the same first batch; under a FLOPs or
  seconds budget every row spends the same F or S, and so does the baseline.

The learning-rate schedule runs over the resolved step count, so at every step it follows the
fraction of the budget spent (FLOPs or time per step being constant).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.config import budget_label
from kdbench.errors import KdbenchError
from kdbench.results.store import write_json_atomic

MATCH = "match"
CALIBRATION_STEPS = 8
"""Steps timed to calibrate a seconds budget (the first :func:`~kdbench.train.cost.warmup_steps`
of them skipped)."""


@dataclass(frozen=True)
class Resolved:
    """A budget turned into a step count, and how."""

    steps: int
    detail: dict[str, Any]

    def to_dict(self, budget: Mapping[str, Any]) -> dict[str, Any]:
        label = budget_label(budget)
        return {"budget": dict(budget), "label": label, "steps": self.steps, **self.detail}


def steps_for(
    budget: Mapping[str, Any],
    flops_per_step: int,
    calibrate: Callable[[], float],
    calibration_file: Path,
    rows_flops: Callable[[Sequence[Any]], list[int]] | None = None,
) -> Resolved:
    """The step count of a run under ``budget``.

    ``flops_per_step``: the run's counted FLOPs per step; ``calibrate()``: measures seconds per
    step (called only for a seconds budget without a calibration file); ``rows_flops(terms
    list)``: FLOPs per step of other method rows on the same data (for ``match``).
    """
    kind, amount = next(iter(budget.items()))
    if kind == "steps":
        return Resolved(int(amount), {})
    if kind == "flops":
        return Resolved(_afford(amount, flops_per_step), {"flops_per_step": flops_per_step})
    if kind == "seconds":
        return _seconds(float(amount), calibrate, calibration_file)
    if kind != MATCH:
        raise KdbenchError(f"train.budget: unknown budget {dict(budget)!r}")
    base_kind, base_amount = next(iter(amount["budget"].items()))
    if base_kind == "seconds":  # every row spends S seconds: so does the baseline
        return _seconds(float(base_amount), calibrate, calibration_file)
    if base_kind == "flops":
        return Resolved(_afford(base_amount, flops_per_step), {"flops_per_step": flops_per_step})
    rows = amount["rows"]
    if rows_flops is None:
        raise KdbenchError("train.budget: a matched budget needs the other rows' FLOPs")
    per_step = rows_flops([terms for _, terms in rows])
    flops, costliest = max(
        (base_amount * c, row) for (row, _), c in zip(rows, per_step, strict=True)
    )
    return Resolved(
        _afford(flops, flops_per_step),
        {"matched_to": costliest, "flops": flops, "flops_per_step": flops_per_step},
    )


def _afford(flops: float, per_step: int) -> int:
    return max(1, math.floor(flops / max(1, per_step)))


def _seconds(seconds: float, calibrate: Callable[[], float], path: Path) -> Resolved:
    """A seconds budget: read the run's calibration, or measure and write it once."""
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if saved["seconds"] == seconds:
                return Resolved(int(saved["steps"]), {"step_s_calibrated": saved["step_s"]})
        except (ValueError, KeyError, TypeError):
            raise KdbenchError(f"{path}: unreadable budget calibration; delete it") from None
    step_s = calibrate()
    steps = max(1, math.floor(seconds / step_s))
    write_json_atomic(
        path, {"seconds": seconds, "step_s": step_s, "steps": steps, "measured": time.time()}
    )
    return Resolved(steps, {"step_s_calibrated": step_s})
