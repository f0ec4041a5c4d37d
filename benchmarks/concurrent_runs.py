"""Benchmark: four ``kdbench run`` processes on one suite and one results folder vs one process.

The run leases (:mod:`kdbench.results.lease`) make every run train exactly once whatever the
number of processes; this measures what the extra processes cost. A small suite (synthdrive
32x64, ``test_resnet``, 2 seeds, methods none/kd/cwd: 2 teachers and 6 students) is run

1. by one ``kdbench run`` process (the reference), then
2. by four ``kdbench run`` processes started at once on a fresh folder,

and the total CPU time (user + system of every process) and wall time of each are printed with
their ratio, plus the number of training sessions the records name (one per run means no run
was trained twice). Each extra process pays its own interpreter, torch and timm start-up and
polls the store while it waits.

Run: ``python benchmarks/concurrent_runs.py [--steps N] [--json PATH]`` from the repository root.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import Report, parser

ROOT = Path(__file__).resolve().parents[1]


def launch(n: int, suite: Path, results: Path, env: dict[str, str]) -> tuple[float, float]:
    """Start ``n`` ``kdbench run`` processes at once; (wall s, total CPU s) until all exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-m", "kdbench.cli", "run", str(suite), "--results",
                          str(results)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        for _ in range(n)
    ]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        raise SystemExit(f"a kdbench process failed: exit codes {codes}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def sessions(results: Path) -> tuple[int, int]:
    """(runs, training sessions named by their records)."""
    records = [json.loads(p.read_text()) for p in results.glob("runs/*/record.json")]
    return len(records), sum(len(r.get("sessions", [])) for r in records)


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "concurrent_runs")
    options.add_argument("--steps", type=int, default=40)
    args = options.parse_args(argv)
    with Report("concurrent_runs", args, argv) as report:
        report.results = measure(args.steps)


def measure(steps: int) -> dict[str, float]:
    """Run the suite by one process, then by four; print and return the figures."""
    suite_data = {
        "name": "concurrent",
        "seeds": [0, 1],
        "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 64, "eval_samples": 16}},
        "students": ["test_resnet"],
        "methods": ["none", "kd", "cwd"],
        "train": {"steps": steps, "batch_size": 8, "checkpoint_every": 10},
    }
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(yaml.safe_dump(suite_data))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
               "KDBENCH_CACHE": str(Path(tmp) / "cache")}
        one = launch(1, suite, Path(tmp) / "one", env)
        four = launch(4, suite, Path(tmp) / "four", env)
        runs, trained = sessions(Path(tmp) / "four")
    load = os.getloadavg()[0]
    print(f"{runs} runs of {steps} steps; {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"  {'':28s} {'wall':>8s} {'CPU':>8s}")
    print(f"  {'1 process (reference)':28s} {one[0]:6.1f} s {one[1]:6.1f} s")
    print(f"  {'4 processes at once':28s} {four[0]:6.1f} s {four[1]:6.1f} s")
    print(f"  {'ratio 4 / 1':28s} {four[0] / one[0]:8.2f} {four[1] / one[1]:8.2f}")
    print(f"  training sessions in the 4-process folder: {trained} for {runs} runs")
    return {"runs": runs, "one_wall_s": one[0], "one_cpu_s": one[1], "four_wall_s": four[0],
            "four_cpu_s": four[1], "sessions": trained}


if __name__ == "__main__":
    main()
