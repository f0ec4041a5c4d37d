"""Benchmark: load 10,000 run records and aggregate them into a table (target: under 2 s).

Builds synthetic records in the run-store layout (``runs/<id>/record.json``, the store's JSON
format: indent 1; 19 classes each, with a 100-step history beside each record in
``history.json``, which the table never reads) in a temporary folder,
then times, on the same files:

1. reference: a plain loop of ``json.load`` over the record files (the floor for any loader
   that parses whole JSON records);
2. ``kdbench.report.load_results`` without its row cache (parses every record, writes the
   cache), with a valid cache, and with one record changed;
3. ``build_tables`` + Markdown rendering of the mIoU table (tests, Holm, ranks, power).

Records are written with plain ``json.dump`` (no fsync), which gives the same files as the
store's atomic writes, only faster to build.
Run: ``python benchmarks/aggregate.py [--runs N] [--history STEPS] [--dir DIR] [--json PATH]``.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from _common import Report, parser, timed

CLASSES = [f"class_{i:02d}" for i in range(19)]
TERMS = ("ce", "kd", "cwd")


def synthetic_record(
    run_id: str, dataset: str, student: str, method: str, seed: int, teacher: str | None,
    history: int, rng: random.Random,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One complete record of realistic size (19 classes) and its training curves:
    ``(record, history)`` with ``history`` logged training steps."""
    kind = "teacher" if method == "teacher" else "student"
    level = 75.0 if kind == "teacher" else 65.0 + 0.3 * (hash(method) % 7)

    def metrics() -> dict[str, Any]:
        """Evaluation metrics around the run's level."""
        per_class = {c: level + rng.gauss(0, 5) for c in CLASSES}
        return {"miou": level + rng.gauss(0, 0.5), "mfsc": level + 8 + rng.gauss(0, 0.5),
                "pixel_acc": 90 + rng.gauss(0, 0.5), "per_class_iou": per_class}

    steps = [
        {"step": 10 * i, "epoch": i // 50, "loss": 2.0 / (1 + i) + rng.random() * 0.05,
         "losses": {t: rng.random() for t in TERMS}, "lr": 0.01 * (1 - i / history)}
        for i in range(history)
    ]
    evals = [{"step": 10 * i, "eval": metrics()} for i in range(0, history, max(1, history // 5))]
    return {
        "id": run_id, "suite": "bench", "kind": kind, "status": "complete",
        "axes": {"dataset": dataset, "student": student, "method": method, "seed": seed,
                 "teacher": teacher},
        "config": {"dataset": {"name": dataset}, "student": {"backbone": student},
                   "method": {"name": method}, "seed": seed, "train": {"steps": 10 * history}},
        "metrics": metrics(),
        "best_val": metrics(),
        "timing": {"wall_time_s": 3600.0, "step_time_s": 0.2, "peak_memory_mb": 8000.0},
        "extra_params": 0 if method in ("none", "teacher") else 12345, "student_params": 11_000_000,
        "env": {"torch": "2.4", "device": "cuda", "host": "node01"},
    }, steps + evals


def build(root: Path, runs: int, history: int) -> int:
    """Write about ``runs`` records (4 data sets x 5 students x 10 methods x seeds + teachers)."""
    rng = random.Random(0)
    datasets = [f"data{i}" for i in range(4)]
    students = [f"backbone{i}" for i in range(5)]
    methods = ["none"] + [f"method{i}" for i in range(9)]
    teachers_per_context = 10
    contexts = len(datasets) * len(students)
    seeds = max(1, (runs - contexts * teachers_per_context) // (contexts * len(methods)))
    count = 0

    def write(made: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        """Write one record and its history where the store would."""
        nonlocal count
        rec, curves = made
        folder = root / "runs" / rec["id"]
        folder.mkdir(parents=True)
        with open(folder / "record.json", "w") as f:
            json.dump(rec, f, indent=1)
        with open(folder / "history.json", "w") as f:
            json.dump(curves, f, indent=1)
        count += 1

    for dataset in datasets:
        for student in students:
            teacher_ids = []
            for t in range(teachers_per_context):
                run_id = f"{count:012x}"
                teacher_ids.append(run_id)
                write(synthetic_record(run_id, dataset, student, "teacher", t, None, history, rng))
            for method in methods:
                for seed in range(seeds):
                    teacher = teacher_ids[seed % teachers_per_context]
                    write(synthetic_record(f"{count:012x}", dataset, student, method, seed,
                                           teacher, history, rng))
    return count


def plain_json(root: Path) -> list[dict[str, Any]]:
    """The reference: ``json.load`` of every record file."""
    out = []
    for path in sorted(root.glob("runs/*/record.json")):
        with open(path) as f:
            out.append(json.load(f))
    return out


def _timed(fn: Any) -> tuple[Any, float]:
    """(fn(), wall seconds)."""
    out, wall, _ = timed(fn)
    return out, wall


def run(root: Path, runs: int, history: int) -> dict[str, float]:
    """Build the records under ``root`` unless they are there, then time and print; the
    figures in seconds."""
    from kdbench.report import load_results
    from kdbench.report.cells.tables import TableSpec, build_tables
    from kdbench.report.records.cache import CACHE_NAME
    from kdbench.report.render.formats import render

    if not (root / "runs").is_dir():
        count, t_build = _timed(lambda: build(root, runs, history))
        print(f"built {count} records in {t_build:.1f} s")
    files = sorted(root.glob("runs/*/record.json"))
    size = sum(p.stat().st_size for p in files)
    print(f"{len(files)} records, {size / 2**20:.0f} MiB ({size / len(files) / 1024:.1f} KiB each)")
    (root / CACHE_NAME).unlink(missing_ok=True)

    plain, t_json = _timed(lambda: plain_json(root))
    _, t_cold = _timed(lambda: load_results(root))
    frame, t_warm = _timed(lambda: load_results(root))
    os.utime(files[0])  # one record changed since the cache was written
    _, t_one = _timed(lambda: load_results(root))

    def aggregate() -> str:
        """The mIoU table with everything: tests, Holm, gap, ranks, power."""
        tables = build_tables(frame, TableSpec(gap=True))
        return render(tables, "markdown", with_ranks=True, power_delta=1.0)

    text, t_table = _timed(aggregate)
    assert text and len(plain) == len(frame)
    print(f"reference: plain json.load of every record        {t_json:6.3f} s")
    print(f"load_results, no cache (parses all, writes cache) {t_cold:6.3f} s")
    print(f"load_results, cache valid                         {t_warm:6.3f} s")
    print(f"load_results, one record changed                  {t_one:6.3f} s")
    print(f"build_tables + Markdown (tests, ranks, power)     {t_table:6.3f} s")
    total = t_warm + t_table
    verdict = "under" if total < 2.0 else "OVER"
    print(f"load (cached) + aggregate                         {total:6.3f} s ({verdict} 2 s)")
    print(f"load (no cache) + aggregate                       {t_cold + t_table:6.3f} s")
    return {"records": len(files), "mib": size / 2**20, "json_load_s": t_json,
            "load_no_cache_s": t_cold, "load_cached_s": t_warm, "load_one_changed_s": t_one,
            "tables_s": t_table, "cached_total_s": total}


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run the benchmark in ``--dir`` or a temporary folder."""
    options = parser(__doc__, "aggregate")
    options.add_argument("--runs", type=int, default=10_000, help="records to build")
    options.add_argument("--history", type=int, default=100, help="logged steps per record")
    options.add_argument("--dir", type=Path,
                         help="build (or reuse) the records here instead of a temp folder")
    args = options.parse_args(argv)
    with Report("aggregate", args, argv) as report:
        if args.dir is not None:
            report.results = run(args.dir, args.runs, args.history)
            return
        with tempfile.TemporaryDirectory() as tmp:
            report.results = run(Path(tmp), args.runs, args.history)


if __name__ == "__main__":
    main()
