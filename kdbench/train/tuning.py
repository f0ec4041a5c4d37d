"""The tuned options of a run: the best of its tuning trials, scored on the held-out part.

A student run of a suite with ``tune:`` names its row's trials in ``train.tune.trials``
(:func:`kdbench.config.expand`). Every trial trained on the training split minus the held-out
part and was evaluated on that part (``train.holdout``, :mod:`kdbench.data.holdout`); the run
takes the method options of the trial with the highest held-out mIoU (the earliest trial on a
tie) and records the choice and every trial's score. Every method of a suite gets the same
number of trials, so the same tuning budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kdbench.config import RunSpec
from kdbench.errors import KdbenchError
from kdbench.results.store import RunStore


def choose(spec: RunSpec, store: RunStore) -> tuple[RunSpec, dict[str, Any] | None]:
    """``spec`` with its row's tuned method options, and what the choice was made from (None
    for a run without tuning)."""
    tune = spec.train.get("tune")
    if not tune:
        return spec, None
    trials = []
    for trial_id in tune["trials"]:
        record = store.load(trial_id)
        if record is None or record.get("status") != "complete":
            state = "missing" if record is None else record.get("status")
            raise KdbenchError(
                f"tuning trial {trial_id} of {spec.method} is {state}; run the suite again "
                "once its trials are complete"
            )
        terms = [[name, dict(options)] for name, options in record["config"]["method_terms"]]
        trials.append({"id": trial_id, "terms": terms, "miou": record["metrics"]["miou"]})
    best = max(trials, key=lambda t: (t["miou"] if t["miou"] is not None else -1.0))
    chosen = tuple((name, options) for name, options in best["terms"])
    summary = {"chosen": best["terms"], "chosen_trial": best["id"], "trials": trials}
    return dataclasses.replace(spec, method_terms=chosen), summary
