"""Reporting: run records -> DataFrame -> statistics -> tables (LaTeX, Markdown, CSV) and plots.

The public entry point for your own analysis is :func:`load_results`::

    from kdbench.report import load_results
    df = load_results("results")            # one row per run
    df[df.status == "complete"].groupby(["dataset", "student", "method"]).miou.agg(["mean", "std"])

A one-way pipeline of four layers, each a subpackage that imports only from the layers
below it (and within itself, without cycles; ``tests/report/test_layers.py`` checks it):

1. :mod:`~kdbench.report.records`: run records -> one DataFrame (``frame``, ``cache``);
2. :mod:`~kdbench.report.cells`: cells and statistics as plain data (``stats``, ``tables``,
   ``summary``, ``cost``, ``trace``, ``bayes``, ``iqm``);
3. :mod:`~kdbench.report.words`: words and numbers, what a cell, a row label and a caption
   say, and the small summary tables (``text``, ``summaries``);
4. :mod:`~kdbench.report.render`: LaTeX, Markdown, HTML, CSV and plots (``latex``,
   ``markdown``, ``html``, ``tidy``, ``plots``, ``svg``), one format of a table (``formats``),
   the two-format report body (``document``), the HTML page set (``site``) and the
   ``kdbench report`` folder (``report``).

Entry points on top of the pipeline, free to import any layer: this package's own functions
(:func:`load_results`, :func:`summary_table`) and :mod:`~kdbench.report.commands` (the
``kdbench table`` and ``kdbench report`` subcommands).

This package imports nothing heavy at import time, so ``kdbench --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kdbench.errors import KdbenchError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_results", "summary_table"]


def load_results(path: str | Path) -> pd.DataFrame:
    """The run records under the results folder ``path`` as a DataFrame, one row per run.

    Columns: ``id``, ``suite``, ``kind`` ("teacher" | "student" | "trial"), ``status``
    ("complete" | "failed" | "running"), ``dataset``, ``student``, ``method``, ``budget`` (its
    label), ``seed`` (Int64), ``teacher`` (the teacher's run id, None for teachers), ``miou``,
    ``mfsc``, ``pixel_acc`` (percent, NaN unless complete), ``best.step``, ``best.miou``,
    ``best.mfsc``, ``best.pixel_acc`` (the best periodic evaluation, NaN without one), one
    ``iou.<class>`` column per class, ``wall_time_s``, ``step_time_s``, ``peak_memory_mb``,
    ``extra_params``, ``student_params``, the cost columns
    (``gflops_per_step``, ``teacher_gflops``, ``student_gflops``, ``loss_gflops``, ``steps``,
    ``tflops``, ``step_s_median``, ``device_hours``), ``tuned`` (a tuned run's chosen options)
    and ``error`` (failed runs). ``kind`` "trial" rows are tuning trials.

    Loading keeps a cache of these rows in ``<path>/.kdbench-report-cache.json`` and parses
    again only the records that changed (see :mod:`kdbench.report.records.cache`); delete it at
    will.
    Raises :class:`kdbench.errors.KdbenchError` if ``path`` holds no run record.
    """
    from kdbench.report.records.cache import load_frame

    return load_frame(path)


def summary_table(path: str | Path, run_ids: Iterable[str], suite: str | None = None) -> str:
    """The Markdown mIoU table of the runs ``run_ids`` under ``path`` (``kdbench run``'s summary),
    named runs of ``suite`` when given (runs it shares with another suite included).

    Rows method, columns data set / student (/ budget, when the runs have several), as
    ``kdbench table``. When there is nothing to
    tabulate yet (no complete student run, say) it says so in one line instead of raising: the
    runs themselves went through.
    """
    from kdbench.report.cells.tables import TableSpec, build_tables
    from kdbench.report.records.frame import of_suite
    from kdbench.report.render.formats import render

    try:
        frame = of_suite(load_results(path), run_ids, suite)
        several = frame.loc[frame["kind"] == "student", "budget"].nunique() > 1
        spec = TableSpec(cols=("dataset", "student", "budget")) if several else TableSpec()
        return render(build_tables(frame, spec), "markdown")
    except KdbenchError as exc:
        return f"(no results table: {exc})"
