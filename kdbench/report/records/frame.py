"""Run records -> one pandas DataFrame, one row per run.

Columns (see :mod:`kdbench.results.store` for the record schema they come from):

- identity: ``id``, ``suite``, ``kind`` ("teacher" | "student" | "trial"; every kind of run
  that leaves a teacher model, an imported teacher's included, is "teacher":
  :func:`kdbench.config.is_teacher`), ``status`` ("complete" | "failed" | "running");
- grid axes: ``dataset``, ``student``, ``method``, ``budget`` (its label, e.g. "300 steps" or
  "2e+12 FLOPs"), ``seed`` (int), ``teacher`` (run id or None);
- metrics of complete runs (percent, NaN otherwise): ``miou``, ``mfsc``, ``pixel_acc`` and one
  ``iou.<class>`` column per class seen in any record (NaN where a record's data set lacks the
  class or the class never occurs in its evaluation split);
- cost: ``wall_time_s``, ``step_time_s``, ``peak_memory_mb``, ``extra_params``,
  ``student_params``, and from the record's ``cost``: ``gflops_per_step`` (teacher forward,
  student forward and backward, distillation loss), ``teacher_gflops``, ``student_gflops``,
  ``loss_gflops`` (its parts), ``steps``, ``tflops`` (all steps), ``step_s_median``,
  ``device_hours`` (NaN for records without a cost);
- best checkpoint (runs with periodic evaluation): ``best.step``, ``best.miou``, ``best.mfsc``,
  ``best.pixel_acc`` from the record's ``best_val`` (NaN when the run has none), and
  one ``best.iou.<class>`` column per class from its ``per_class_iou`` (NaN where absent);
- ``tuned``: the options a tuned run chose (``kd: tau=2.0, weight=1.1``), else None;
- ``error``: the one-line error of a failed run (the reason, for a corrupt record), else None;
- provenance: ``code`` (hash of the run's method sources), ``recipe`` (hash of its resolved
  data set, model, method options, training recipe and evaluation protocol: single- and
  multi-scale runs differ), so that a table can footnote a cell that mixes runs of different
  code or recipes.

A record file that cannot be read is a row with ``status == "corrupt"`` (see
:func:`corrupt_row`); tables leave such rows out and say so in a footnote.

Class columns keep the order in which classes first appear in the records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.config import is_teacher
from kdbench.errors import KdbenchError
from kdbench.results.store import RunStore

AXES = ("suite", "dataset", "student", "method", "budget")
"""Axes a table can put in its rows or columns (the seed is what cells aggregate over)."""
TEACHER = "teacher"
"""The method label of teacher records."""
BASELINE = "none"
"""The method label of the student baseline (cross-entropy only)."""
IOU_PREFIX = "iou."
SCALAR_METRICS = ("miou", "mfsc", "pixel_acc")
BEST_PREFIX = "best."
BEST = tuple(BEST_PREFIX + k for k in ("step", *SCALAR_METRICS))
"""The columns of the best periodic evaluation (the record's ``best_val``)."""
TIMING = ("wall_time_s", "step_time_s", "peak_memory_mb")
PARAMS = ("extra_params", "student_params")
COST = (
    "gflops_per_step",
    "teacher_gflops",
    "student_gflops",
    "loss_gflops",
    "steps",
    "tflops",
    "step_s_median",
    "device_hours",
)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every run record under the results folder ``path`` (``path/runs/*/record.json``).

    Raises :class:`KdbenchError` if the folder does not exist or holds no record.
    """
    root = Path(path)
    if not root.is_dir():
        raise KdbenchError(f"results folder {str(root)!r} does not exist")
    records = list(RunStore(root))
    if not records:
        raise KdbenchError(f"no run records in {str(root)!r} (expected runs/<id>/record.json)")
    return records


def _number(value: Any) -> float:
    """``value`` as a float; None and non-numbers become NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


ROW_VERSION = 8
"""Version of :func:`row`'s output; bump it when ``row`` changes (it keys the row cache)."""


def row(record: Mapping[str, Any]) -> dict[str, Any]:
    """The flat DataFrame row of one record (class IoUs keyed ``iou.<class>``)."""
    axes = record.get("axes") or {}
    metrics = record.get("metrics") or {}
    timing = record.get("timing") or {}
    seed = axes.get("seed")
    out: dict[str, Any] = {
        "id": record["id"],
        "suite": record.get("suite"),
        "kind": TEACHER if is_teacher(record.get("kind")) else record.get("kind"),
        "status": record.get("status", "failed"),
        "dataset": axes.get("dataset"),
        "student": axes.get("student"),
        "method": axes.get("method"),
        "budget": axes.get("budget"),
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        "teacher": axes.get("teacher"),
    }
    for name in SCALAR_METRICS:
        out[name] = _number(metrics.get(name))
    best = record.get("best_val") or {}
    for name in BEST:
        out[name] = _number(best.get(name[len(BEST_PREFIX):]))
    for cls, value in (metrics.get("per_class_iou") or {}).items():
        out[IOU_PREFIX + str(cls)] = _number(value)
    for cls, value in (best.get("per_class_iou") or {}).items():
        out[BEST_PREFIX + IOU_PREFIX + str(cls)] = _number(value)
    for name in TIMING:
        out[name] = _number(timing.get(name))
    for name in PARAMS:
        out[name] = _number(record.get(name))
    out.update(_cost(record.get("cost") or {}))
    out["tuned"] = _tuned(record.get("tuning"))
    out["error"] = record.get("error")
    config = record.get("config") or {}
    out["code"] = config.get("code")
    out["recipe"] = recipe_hash(config)
    return out


RECIPE_KEYS = ("dataset", "dataset_options", "model", "method_terms", "train", "eval")
"""The parts of a run's config that make its recipe (seed, suite, teacher id excluded)."""


def recipe_hash(config: Mapping[str, Any]) -> str:
    """Eight hex digits over the recipe keys of a stored config."""
    import hashlib
    import json

    from kdbench.config import TRAIN_NOT_IDENTITY

    recipe = {k: config.get(k) for k in RECIPE_KEYS}
    if isinstance(recipe["train"], dict):  # keys that cannot change a result
        recipe["train"] = {
            k: v for k, v in recipe["train"].items() if k not in TRAIN_NOT_IDENTITY
        }
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def corrupt_row(run_id: str, reason: str) -> dict[str, Any]:
    """The row of a record file that cannot be read: its run folder name and the reason."""
    return {"id": run_id, "status": "corrupt", "error": reason}


def _tuned(tuning: Mapping[str, Any] | None) -> str | None:
    """The chosen options of a tuned run as one line, None for a run without tuning."""
    if not tuning:
        return None
    return "; ".join(
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
        for name, options in tuning.get("chosen") or ()
    )


def _cost(cost: Mapping[str, Any]) -> dict[str, float]:
    """The :data:`COST` columns of a record's ``cost`` (FLOPs in units of 1e9 and 1e12)."""
    parts = cost.get("flops_per_step") or {}
    giga = {k: _number(parts.get(k)) / 1e9 for k in ("total", "teacher_forward", "student", "loss")}
    return {
        "gflops_per_step": giga["total"],
        "teacher_gflops": giga["teacher_forward"],
        "student_gflops": giga["student"],
        "loss_gflops": giga["loss"],
        "steps": _number(cost.get("steps")),
        "tflops": _number(cost.get("flops")) / 1e12,
        "step_s_median": _number(cost.get("step_s_median")),
        "device_hours": _number(cost.get("device_hours")),
    }


def records_to_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record, with the columns listed in the module docstring."""
    return rows_to_frame([row(r) for r in records])


def of_suite(frame: pd.DataFrame, run_ids: Iterable[str], suite: str | None) -> pd.DataFrame:
    """The rows of the runs ``run_ids``, with ``suite`` (when given) as their suite.

    A run's id hashes its resolved recipe, not the name of the suite that lists it, so every
    suite of a results folder that resolves to a complete run reuses it, and its record names
    the suite that trained it first. Selected as one suite's runs, they are that suite's runs:
    without the relabelling a suite sharing its teachers and baseline with another (the LIX
    ablations with the quickstart) would tabulate as two suites."""
    selected = frame[frame["id"].isin(set(run_ids))]
    return selected if suite is None else selected.assign(suite=suite)


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The DataFrame of :func:`row` outputs, columns in the documented order."""
    return _ordered(pd.DataFrame.from_records(rows))


def columns_to_frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """The DataFrame of :func:`row` outputs given column by column, in the documented order."""
    return _ordered(pd.DataFrame(columns))


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the documented columns in order (missing ones added empty)."""
    fixed = ["id", "suite", "kind", "status", *AXES[1:], "seed", "teacher"]
    fixed += list(SCALAR_METRICS) + list(BEST)
    classes = [c for c in frame.columns if c.startswith(IOU_PREFIX)]
    classes += [c for c in frame.columns if c.startswith(BEST_PREFIX + IOU_PREFIX)]
    cost = list(TIMING) + list(PARAMS) + list(COST)
    frame = frame.reindex(columns=fixed + classes + cost + ["tuned", "error", "code", "recipe"])
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def class_columns(frame: pd.DataFrame) -> list[str]:
    """The ``iou.<class>`` columns of ``frame``, in order."""
    return [c for c in frame.columns if c.startswith(IOU_PREFIX)]


STAT_PREFIX = "stat."
"""Column prefix of a method's logged statistics in :func:`histories` (e.g. DWLD's weights)."""


def histories(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The training-loss curves of the records: one row per logged step.

    Columns: ``id``, ``kind``, ``suite``, ``dataset``, ``student``, ``method``, ``seed``,
    ``step``, ``loss`` (the total training loss logged at that step), then one
    ``stat.<name>`` column per statistic a method logged (``entry["statistics"]``, e.g.
    ``stat.w_t_spearman`` of DWLD; NaN where a run has none). Evaluation entries of the
    history (``{"step", "eval"}``) are skipped.
    """
    rows = []
    for record in records:
        axes = record.get("axes") or {}
        for entry in record.get("history") or ():
            if "loss" not in entry or "step" not in entry:
                continue
            stats = entry.get("statistics") or {}
            rows.append(
                {
                    "id": record["id"],
                    "kind": record.get("kind"),
                    "suite": record.get("suite"),
                    "dataset": axes.get("dataset"),
                    "student": axes.get("student"),
                    "method": axes.get("method"),
                    "seed": axes.get("seed"),
                    "step": int(entry["step"]),
                    "loss": _number(entry["loss"]),
                    **{STAT_PREFIX + k: _number(v) for k, v in stats.items()},
                }
            )
    columns = ["id", "kind", "suite", "dataset", "student", "method", "seed", "step", "loss"]
    extra = sorted({k for r in rows for k in r} - set(columns))
    return pd.DataFrame(rows, columns=columns + extra)
