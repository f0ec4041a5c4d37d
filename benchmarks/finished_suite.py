"""Benchmark: re-running a finished suite and ``kdbench status`` (target: under 3 s each).

Marks every run of ``suites/quickstart.yaml`` (3 teachers, 15 students) complete in a temporary
results folder (records with the real run ids and configs, made-up metrics: nothing trains),
then times, each as a fresh process, the median of ``--repeat`` runs:

1. references: ``python -c pass`` (interpreter start-up) and ``python -c "import torch"`` (what
   validating a suite cost when it imported torch and timm);
2. ``kdbench run suites/quickstart.yaml`` the first time (an empty resolved-suite cache: the
   suite is validated, which imports torch and timm) and again (a cache hit: nothing is
   launched, the closing table printed);
3. ``kdbench status suites/quickstart.yaml``.

Both wall time and CPU time (user + system, less sensitive to other load) are printed.
Run: ``python benchmarks/finished_suite.py [--repeat N] [--json PATH]`` from the repository root.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import Report, median, parser, timed_process

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "quickstart.yaml"


def finish(results: Path, env: dict[str, str]) -> None:
    """Write a complete record for every run of the quickstart (in a separate process)."""
    code = f"""
from kdbench.config import load_suite
from kdbench.launch.base import failed_record
from kdbench.results.store import RunStore
store = RunStore({str(results)!r})
for spec in load_suite({str(SUITE)!r}).runs:
    record = failed_record(spec, "")
    record.update(status="complete", error=None, metrics={{"miou": 50.0 + spec.seed,
                  "mfsc": 60.0, "pixel_acc": 90.0}})
    store.write(record)
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "finished_suite")
    options.add_argument("--repeat", type=int, default=5)
    args = options.parse_args(argv)
    with Report("finished_suite", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Time each command; print and return the median wall and CPU seconds of each."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        env = {**os.environ, "KDBENCH_CACHE": str(Path(tmp) / "cache"),
               "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        finish(results, env)
        kdbench = [sys.executable, "-m", "kdbench.cli"]
        run = [*kdbench, "run", str(SUITE), "--results", str(results)]
        status = [*kdbench, "status", str(SUITE), "--results", str(results)]

        def medians(command: list[str], cold: bool = False) -> tuple[float, float]:
            times = []
            for _ in range(args.repeat):
                if cold:
                    for path in (Path(tmp) / "cache").glob("*.json"):
                        path.unlink()
                times.append(timed_process(command, env))
            walls, cpus = zip(*times, strict=True)
            return median(walls), median(cpus)

        rows = [
            ("python -c pass (reference)", medians([sys.executable, "-c", "pass"])),
            ("python -c 'import torch' (reference)",
             medians([sys.executable, "-c", "import torch"])),
            ("kdbench run, finished suite, cold cache", medians(run, cold=True)),
            ("kdbench run, finished suite", medians(run)),
            ("kdbench status", medians(status)),
        ]
    load = os.getloadavg()[0]
    cpus = os.cpu_count()
    print(f"median of {args.repeat} fresh processes; {cpus} CPUs, load average {load:.1f}")
    print(f"  {'':42s} {'wall':>8s} {'CPU':>8s}")
    for label, (wall, cpu) in rows:
        print(f"  {label:42s} {wall:6.2f} s {cpu:6.2f} s")
    return {label: {"wall_s": wall, "cpu_s": cpu} for label, (wall, cpu) in rows}


if __name__ == "__main__":
    main()
