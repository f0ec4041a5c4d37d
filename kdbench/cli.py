"""The ``kdbench`` command: run | status | list | reproduce | table | report.

Exit codes: 0 success, 1 a run failed, 2 bad input (printed as one line, no traceback).
Only argparse is imported at start-up so that ``kdbench --help`` answers at once; each command
imports what it needs.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdbench.errors import KdbenchError

if TYPE_CHECKING:
    from kdbench.config import Suite
    from kdbench.launch.base import Executor
    from kdbench.results.store import RunStore

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _results_dir(args: argparse.Namespace, suite_name: str) -> Path:
    return Path(args.results) if args.results else Path("results") / suite_name


def cmd_run(args: argparse.Namespace) -> int:
    from kdbench.results.store import RunStore
    from kdbench.suite_cache import load_suite_cached

    suite = load_suite_cached(args.suite, args.set)
    results = _results_dir(args, suite.name)
    store = RunStore(results)
    pending = [spec for spec in suite.runs if store.status(spec.id) != "complete"]
    if not args.dry_run and pending:
        from kdbench.results.files import check_writable

        check_writable(results)
    kinds = Counter(spec.kind for spec in suite.runs)
    print(
        f"suite {suite.name}: {len(suite.runs)} runs "
        f"({', '.join(f'{n} {kind}s' for kind, n in kinds.items())}), "
        f"{len(suite.runs) - len(pending)} complete, {len(pending)} to run; results in {results}",
        file=sys.stderr,
    )
    executor = _executor(args, suite, results) if pending else None
    slurm = False
    if executor is not None:
        from kdbench.launch.slurm import SlurmExecutor

        slurm = isinstance(executor, SlurmExecutor)
    if args.detach and executor is not None and not slurm:
        raise KdbenchError("--detach: only with the slurm executor (--executor slurm)")
    if args.dry_run:
        from kdbench.config import is_teacher
        from kdbench.method import terms_text

        for spec in pending:  # a student's row with its methods and their non-default options
            row = "" if is_teacher(spec.kind) else f"  = {terms_text(spec.method_terms)}"
            print(f"{spec.id}  {spec.describe()}{row}")
        if slurm:  # the sbatch flags of every array and dependency
            print(executor.describe(executor.plan(pending, results)))  # type: ignore[union-attr]
        return EXIT_OK
    failed: list[dict] = []
    if executor is not None:
        from kdbench.train.run import train_run

        if args.detach:
            print(executor.detach(pending, results, train_run))  # type: ignore[union-attr]
            return EXIT_OK
        records = executor.run(pending, results, train_run)
        failed = [r for r in records if r["status"] != "complete"]
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

        options.pop("jobs", None)  # the local executor's option
        return from_options(options, results / "slurm")
    from kdbench.launch.workers import WorkerExecutor
    from kdbench.resources import STAGES, check_jobs, processes

    per_run = {stage: processes(options, stage) for stage in STAGES}
    if options.get("nodes", 1) > 1:
        raise KdbenchError("launch.nodes: a local executor trains on this machine; expected 1")
    jobs = check_jobs(args.jobs if args.jobs is not None else options.get("jobs", 1), "--jobs")
    if jobs > 1:
        if max(per_run.values()) > 1:
            raise KdbenchError(
                f"--jobs {jobs}: each worker trains a run in one process, but launch asks for "
                f"{max(per_run.values())} processes per run (tasks_per_node); expected --jobs 1 "
                "(the run's processes then share this machine) or --executor slurm"
            )
        return WorkerExecutor(jobs)
    from kdbench.launch.local import LocalExecutor

    return LocalExecutor(processes=per_run)


def _print_summary(results: Path, suite: Suite) -> None:
    from kdbench.report import summary_table

    print(summary_table(results, [s.id for s in suite.runs], suite.name))


SLURM_STATES = ("pending", "running", "requeued", "failed")
"""States that SLURM's view of a submitted run overrides the run folder's own state with."""


def cmd_status(args: argparse.Namespace) -> int:
    from kdbench.launch.slurm_state import run_states
    from kdbench.results.store import RunStore
    from kdbench.suite_cache import load_suite_cached

    suite = load_suite_cached(args.suite, args.set)
    results = _results_dir(args, suite.name)
    store = RunStore(results)
    records = {spec.id: store.inspect(spec.id)[0] for spec in suite.runs}
    jobs = run_states(results / "slurm", records)  # SLURM's view of submitted runs
    counts: dict[str, int] = {}
    for spec in suite.runs:
        state, detail = run_state(store, spec.id)
        job = jobs[spec.id]
        if job.job and state not in ("complete", "corrupt") and job.state in SLURM_STATES:
            state, detail = job.state, job.detail
        if job.job:
            detail += f"  [job {job.job}, log {job.log}]"
        counts[state] = counts.get(state, 0) + 1
        print(f"{spec.id}  {state:11s}  {spec.describe()}  {detail}".rstrip())
    in_suite = {spec.id for spec in suite.runs}
    for run_id, record, problem in store.scan():
        if run_id not in in_suite:
            counts["stale"] = counts.get("stale", 0) + 1
            what = problem or _describe_record(record)
            print(f"{run_id}  {'stale':11s}  not in this suite: {what}")
    print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())), file=sys.stderr)
    return EXIT_OK


def run_state(store: RunStore, run_id: str) -> tuple[str, str]:
    """A run's state for ``kdbench status`` and a detail: the mIoU, the error, the lease holder
    or why the record is corrupt."""
    from kdbench.results.lease import describe, read_lease

    state = store.status(run_id)
    record, problem = store.inspect(run_id)
    if state == "corrupt":
        return state, str(problem)
    if state == "complete":
        return state, f"mIoU {record['metrics']['miou']:.2f}"  # type: ignore[index]
    if state == "failed":
        return state, str((record or {}).get("error", ""))
    if state == "running":
        return state, f"held by {describe(read_lease(store.run_dir(run_id)) or {})}"
    if state == "interrupted":
        return state, "no live process holds it; `kdbench run` resumes it"
    return state, ""


def _describe_record(record: dict | None) -> str:
    axes = (record or {}).get("axes") or {}
    return (
        f"{(record or {}).get('status')} {(record or {}).get('kind')} {axes.get('dataset')}/"
        f"{axes.get('student')} {axes.get('method')} seed={axes.get('seed')}"
    )


def cmd_cancel(args: argparse.Namespace) -> int:
    from kdbench.launch.slurm_state import cancel
    from kdbench.suite_cache import load_suite_cached

    suite = load_suite_cached(args.suite, args.set)
    results = _results_dir(args, suite.name)
    jobs = cancel(results / "slurm", [spec.id for spec in suite.runs])
    print(f"cancelled {len(jobs)} SLURM job(s) of suite {suite.name}: {' '.join(jobs) or '-'}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from kdbench.registry import DATASETS, HEADS, METHODS, TEACHERS

    if args.what == "methods":
        for entry in METHODS:
            _print_entry(entry.name, entry.description, entry.obj.options())
            if entry.obj.stage is not None:
                stage = entry.obj.stage
                print(f"{'':14s}stage: a {stage.kind} run per teacher and "
                      f"{', '.join(stage.options)}, before the students")
    elif args.what == "datasets":
        from kdbench.options import signature_options

        for entry in DATASETS:
            options = signature_options(entry.obj)
            options.pop("split", None)
            _print_entry(entry.name, entry.description, options)
    elif args.what == "teachers":
        for entry in TEACHERS:
            print(f"{entry.name:14s} {entry.description}")
    elif args.what == "heads":
        from kdbench.models.heads import head_options

        for entry in HEADS:
            _print_entry(entry.name, entry.description, head_options(entry.name))
    else:
        from kdbench.models.backbone import describe_backbones

        for name, description in describe_backbones():
            print(f"{name:24s} {description}")
        print(
            "Any other timm model name works too (`python -c 'import timm; "
            "print(timm.list_models())'`); pretrained: true takes timm's default weights, "
            "pretrained: PATH a local file."
        )
    return EXIT_OK


def _print_entry(name: str, description: str, options: dict[str, Any]) -> None:
    """A registry entry and its options (type, constraints, default: :mod:`kdbench.options`)."""
    print(f"{name:12s} {description}")
    for option in options.values():
        print(f"{'':14s}{option.describe()}")


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


def cmd_export(args: argparse.Namespace) -> int:
    from kdbench.export import export_run

    out = export_run(args.results, args.run_id, args.out, onnx=not args.no_onnx)
    print(f"exported {args.run_id} to {out}")
    return EXIT_OK


def cmd_figure(args: argparse.Namespace) -> int:
    from kdbench.figure import make_figure
    from kdbench.results.store import RunStore

    records = None
    if args.suite:
        from kdbench.config import load_suite

        ids = {spec.id for spec in load_suite(args.suite).runs}
        records = [r for r in RunStore(args.results) if r.get("id") in ids]
    shown = make_figure(
        args.results, args.out, images=args.images, ids=args.ids, methods=args.methods,
        seed=args.seed, errors=args.errors, records=records, checkpoint_name=args.checkpoint,
    )
    print(f"wrote {args.out} (evaluation images {', '.join(map(str, shown))})")
    return EXIT_OK


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    """``export`` and ``figure``: what reads a run's saved weights."""
    exp = sub.add_parser("export", help="write a trained student's weights, config and ONNX graph",
                         description="Export a complete student run for deployment: "
                         "model.safetensors, config.json and model.onnx in --out "
                         "(load with kdbench.load_student(DIR)).")
    exp.add_argument("results", help="results folder holding the run's record")
    exp.add_argument("run_id", help="the student run's id (12 hex digits)")
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--no-onnx", action="store_true", help="skip the ONNX graph")
    exp.set_defaults(func=cmd_export)
    fig = sub.add_parser("figure", help="the qualitative figure: inputs, labels, predictions",
                         description="Rows are evaluation images; columns RGB, X, ground truth, "
                         "teacher, baseline and each method's prediction (one seed), in the "
                         "data set's palette. By default the images where the methods differ "
                         "most.")
    fig.add_argument("results", help="results folder")
    fig.add_argument("--out", required=True, help="output file, .png or .pdf")
    fig.add_argument("--suite", help="only the runs of this suite (its one data set and student)")
    pick = fig.add_mutually_exclusive_group()
    pick.add_argument("--images", type=int, default=4, metavar="K",
                      help="the K images where the methods disagree most (default 4)")
    pick.add_argument("--ids", type=int, nargs="+", metavar="I", help="evaluation image indices")
    fig.add_argument("--methods", nargs="+", help="method columns in order (default: all)")
    fig.add_argument("--seed", type=int, help="the seed shown (default: the first complete)")
    fig.add_argument("--errors", action="store_true", help="add a row of error maps per image")
    fig.add_argument("--checkpoint", default="final", metavar="final|best",
                     help="the final weights (default) or, for a run whose best periodic "
                     "evaluation beat its final one, the best evaluation's (model_best.pt)")
    fig.set_defaults(func=cmd_figure)


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
    run.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="local executor: train N runs at once, each pinned to its share of the CPUs "
        "(or one GPU) (default: the suite's launch.jobs, else 1 = in this process)",
    )
    run.add_argument(
        "--detach",
        action="store_true",
        help="slurm executor: submit, print the job ids and return (see `kdbench status`)",
    )
    run.set_defaults(func=cmd_run)
    suite_command("status", "list every run of a suite and its state").set_defaults(func=cmd_status)
    suite_command(
        "cancel", "cancel the SLURM jobs of a suite that are pending or running"
    ).set_defaults(func=cmd_cancel)
    lst = sub.add_parser(
        "list", help="list registered methods, backbones, datasets, teachers or heads"
    )
    lst.add_argument("what", choices=("methods", "backbones", "datasets", "teachers", "heads"))
    lst.set_defaults(func=cmd_list)
    rep = sub.add_parser("reproduce", help="train a recorded run again from its record alone",
                         description="Rebuild a run (and its teacher if it needs one) from "
                         "the config in its record, train it into another folder and compare "
                         "the metrics with the recorded ones.")
    rep.add_argument("results", help="results folder holding the run's record")
    rep.add_argument("run_id", help="the run id (12 hex digits; see kdbench table --trace)")
    rep.add_argument("--out", help="output folder (default: RESULTS/reproduced)")
    rep.set_defaults(func=cmd_reproduce)
    _add_model_commands(sub)
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
