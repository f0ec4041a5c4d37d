"""How long ``kdbench run SUITE --executor slurm --dry-run`` takes for a large suite.

The Cityscapes suite with 40 seeds (40 teachers, 480 students: 520 runs, 41 arrays) into an
empty results folder, with empty data folders (the suite checks that its data root exists):
the wall and CPU time of the whole command in a fresh interpreter (imports included; CPU time
is what a loaded machine does not inflate), once with an empty resolved-suite cache and once
answered from it (:mod:`kdbench.suite_cache`), and, in this process
after the imports, the time of each part (suite expansion and validation, the store's look-up
of every run, the plan, the sbatch text). The plan calls the cluster's ``squeue`` once.

    python benchmarks/slurm_dry_run.py [--seeds 40] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Report, parser

SUITE = Path(__file__).parents[1] / "suites" / "cityscapes.yaml"


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "slurm_dry_run")
    options.add_argument("--seeds", type=int, default=40)
    args = options.parse_args(argv)
    with Report("slurm_dry_run", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Time the command twice and its parts in this process; print and return the figures."""
    figures: dict[str, float] = {}
    seeds = f"seeds=[{', '.join(map(str, range(args.seeds)))}]"
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        (Path(tmp) / "data" / "cityscapes").mkdir(parents=True)
        os.environ.update(KDBENCH_DATA=f"{tmp}/data", KDBENCH_CACHE=f"{tmp}/cache")
        cmd = [
            sys.executable,
            "-m",
            "kdbench.cli",
            "run",
            str(SUITE),
            "--executor",
            "slurm",
            "--dry-run",
            "--results",
            str(results),
            "--set",
            seeds,
        ]
        cpu_before = 0.0
        for cache in ("empty", "warm"):
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - start
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = usage.ru_utime + usage.ru_stime - cpu_before
            cpu_before += cpu
            arrays = sum(line.startswith("sbatch ") for line in out.stdout.splitlines())
            figures.update({f"{cache}_cache_wall_s": wall, f"{cache}_cache_cpu_s": cpu,
                            "arrays": arrays})
            print(
                f"kdbench run --dry-run (fresh interpreter, {cache} suite cache): "
                f"{wall:6.2f} s wall, {cpu:.2f} s CPU, {arrays} arrays"
            )

        t0 = time.perf_counter()
        from kdbench.config import load_suite
        from kdbench.launch.slurm import from_options
        from kdbench.results.store import RunStore

        t1 = time.perf_counter()
        suite = load_suite(SUITE, [seeds])
        t2 = time.perf_counter()
        store = RunStore(results)
        pending = [s for s in suite.runs if store.status(s.id) != "complete"]
        t3 = time.perf_counter()
        options = {k: v for k, v in suite.settings["launch"].items() if k != "executor"}
        executor = from_options(options, results / "slurm")
        plan = executor.plan(pending, results)
        t4 = time.perf_counter()
        text = executor.describe(plan)
        t5 = time.perf_counter()
    print(
        f"{len(suite.runs)} runs; in this process: imports {t1 - t0:.2f} s, suite "
        f"{t2 - t1:.2f} s, store {t3 - t2:.2f} s, plan {t4 - t3:.2f} s, text {t5 - t4:.3f} s "
        f"({len(text.splitlines())} lines)"
    )
    return {**figures, "runs": len(suite.runs), "imports_s": t1 - t0, "suite_s": t2 - t1,
            "store_s": t3 - t2, "plan_s": t4 - t3, "text_s": t5 - t4}


if __name__ == "__main__":
    main()
