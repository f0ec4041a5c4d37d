"""The ``kdbench table`` and ``kdbench report`` subcommands (an entry point on top of the report
pipeline, with the package's :func:`~kdbench.report.load_results`: see :mod:`kdbench.report`).

Only argparse is imported at module level (``kdbench --help`` must stay fast); pandas, scipy
and matplotlib are imported when a command runs. Mistakes a user can make (no records, an
unknown metric, axis, format, test or malformed option) raise
:class:`~kdbench.errors.KdbenchError`, which the CLI prints as one line (exit 2).

Per-class IoU: ``--metric per_class`` makes one table per column key (e.g. per data set and
student) whose columns are the classes; ``--metric iou.<class>`` puts one class in the usual
layout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError

_METRIC_HELP = (
    "miou | mfsc | pixel_acc | per_class (one table per column key, classes as columns) | "
    "iou.<class> | wall_time_s | step_time_s | peak_memory_mb | extra_params | gflops_per_step | "
    "tflops | step_s_median | device_hours (default: miou)"
)


def _axes(text: str) -> tuple[str, ...]:
    """``"dataset,student"`` -> ("dataset", "student")."""
    return tuple(a.strip() for a in text.split(",") if a.strip())


def _where(items: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``["method=kd,cwd"]`` -> (("method", ("kd", "cwd")),)."""
    out = []
    for item in items:
        axis, sep, values = item.partition("=")
        if not sep or not axis.strip() or not values.strip():
            raise KdbenchError(f"--where {item!r}: expected AXIS=VALUE[,VALUE...]")
        out.append((axis.strip(), _axes(values)))
    return tuple(out)


