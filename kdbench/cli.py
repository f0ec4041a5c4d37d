"""The ``kdbench`` command: run | status | list | reproduce | table | report.

Exit codes: 0 success, 1 a run failed, 2 bad input (printed as one line, no traceback).
Only argparse is imported at start-up so that ``kdbench --help`` answers at once; each command
imports what it needs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kdbench.errors import KdbenchError

if TYPE_CHECKING:
    from kdbench.config import Suite
    from kdbench.launch.base import Executor

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _results_dir(args: argparse.Namespace, suite_name: str) -> Path:
    return Path(args.results) if args.results else Path("results") / suite_name


def cmd_run(args: argparse.Namespace) -> int:
    from kdbench.config import load_suite
    from kdbench.results.store import RunStore

    suite = load_suite(args.suite, args.set)
    results = _results_dir(args, suite.name)
    store = RunStore(results)
    pending = [[s for s in wave if store.status(s.id) != "complete"] for wave in suite.waves]
    n_pending = sum(map(len, pending))
    print(
        f"suite {suite.name}: {len(suite.runs)} runs ({len(suite.teachers)} teachers, "
        f"{len(suite.students)} students), {len(suite.runs) - n_pending} complete, "
        f"{n_pending} to run; results in {results}",
        file=sys.stderr,
    )
    if args.dry_run:
        for wave in pending:
            for spec in wave:
                print(f"{spec.id}  {spec.describe()}")
        return EXIT_OK
    if n_pending:
        executor = _executor(args, suite, results)
        from kdbench.train.run import train_run

        # with tuning trials, the final runs start once every trial is done (on SLURM too)
        passes = [pending] if len(pending) == 2 else [pending[:2], [[], *pending[2:]]]
        records = [r for part in passes for r in executor.run(part, results, train_run)]
        failed = [r for r in records if r["status"] != "complete"]
    else:
        failed = []
    _print_summary(results, suite)
    for record in failed:
        print(f"run {record['id']} failed: {record.get('error', '?')}", file=sys.stderr)
    return EXIT_RUN_FAILED if failed else EXIT_OK


def _executor(args: argparse.Namespace, suite: Suite, results: Path) -> Executor:
    """The executor named by ``--executor``, else by the suite's ``launch.executor``."""
    options = dict(suite.settings["launch"] or {})
    kind = args.executor or options.get("executor", "local")
    options.pop("executor", None)
    if kind == "slurm":
        from kdbench.launch.slurm import from_options

        return from_options(options, results / "slurm")
    from kdbench.launch.local import LocalExecutor

    return LocalExecutor()


def _print_summary(results: Path, suite: Suite) -> None:
    from kdbench.report import summary_table

    print(summary_table(results, [s.id for s in suite.runs]))


def cmd_status(args: argparse.Namespace) -> int:
    from kdbench.config import load_suite
    from kdbench.results.store import RunStore

    suite = load_suite(args.suite, args.set)
    store = RunStore(_results_dir(args, suite.name))
    counts: dict[str, int] = {}
    for spec in suite.runs:
        record = store.load(spec.id)
        state = "missing" if record is None else record.get("status", "failed")
        counts[state] = counts.get(state, 0) + 1
        detail = ""
        if state == "complete":
            detail = f"mIoU {record['metrics']['miou']:.2f}"  # type: ignore[index]
        elif state == "failed":
            detail = record.get("error", "")  # type: ignore[union-attr]
        print(f"{spec.id}  {state:8s}  {spec.describe()}  {detail}")
    print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())), file=sys.stderr)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from kdbench.registry import DATASETS, METHODS, TEACHERS

    if args.what == "methods":
        from kdbench.method import method_options

        for entry in METHODS:
            options = ", ".join(f"{k}={v!r}" for k, v in method_options(entry.obj).items())
            print(f"{entry.name:8s} {entry.description}")
            if options:
                print(f"{'':8s}   options: {options}")
    elif args.what == "datasets":
        for entry in DATASETS:
            print(f"{entry.name:12s} {entry.description}")
    elif args.what == "teachers":
        for entry in TEACHERS:
            print(f"{entry.name:14s} {entry.description}")
    else:
        from kdbench.models.backbone import describe_backbones

        for name, description in describe_backbones():
            print(f"{name:24s} {description}")
        print(
            "Any other timm model name works too (`python -c 'import timm; "
            "print(timm.list_models())'`); weights load only from a local file."
        )
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    from kdbench.reproduce import reproduce

    out = Path(args.out) if args.out else Path(args.results) / "reproduced"
    failed = False
    for recorded, again in reproduce(args.results, args.run_id, out):
        same = recorded.get("metrics") == again.get("metrics")
        failed |= again["status"] != "complete"
        miou = (again.get("metrics") or {}).get("miou")
        print(f"{again['id']}  {again['status']}  mIoU {miou}  "
              f"{'same metrics as recorded' if same else 'metrics differ from the record'}")
    print(f"reproduced into {out}", file=sys.stderr)
    return EXIT_RUN_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdbench",
        description="Benchmark knowledge-distillation methods for semantic segmentation.",
    )
    from kdbench import __version__

    parser.add_argument("--version", action="version", version=f"kdbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def suite_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("suite", help="suite YAML file, e.g. suites/quickstart.yaml")
        p.add_argument("--results", help="results folder (default: results/<suite name>)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY.PATH=VALUE",
            help="override a suite key (value parsed as YAML); repeatable",
        )
        return p

    run = suite_command("run", "train and evaluate the runs of a suite that are not complete")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the suite and list the runs it would launch",
    )
    run.add_argument(
        "--executor",
        choices=("local", "slurm"),
        help="where runs train (default: the suite's launch.executor, else local)",
    )
    run.set_defaults(func=cmd_run)
    suite_command("status", "list every run of a suite and its state").set_defaults(func=cmd_status)
    lst = sub.add_parser("list", help="list registered methods, backbones, datasets or teachers")
    lst.add_argument("what", choices=("methods", "backbones", "datasets", "teachers"))
    lst.set_defaults(func=cmd_list)
    rep = sub.add_parser("reproduce", help="train a recorded run again from its record alone",
                         description="Rebuild a run (and its teacher if it needs one) from "
                         "the config in its record, train it into another folder and compare "
                         "the metrics with the recorded ones.")
    rep.add_argument("results", help="results folder holding the run's record")
    rep.add_argument("run_id", help="the run id (12 hex digits; see kdbench table --trace)")
    rep.add_argument("--out", help="output folder (default: RESULTS/reproduced)")
    rep.set_defaults(func=cmd_reproduce)
    from kdbench.report.commands import add_commands

    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KdbenchError as exc:
        print(f"kdbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("kdbench: interrupted; finished runs are kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
