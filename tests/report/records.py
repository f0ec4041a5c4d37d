"""Hand-made run records in the schema of :mod:`kdbench.results.store`, for the report tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from kdbench.results.store import RunStore, write_json_atomic


def run_id(*parts: Any) -> str:
    """A stable 12-hex-digit run id from the parts."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def record(
    method: str,
    seed: int,
    miou: float | None,
    *,
    dataset: str = "kitti",
    student: str = "resnet18",
    suite: str = "demo",
    status: str = "complete",
    teacher: str | None = None,
    per_class: dict[str, float | None] | None = None,
    history: list[dict[str, Any]] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One run record; ``method="teacher"`` makes a teacher record (kind teacher, no teacher)."""
    kind = "teacher" if method == "teacher" else "student"
    rec: dict[str, Any] = {
        "id": run_id(suite, dataset, student, method, seed),
        "suite": suite,
        "kind": kind,
        "status": status,
        "axes": {
            "dataset": dataset,
            "student": student,
            "method": method,
            "seed": seed,
            "teacher": None if kind == "teacher" else teacher,
        },
        "config": {"method": method},
        "history": history or [],  # written to history.json by write()
        "timing": {"wall_time_s": 10.0, "step_time_s": 0.1, "peak_memory_mb": 100.0},
        "extra_params": 0,
        "student_params": 1000,
        "env": {},
    }
    if status == "complete":
        rec["metrics"] = {
            "miou": miou,
            "mfsc": None if miou is None else miou + 1.0,
            "pixel_acc": None if miou is None else miou + 20.0,
            "per_class_iou": per_class or {},
        }
    if status == "failed":
        rec["error"] = error or "RuntimeError: boom"
    return rec


def teacher_id(dataset: str = "kitti", student: str = "resnet18", seed: int = 0,
               suite: str = "demo") -> str:
    """The id :func:`record` gives the teacher with these axes."""
    return run_id(suite, dataset, student, "teacher", seed)


def write(root: Path, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` into a results folder at ``root``; returns ``root``."""
    store = RunStore(root)
    for rec in records:
        rec = dict(rec)
        write_json_atomic(store.history_path(rec["id"]), rec.pop("history"))
        store.write(rec)
    return root


KITTI = {"none": [70.0, 71.0, 72.0], "kd": [73.1, 73.9, 75.2], "cwd": [68.8, 70.1, 70.9]}
"""mIoU per seed 0, 1, 2 on kitti/resnet18; "lix" has 74.1 on seed 0, seed 1 failed, no seed 2."""
TEACHERS = {0: 80.0, 1: 84.0, 9: 50.0}
"""kitti/resnet18 teachers by seed; the seed-9 teacher is used by no student."""


def demo_records() -> list[dict[str, Any]]:
    """Two columns with known answers.

    kitti/resnet18 (seeds 0-2): KITTI above; kd's seed-0 run distils from teacher seed 0, every
    other distilled run from teacher seed 1, so the teacher reference is mean(80, 84) = 82.
    vkitti2/resnet18 (seeds 0-1): none [60, 62], kd [61, 65] naming no teacher, so the
    reference falls back to the vkitti2/resnet18 teacher (90); cwd and lix have no run there.
    Per-class IoU: "road" = mIoU + 10, "sky" null on vkitti2.
    """
    recs = [record("teacher", s, v, teacher=None, per_class={"road": v + 10, "sky": v})
            for s, v in TEACHERS.items()]
    for method, values in KITTI.items():
        for seed, v in enumerate(values):
            teacher = None if method == "none" else teacher_id(seed=0 if seed == 0 and
                                                                method == "kd" else 1)
            recs.append(record(method, seed, v, teacher=teacher,
                               per_class={"road": v + 10, "sky": v}))
    recs.append(record("lix", 0, 74.1, teacher=teacher_id(seed=1),
                       per_class={"road": 84.1, "sky": 74.1}))
    recs.append(record("lix", 1, None, teacher=teacher_id(seed=1), status="failed"))
    recs.append(record("teacher", 0, 90.0, dataset="vkitti2",
                       per_class={"road": 100.0, "sky": None}))
    for method, values in {"none": [60.0, 62.0], "kd": [61.0, 65.0]}.items():
        for seed, v in enumerate(values):
            recs.append(record(method, seed, v, dataset="vkitti2",
                               per_class={"road": v + 10, "sky": None}))
    return recs
