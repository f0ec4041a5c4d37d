"""Exporting a student: safetensors + config round trip, ONNX graph against torch, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kdbench
from kdbench.errors import KdbenchError
from kdbench.export import build_student, export_run
from kdbench.results.store import RunStore
from kdbench.train import checkpoint

RUN = "0123456789ab"
CLASSES = ["road", "car", "sky"]
HEAD = {
    "name": "fpn",
    "options": {"aux": 0.0, "aux_stage": -2, "min_reduction": 4, "output_stride": None},
}


def _record(kind: str = "student", status: str = "complete") -> dict:
    return {
        "id": RUN,
        "suite": "tiny",
        "kind": kind,
        "status": status,
        "config": {
            "kind": kind,
            "dataset": "synthdrive",
            "dataset_options": {"size": [32, 64]},
            "model": {
                "backbone": "test_resnet",
                "pretrained": None,
                "decoder_channels": 16,
                "head": HEAD,
            },
            "method": "kd",
            "seed": 0,
            "code": "abc",
        },
        "metrics": {"miou": 40.0, "per_class_iou": dict.fromkeys(CLASSES, 40.0)},
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with one complete student run (random weights stand in for training)."""
    store = RunStore(tmp_path / "results")
    record = _record()
    run_dir = store.run_dir(RUN)
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps(record))
    torch.manual_seed(0)
    config = {"backbone": "test_resnet", "num_classes": 3, "decoder_channels": 16, "head": HEAD}
    model = build_student(config)
    for m in model.modules():  # non-trivial batch-norm statistics, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    checkpoint.save(run_dir / "model.pt", {"model": model.state_dict()})
    return tmp_path / "results"


def test_round_trip_rebuilds_the_same_network(results: Path, tmp_path: Path) -> None:
    out = export_run(results, RUN, tmp_path / "out", onnx=False)
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == CLASSES and config["num_classes"] == 3
    assert config["source"]["run_id"] == RUN and config["source"]["metrics"]["miou"] == 40.0
    loaded = kdbench.load_student(out)
    saved = checkpoint.load(RunStore(results).run_dir(RUN) / "model.pt")["model"]
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert not loaded.training


@pytest.mark.slow
def test_onnx_graph_matches_torch(results: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = export_run(results, RUN, tmp_path / "out")
    student = kdbench.load_student(out)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 32, 64), (2, 3, 48, 96)]:  # the export size and another (dynamic axes)
        image = torch.randn(shape, generator=torch.Generator().manual_seed(shape[0]))
        with torch.no_grad():
            want = student(image).logits.numpy()
        (got,) = session.run(["logits"], {"image": image.numpy()})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("teacher", "complete", "teacher run; export takes students"),
        ("student", "failed", "failed, not complete"),
    ],
)
def test_only_complete_students_are_exported(
    tmp_path: Path, kind: str, status: str, message: str
) -> None:
    store = RunStore(tmp_path)
    store.run_dir(RUN).mkdir(parents=True)
    (store.run_dir(RUN) / "record.json").write_text(json.dumps(_record(kind, status)))
    with pytest.raises(KdbenchError, match=message):
        export_run(tmp_path, RUN, tmp_path / "out")


def test_cli_names_a_missing_run_and_an_unsafe_id_in_one_line(results: Path, tmp_path: Path):
    for run_id, expected in [("ffffffffffff", "no record"), ("../../etc", "12 lowercase hex")]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "kdbench.cli",
                "export",
                str(results),
                run_id,
                "--out",
                str(tmp_path / "o"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2 and expected in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_a_folder_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KdbenchError, match="not an exported kdbench student"):
        kdbench.load_student(tmp_path)
