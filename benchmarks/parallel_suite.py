"""Wall time of a suite with the local executor: ``--jobs 1`` (in-process) against ``--jobs N``.

Each case runs ``kdbench run`` on the same suite into its own fresh results folder, with
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` removed so that ``--jobs 1`` uses every CPU of this
process and each of the N workers its pinned share. By default a reduced quickstart (2 seeds,
methods none and kd, 60 steps: 2 teachers and 4 students) so that it ends in minutes on 2
cores; ``--full`` runs the quickstart as it is. The script prints each wall time, the ratio,
and the mean per-step time the records report.

    python benchmarks/parallel_suite.py [--jobs 2] [--full] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Report, parser

REDUCED = ["seeds=[0, 1]", "methods=[none, kd]", "train.steps=60"]


def run_suite(suite: Path, overrides: list[str], jobs: int, results: Path) -> tuple[float, list]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, "-m", "kdbench.cli", "run", str(suite), "--results", str(results)]
    cmd += ["--jobs", str(jobs)] + [a for o in overrides for a in ("--set", o)]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    records = [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/record.json"))]
    return wall, records


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "parallel_suite")
    options.add_argument(
        "--suite", default=str(Path(__file__).parents[1] / "suites/quickstart.yaml")
    )
    options.add_argument("--jobs", type=int, default=2)
    options.add_argument("--full", action="store_true", help="the suite as it is, not reduced")
    args = options.parse_args(argv)
    with Report("parallel_suite", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Run the suite with one job, then with ``--jobs``; print and return the wall times."""
    overrides = [] if args.full else REDUCED
    print(
        f"{os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}); suite {args.suite}"
        f" {'(full)' if args.full else 'reduced: ' + ', '.join(overrides)}"
    )
    walls, metrics = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, args.jobs):
            wall, records = run_suite(Path(args.suite), overrides, jobs, Path(tmp) / f"j{jobs}")
            assert all(r["status"] == "complete" for r in records), "a run failed"
            step = statistics.mean(r["timing"]["step_time_s"] for r in records)
            threads = sorted({r["env"]["cpu_threads"]["threads"] for r in records})
            print(
                f"--jobs {jobs}: {len(records)} runs, wall {wall:7.1f} s, mean step "
                f"{step * 1e3:6.1f} ms, threads per run {threads}"
            )
            walls[jobs] = wall
            metrics[jobs] = {r["id"]: r["metrics"]["miou"] for r in records}
    print(
        f"wall --jobs 1 / --jobs {args.jobs}: {walls[1] / walls[args.jobs]:.2f}x; "
        f"same mIoU per run: {metrics[1] == metrics[args.jobs]}"
    )
    return {"wall_s_by_jobs": walls, "same_miou": metrics[1] == metrics[args.jobs]}


if __name__ == "__main__":
    main()
