"""A kd step beside a busy process, with torch's default threads against kdbench's thread fix.

The situation of a SLURM job given one CPU on a node without CPU binding (what ``task/none``
and many clusters do): ``SLURM_CPUS_PER_TASK=1`` but an affinity mask of every core, while
another process keeps one core busy. Each case runs in a fresh interpreter (torch sizes its
pools once per process), with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` removed so that torch
picks its own default:

- ``default``: torch's default thread count (one per core it sees);
- ``fixed``: :func:`kdbench.cpus.configure_threads` (threads = available CPUs = 1).

The cases alternate (default, fixed, default, fixed, ...) so that drift of the machine affects
both alike; the script prints the median kd step time of each and their ratio.

    python benchmarks/cpu_threads.py [--backbone mobilenetv3_small_050] [--steps 20] [--rounds 2]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import Report, parser

STEP = r"""
import json, statistics, sys, time
import torch
if sys.argv[1] == "fixed":
    from kdbench.cpus import configure_threads
    configure_threads()
from kdbench.method import build_method
from kdbench.models.student import Segmenter
from kdbench.registry import TEACHERS
from kdbench.train.loop import Models, train_step
backbone, steps = sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
k, h, w, b = 8, 64, 128, 8
data = {"rgb": torch.randn(b, 3, h, w), "x": torch.randn(b, 1, h, w),
        "label": torch.randint(0, k, (b, h, w))}
teacher = TEACHERS.get("intermediate")(backbone, k, 1).eval()
model = Segmenter(backbone, k)
models = Models(model, build_method([("kd", {})], model.tap_info, teacher.tap_info), teacher,
                uses_x=False)
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
scaler = torch.amp.GradScaler("cpu", enabled=False)
train = {"flip": True, "scale": [0.75, 1.5], "amp": "off"}
times = []
for step in range(steps + 3):
    t0 = time.perf_counter()
    train_step(models, data, step, steps, 0, train, opt, scaler, torch.device("cpu"))
    if step >= 3:
        times.append(time.perf_counter() - t0)
print(json.dumps({"threads": torch.get_num_threads(), "median_s": statistics.median(times)}))
"""

BUSY = "while True: pass"


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "cpu_threads")
    options.add_argument("--backbone", default="mobilenetv3_small_050")
    options.add_argument("--steps", type=int, default=20)
    options.add_argument("--rounds", type=int, default=2)
    args = options.parse_args(argv)
    with Report("cpu_threads", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Alternate the two cases beside a busy process; print and return their step times."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["SLURM_CPUS_PER_TASK"] = "1"
    print(
        f"{os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}; SLURM_CPUS_PER_TASK=1; "
        f"one busy process beside; backbone {args.backbone}, batch 8x3x64x128, kd; median of "
        f"{args.steps} steps per case, {args.rounds} rounds"
    )
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    results: dict[str, list[float]] = {"default": [], "fixed": []}
    threads: dict[str, int] = {}
    try:
        for _ in range(args.rounds):
            for case in results:
                out = subprocess.run(
                    [sys.executable, "-c", STEP, case, args.backbone, str(args.steps)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                results[case].append(figures["median_s"])
                threads[case] = figures["threads"]
    finally:
        busy.kill()
        busy.wait()
    medians = {case: statistics.median(times) for case, times in results.items()}
    for case, median in medians.items():
        print(
            f"{case:8s} {threads[case]} thread(s)  kd step {median * 1e3:9.1f} ms  "
            f"(rounds: {', '.join(f'{t * 1e3:.1f}' for t in results[case])})"
        )
    print(f"default / fixed: {medians['default'] / medians['fixed']:.1f}x")
    return {"threads": threads, "median_step_s": medians, "rounds_s": results}


if __name__ == "__main__":
    main()
