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
Run: ``python benchmarks/finished_suite.py [--repeat N]`` from the repository root.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "quickstart.yaml"


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one fresh process running ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        env = {**os.environ, "KDBENCH_CACHE": str(Path(tmp) / "cache"),
               "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        finish(results, env)
        kdbench = [sys.executable, "-m", "kdbench.cli"]
        run = [*kdbench, "run", str(SUITE), "--results", str(results)]
        status = [*kdbench, "status", str(SUITE), "--results", str(results)]

        def median(command: list[str], cold: bool = False) -> tuple[float, float]:
            times = []
            for _ in range(args.repeat):
                if cold:
                    for path in (Path(tmp) / "cache").glob("*.json"):
                        path.unlink()
                times.append(timed(command, env))
            walls, cpus = zip(*times, strict=True)
            return statistics.median(walls), statistics.median(cpus)

        rows = [
            ("python -c pass (reference)", median([sys.executable, "-c", "pass"])),
            ("python -c 'import torch' (reference)",
             median([sys.executable, "-c", "import torch"])),
            ("kdbench run, finished suite, cold cache", median(run, cold=True)),
            ("kdbench run, finished suite", median(run)),
            ("kdbench status", median(status)),
        ]
    load = os.getloadavg()[0]
    cpus = os.cpu_count()
    print(f"median of {args.repeat} fresh processes; {cpus} CPUs, load average {load:.1f}")
    print(f"  {'':42s} {'wall':>8s} {'CPU':>8s}")
    for label, (wall, cpu) in rows:
        print(f"  {label:42s} {wall:6.2f} s {cpu:6.2f} s")


if __name__ == "__main__":
    main()
