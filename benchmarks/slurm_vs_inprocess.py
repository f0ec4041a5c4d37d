"""A suite through SLURM against in-process on the same machine: wall times and step times.

Runs ``kdbench run SUITE`` twice into fresh results folders: in-process (the default local
executor, torch sized to this process's CPUs) and ``--executor slurm`` (jobs of
``launch.cpus_per_task`` CPUs each, as many at once as the cluster fits), with
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` removed so that each side sizes torch itself. Prints
each wall time, the ratio SLURM / in-process (the issue's target: <= 1.5), and the mean step
time of the teachers and of the students on each side. The cases alternate over ``--rounds``.

By default a reduced quickstart (1 seed, methods none and kd, 60 steps: 1 teacher and 2
students) so that it ends in minutes on a loaded 2-core machine; ``--full`` runs the
quickstart as it is. ``--inprocess-threads 1`` caps the in-process side at one thread (a
reference for a loaded machine, where 2 threads on 2 busy cores is very slow). Needs a
running cluster (``bash ci/slurm.sh up``).

    python benchmarks/slurm_vs_inprocess.py [--full] [--rounds 1] [--inprocess-threads 1]
        [--json PATH]
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

REDUCED = ["seeds=[0]", "methods=[none, kd]", "train.steps=60"]


def run(
    suite: Path, overrides: list[str], results: Path, slurm: bool, threads: int | None
) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads is not None and not slurm:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "kdbench.cli", "run", str(suite), "--results", str(results)]
    cmd += ["--executor", "slurm"] if slurm else ["--executor", "local", "--jobs", "1"]
    cmd += [a for o in overrides for a in ("--set", o)]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    steps: dict[str, list[float]] = {"teacher": [], "student": []}
    for path in results.glob("runs/*/record.json"):
        record = json.loads(path.read_text())
        assert record["status"] == "complete", record.get("error")
        steps[record["kind"]].append(record["timing"]["step_time_s"])
    return wall, {kind: statistics.mean(v) for kind, v in steps.items() if v}


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "slurm_vs_inprocess")
    options.add_argument(
        "--suite", default=str(Path(__file__).parents[1] / "suites/quickstart.yaml")
    )
    options.add_argument("--full", action="store_true")
    options.add_argument("--rounds", type=int, default=1)
    options.add_argument(
        "--inprocess-threads", type=int, help="cap the in-process run's threads (OMP_NUM_THREADS)"
    )
    args = options.parse_args(argv)
    with Report("slurm_vs_inprocess", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Alternate the two sides over ``--rounds``; print and return their wall times."""
    overrides = [] if args.full else REDUCED
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; suite {args.suite} "
        f"{'(full)' if args.full else 'reduced: ' + ', '.join(overrides)}"
    )
    walls: dict[str, list[float]] = {"in-process": [], "slurm": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for case in walls:
                wall, steps = run(
                    Path(args.suite),
                    overrides,
                    Path(tmp) / f"{case}{r}",
                    case == "slurm",
                    args.inprocess_threads,
                )
                walls[case].append(wall)
                step_text = ", ".join(f"{k} step {v * 1e3:.1f} ms" for k, v in steps.items())
                print(f"{case:10s} wall {wall:7.1f} s   {step_text}")
    ratio = statistics.median(walls["slurm"]) / statistics.median(walls["in-process"])
    print(f"SLURM / in-process wall time: {ratio:.2f} (load average now {os.getloadavg()[0]:.1f})")
    return {"wall_s": walls, "ratio": ratio}


if __name__ == "__main__":
    main()
