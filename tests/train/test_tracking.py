"""Experiment trackers: what each one stores, read back with its own reader, equals the history.

Each backend's check is skipped when its package is not installed (``pip install
kdbench[tensorboard,wandb,mlflow]``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdbench.config import load_suite
from kdbench.results.store import RunStore
from kdbench.train import tracking
from kdbench.train.run import train_run
from kdbench.train.tracking import Trackers, entry_scalars

Curves = dict[str, list[tuple[int, float]]]


def needs(package: str) -> pytest.MarkDecorator:
    missing = importlib.util.find_spec(package) is None
    return pytest.mark.skipif(missing, reason=f"{package} is not installed")


BACKENDS = [
    pytest.param("tensorboard", marks=needs("tensorboard")),
    pytest.param("wandb", marks=needs("wandb")),
    pytest.param("mlflow", marks=needs("mlflow")),
]


def expected(history: list[dict[str, Any]]) -> Curves:
    """Per tag, the (step, value) pairs the history holds, in order."""
    curves: Curves = defaultdict(list)
    for entry in history:
        for key, value in entry_scalars(entry).items():
            curves[key].append((entry["step"], value))
    return dict(curves)


def read_tensorboard(root: Path, suite: str, run_id: str) -> Curves:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(root / "tensorboard" / suite / run_id), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_wandb(root: Path, run_id: str) -> Curves:
    """The history rows of every offline session of the run, through ``wandb leet inspect``."""
    curves: Curves = defaultdict(list)
    for log in sorted((root / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")):
        out = subprocess.run([shutil.which("wandb") or "wandb", "leet", "inspect", "--json",
                              str(log)], capture_output=True, text=True, timeout=300, check=True)
        for line in out.stdout.splitlines():
            record = json.loads(line)
            if record["type"] != "history":
                continue
            item = record["history"]["item"]
            for key, value in item.items():
                if not key.startswith("_"):
                    curves[key].append((item["_step"], float(value)))
    return dict(curves)


def read_mlflow(root: Path, suite: str, run_id: str) -> Curves:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name(suite)
    (run,) = client.search_runs([experiment.experiment_id], f"tags.kdbench_run_id = '{run_id}'")
    return {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                key=lambda m: (m.step, m.timestamp))]
        for key in run.data.metrics
    }


def read(name: str, root: Path, suite: str, run_id: str) -> Curves:
    if name == "tensorboard":
        return read_tensorboard(root, suite, run_id)
    if name == "wandb":
        return read_wandb(root, run_id)
    return read_mlflow(root, suite, run_id)


def assert_same(curves: Curves, want: Curves) -> None:
    assert set(curves) == set(want)
    for key, points in want.items():
        assert [s for s, _ in curves[key]] == [s for s, _ in points], key
        assert [v for _, v in curves[key]] == pytest.approx([v for _, v in points], rel=1e-6), key


FAKE = [
    {"step": 2, "epoch": 0.5, "lr": 0.1, "loss": 1.5, "losses": {"ce": 1.0, "kd": 0.5},
     "dwld": {"weights": {"kd": 0.7}}},
    {"step": 2, "eval": {"miou": 0.25, "mfsc": None, "pixel_acc": 0.5}},
    {"step": 4, "epoch": 1.0, "lr": 0.05, "loss": 1.25, "losses": {"ce": 0.75, "kd": 0.5},
     "dwld": {"weights": {"kd": 0.6}}},
    {"step": 4, "eval": {"miou": 0.375, "mfsc": None, "pixel_acc": 0.625}},
    {"step": 6, "epoch": 1.5, "lr": 0.0, "loss": 1.0, "losses": {"ce": 0.5, "kd": 0.5},
     "dwld": {"weights": {"kd": 0.5}}},
]
RESULT = {"metrics": {"miou": 0.5, "mfsc": 0.25, "pixel_acc": 0.75},
          "cost": {"steps": 6, "flops": 3.0e9}}


def test_entry_scalars_flatten_every_number_but_the_step() -> None:
    assert entry_scalars(FAKE[0]) == {"epoch": 0.5, "lr": 0.1, "loss": 1.5, "losses/ce": 1.0,
                                      "losses/kd": 0.5, "dwld/weights/kd": 0.7}
    assert entry_scalars(FAKE[1]) == {"eval/miou": 0.25, "eval/pixel_acc": 0.5}


@pytest.mark.parametrize("name", BACKENDS)
def test_a_killed_and_resumed_session_writes_each_entry_once(name: str, tmp_path: Path) -> None:
    """Session 1 writes 4 entries and dies (no close) after a checkpoint that holds only 2;
    session 2 restarts from those 2, sees entries 3 and 4 again (skipped), writes the 5th."""
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)

    def open_session(history: list[dict[str, Any]]) -> Trackers:
        return Trackers([name], run_dir, tmp_path, "fake", "kd", "abcdef012345", {"x": 1},
                        history)

    first = open_session([])
    for entry in FAKE[:4]:
        first.log(entry)
    if name == "tensorboard":  # a killed process leaves what it flushed; free the file here
        first.backends[name].close()
    second = open_session(FAKE[:2])
    for entry in FAKE[2:]:
        second.log(entry)
    second.close(RESULT)
    want = expected(FAKE)
    want.update({f"final/{k}": [(6, v)] for k, v in RESULT["metrics"].items()})
    assert_same(read(name, tmp_path, "fake", "abcdef012345"), want)


def test_entries_the_killed_session_never_wrote_are_written_on_resume(tmp_path: Path) -> None:
    """A backend that lagged (it was off, or the process died before it wrote) catches up."""
    seen: list[tuple[int, dict[str, float]]] = []

    class Recorder:
        def __init__(self, *args: object) -> None: ...

        def scalars(self, step: int, values: dict[str, float]) -> None:
            seen.append((step, values))

        def finish(self, params: dict[str, Any], final: dict[str, float], step: int) -> None:
            assert params["cost/flops"] == 3.0e9 and params["x"] == 1
            seen.append((step, final))

        def close(self) -> None: ...

    tracking.BACKENDS["recorder"] = Recorder
    try:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        first = Trackers(["recorder"], run_dir, tmp_path, "s", "kd", "id", {"x": 1}, [])
        first.log(FAKE[0])
        second = Trackers(["recorder"], run_dir, tmp_path, "s", "kd", "id", {"x": 1}, FAKE[:3])
        for entry in FAKE[3:]:
            second.log(entry)
        second.close(RESULT)
    finally:
        del tracking.BACKENDS["recorder"]
    assert [s for s, _ in seen] == [2, 2, 4, 4, 6, 6]
    assert seen[:5] == [(e["step"], entry_scalars(e)) for e in FAKE]
    assert seen[5][1] == {f"final/{k}": v for k, v in RESULT["metrics"].items()}


def test_a_failing_tracker_warns_once_and_is_switched_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[int] = []

    class Broken:
        def __init__(self, *args: object) -> None: ...

        def scalars(self, step: int, values: dict[str, float]) -> None:
            calls.append(step)
            raise ConnectionError("server gone")

        def finish(self, *args: object) -> None: ...

        def close(self) -> None: ...

    def missing(*args: object) -> None:
        raise ModuleNotFoundError("No module named 'wandb'")

    tracking.BACKENDS.update(broken=Broken, missing=missing)
    try:
        trackers = Trackers(["broken", "missing"], tmp_path, tmp_path, "s", "kd", "id", {}, [])
        for entry in FAKE:
            trackers.log(entry)
        trackers.close(RESULT)
    finally:
        del tracking.BACKENDS["broken"], tracking.BACKENDS["missing"]
    lines = capsys.readouterr().err.strip().splitlines()
    assert calls == [2]
    assert len(lines) == 2
    assert "tracker missing could not start (ModuleNotFoundError" in lines[0]
    assert "tracker broken failed to log (ConnectionError: server gone)" in lines[1]


TINY = {
    "name": "trk",
    "seeds": [0],
    "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 16, "eval_samples": 8}},
    "students": ["test_resnet"],
    "methods": ["none"],
    "train": {"steps": 6, "batch_size": 4, "log_every": 2, "checkpoint_every": 2,
              "eval_every": 2},
}


def teacher(tmp_path: Path, log: list[str]):  # noqa: ANN201
    path = tmp_path / f"trk-{len(log)}.yaml"
    path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "log": log}}))
    (spec,) = load_suite(path).teachers
    return spec


def test_the_trackers_are_not_part_of_the_run_id(tmp_path: Path) -> None:
    assert teacher(tmp_path, []).id == teacher(tmp_path, ["tensorboard", "mlflow"]).id


class Interrupt(BaseException):
    """Stands for a kill (see tests/train/test_run.py)."""


def interrupt_at_step_4(spec: object, info: dict) -> None:
    if info["step"] >= 4:
        raise Interrupt


@pytest.mark.slow
@needs("tensorboard")
@needs("wandb")
@needs("mlflow")
def test_a_killed_and_resumed_run_tracks_its_history_once(tmp_path: Path) -> None:
    """A run killed at step 4's log line (after its step-2 checkpoint) and resumed: every
    tracker holds exactly the history's steps and values, plus the final metrics."""
    spec = teacher(tmp_path, ["tensorboard", "wandb", "mlflow"])
    results = tmp_path / "results"
    with pytest.raises(Interrupt):
        train_run(spec, results, progress=interrupt_at_step_4)
    record = train_run(spec, results)
    assert record["status"] == "complete" and record["resumed_from"] == [2]
    history = RunStore(results).history(spec.id)
    want = expected(history)
    want.update({f"final/{k}": [(6, record["metrics"][k])] for k in ("miou", "mfsc", "pixel_acc")
                 if isinstance(record["metrics"][k], float)})
    for name in ("tensorboard", "wandb", "mlflow"):
        assert_same(read(name, results, spec.suite, spec.id), want)


@pytest.mark.slow
@needs("tensorboard")
def test_a_tracker_failing_in_a_run_warns_once_and_the_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(self: object, step: int, values: dict[str, float]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tracking.TensorBoard, "scalars", broken)
    spec = teacher(tmp_path, ["tensorboard"])
    assert train_run(spec, tmp_path / "results")["status"] == "complete"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "tracker" in line]
    assert warnings == [
        "kdbench: tracker tensorboard failed to log (OSError: disk full); "
        "it is off for the rest of the run"
    ]