def _add_layout(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``table`` and ``report``: layout, selection, cells and tests."""
    parser.add_argument("results", metavar="RESULTS", help="results folder (holds runs/)")
    parser.add_argument("--suite", type=Path, metavar="FILE",
                        help="only the runs of this suite file (as it is now): records of "
                        "older recipes or code in the folder are left out")
    parser.add_argument("--rows", default="method",
                        help="row axes, comma-separated, must include method (default: method)")
    parser.add_argument("--cols", default="dataset,student",
                        help="column axes among suite, dataset, student (default: dataset,student)")
    parser.add_argument("--where", action="append", default=[], metavar="AXIS=V1[,V2]",
                        help="keep student runs whose AXIS (suite, dataset, student, method, "
                        "seed) is one of the values; repeatable; the baseline is always kept")
    parser.add_argument("--cell", default="std", metavar="std|ci|bootstrap|mean",
                        help="cell format: mean ± sample std (default), mean with a 95%% t "
                        "interval (ci), mean with a 95%% percentile bootstrap interval (seeded; "
                        "only for cells of >= 20 seeds), or the mean alone")
    parser.add_argument("--resamples", type=int, default=10_000,
                        help="bootstrap resamples for --cell bootstrap (default: 10000, seed 0)")
    parser.add_argument("--test", default="ttest", metavar="ttest|wilcoxon|bayes",
                        help="paired test against the baseline, Holm-corrected per column "
                        "(default: ttest); bayes: no cell marks, a table of P(worse), "
                        "P(equivalent), P(better) per method follows (Bayesian signed-rank "
                        "test across columns, Bayesian paired t-test over seeds within one)")
    parser.add_argument("--rope", type=float, metavar="R",
                        help="with --test bayes: half-width of the region of practical "
                        "equivalence, in the metric's units (e.g. 0.5 mIoU points)")
    parser.add_argument("--aggregate", metavar="iqm",
                        help="iqm: add the interquartile mean over columns x seeds with 95%% "
                        "stratified-bootstrap intervals and the probability of improvement "
                        "over the baseline (Agarwal et al. 2021)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of the tests and of the CD (default: 0.05)")
    parser.add_argument("--decimals", type=int, default=1, help="decimals shown (default: 1)")
    parser.add_argument("--checkpoint", default="final", metavar="final|best",
                        help="the metrics of the final model (default) or of each run's best "
                        "evaluation by mIoU (periodic ones and the final one; runs without "
                        "periodic evaluation keep the final value, with a footnote)")


def add_commands(subparsers: Any) -> None:
    """Add ``table`` and ``report`` to an argparse subparsers object (each sets ``func``)."""
    table = subparsers.add_parser(
        "table",
        help="aggregate run records into a table (Markdown, LaTeX or CSV)",
        description="One cell per (row, column): mean over seeds with spread and seed count, "
        "teacher and student baseline as reference rows, Δ to the baseline, best bold and "
        "second underlined, significance marks; failed or missing runs are shown, never "
        "averaged away.",
    )
    _add_layout(table)
    table.add_argument("--metric", default="miou", help=_METRIC_HELP)
    table.add_argument("--format", default="markdown", metavar="markdown|latex|csv|html",
                       help="output format (default: markdown; csv is one tidy line per cell; "
                       "html a fragment of sortable tables)")
    table.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    table.add_argument("--gap", action="store_true",
                       help="add the share of the teacher − baseline gap each method closes (%%)")
    table.add_argument("--delta", action=argparse.BooleanOptionalAction, default=None,
                       help="show the Δ-to-baseline column (default: on, off for per_class)")
    table.add_argument("--ranks", action="store_true",
                       help="add average ranks with the Friedman test and Nemenyi CD")
    table.add_argument("--power", type=float, metavar="DELTA",
                       help="add the seeds each column needs to detect DELTA with 80%% power")
    table.add_argument("--cost", action="store_true",
                       help="add what the runs cost: steps, GFLOPs per step, TFLOPs, s/step, "
                       "device-hours (a cost table after the table; columns in CSV)")
    table.add_argument("--trace", action="store_true",
                       help="add the runs behind every cell and the command that reproduces "
                       "each (a table after the table; columns in CSV)")
    table.set_defaults(func=run_table)

    report = subparsers.add_parser(
        "report",
        help="write every table, plot and a Markdown summary into a folder",
        description="Tables per metric (Markdown, LaTeX, CSV) with ranks and seeds needed, "
        "critical-difference diagrams, per-class IoU tables and bars, training curves and "
        "report.md embedding them.",
    )
    _add_layout(report)
    report.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    report.add_argument("--metrics", default="miou,mfsc,pixel_acc",
                        help="metrics of the main tables (default: miou,mfsc,pixel_acc)")
    report.add_argument("--power", type=float, default=1.0, metavar="DELTA",
                        help="difference the seeds-needed tables plan for (default: 1.0)")
    report.add_argument("--no-figure", action="store_true",
                        help="skip the qualitative figures (drawn by default from the runs' "
                        "saved weights: 4 images per data set and student)")
    report.set_defaults(func=run_report)


def _spec(args: argparse.Namespace, **fields: Any) -> Any:
    """The :class:`~kdbench.report.cells.tables.TableSpec` of the parsed options."""
    from kdbench.report.cells.tables import TableSpec

    if args.power is not None and args.power <= 0:
        raise KdbenchError(f"--power {args.power}: expected a difference > 0")
    return TableSpec(
        rows=_axes(args.rows),
        cols=_axes(args.cols),
        cell=args.cell,
        test=args.test,
        alpha=args.alpha,
        decimals=args.decimals,
        resamples=args.resamples,
        where=_where(args.where),
        rope=args.rope,
        aggregate=args.aggregate,
        checkpoint=args.checkpoint,
        **fields,
    )


def suite_runs(suite: Path | None) -> tuple[set[str] | None, str | None]:
    """The run ids and the name of ``suite`` ((None, None) without one): ``--suite`` keeps only
    these runs, as runs of that suite (:func:`~kdbench.report.records.frame.of_suite`)."""
    if suite is None:
        return None, None
    from kdbench.suite_cache import load_suite_cached

    loaded = load_suite_cached(suite)
    return {spec.id for spec in loaded.runs}, loaded.name


def run_table(args: argparse.Namespace) -> int:
    """``kdbench table``: print or write the table; returns the exit code."""
    from kdbench.report import load_results
    from kdbench.report.cells.tables import build_tables
    from kdbench.report.records.frame import of_suite
    from kdbench.report.render.formats import render, with_cost, with_trace

    spec = _spec(args, metric=args.metric, gap=args.gap, delta=args.delta)
    frame = load_results(args.results)
    run_ids, suite = suite_runs(args.suite)
    if run_ids is not None:
        frame = of_suite(frame, run_ids, suite)
        if frame.empty:
            raise KdbenchError(f"{args.results}: no record of a run of {args.suite}")
    tables = build_tables(frame, spec)
    text = render(tables, args.format, args.ranks, args.power)
    if args.cost:
        text = with_cost(text, frame, spec, args.format)
    if args.trace:
        text = with_trace(text, frame, spec, args.format, args.results)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``kdbench report``: write the report folder; returns the exit code."""
    from kdbench.report.render.report import ReportOptions, write_report

    metrics = _axes(args.metrics)
    if not metrics:
        raise KdbenchError("--metrics must name at least one metric")
    options = ReportOptions(metrics=metrics, table=_spec(args, gap=True), power_delta=args.power,
                            figure=not args.no_figure)
    path = write_report(args.results, args.out, options, *suite_runs(args.suite))
    print(f"wrote {path}")
    return 0
