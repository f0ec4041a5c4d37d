"""A kind of run that does not train a network names its own executor in ``register_kind``:
``train_run`` calls it under the run's lease and writes its fields into a complete record, as it
does for training (and a failure becomes a ``failed`` record)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kdbench.config import EXECUTORS, KINDS, load_suite, register_kind
from kdbench.errors import KdbenchError
from kdbench.results.store import RunStore
from kdbench.train.run import executor, train_run
from kdbench.train.session import train

QUICKSTART = Path(__file__).parents[2] / "suites" / "quickstart.yaml"


def measure_nothing(spec: Any, store: RunStore, progress: Any) -> dict[str, Any]:
    """The stand-in executor: writes a file into the run's folder and returns one metric."""
    (store.run_dir(spec.id) / "stage.txt").write_text(spec.id)
    if spec.method == "broken":
        raise ValueError("stand-in stage broke")
    return {"metrics": {"miou": 12.5}}


@pytest.fixture
def stage_kind() -> Iterator[None]:
    register_kind("stage", "teacher", execute=f"{__name__}:measure_nothing")
    yield
    del KINDS["stage"], EXECUTORS["stage"]


def test_a_registered_executor_replaces_training(stage_kind: None, tmp_path: Path) -> None:
    [teacher] = load_suite(QUICKSTART, ["seeds=[0]"]).teachers[:1]
    stage = replace(teacher, kind="stage", method="stage")
    record = train_run(stage, tmp_path)
    assert record["status"] == "complete" and record["metrics"] == {"miou": 12.5}
    assert record["kind"] == "stage" and record["attempts"][-1]["outcome"] == "complete"
    assert (RunStore(tmp_path).run_dir(stage.id) / "stage.txt").read_text() == stage.id
    assert train_run(stage, tmp_path) == RunStore(tmp_path).load(stage.id)  # done: reused


def test_a_failing_executor_writes_a_failed_record(stage_kind: None, tmp_path: Path) -> None:
    [teacher] = load_suite(QUICKSTART, ["seeds=[0]"]).teachers[:1]
    record = train_run(replace(teacher, kind="stage", method="broken"), tmp_path)
    assert record["status"] == "failed"
    assert record["error"] == "ValueError: stand-in stage broke"


def test_training_kinds_train_and_a_malformed_executor_is_refused() -> None:
    assert executor("teacher") is train and executor("student") is train
    with pytest.raises(KdbenchError, match="execute: expected 'module:function'"):
        register_kind("stage", "teacher", execute="no_function_here")
    assert "stage" not in KINDS
