"""The training data pipeline: batches independent of workers and of resuming; a whole run's
metrics independent of the number of workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kdbench.config import load_suite
from kdbench.data.synthdrive import SynthDrive
from kdbench.errors import KdbenchError
from kdbench.train.pipeline import train_loader
from kdbench.train.run import train_run

TRAIN = {"batch_size": 3, "steps": 7, "flip": True, "scale": [0.5, 2.0], "crop": [24, 40],
         "jitter": 0.2, "workers": 0}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dataset() -> SynthDrive:
    return SynthDrive("train", size=(32, 48), train_samples=7, modality="normals")


def batches(dataset: SynthDrive, start: int = 0, **changes: object) -> list[dict]:
    loader = train_loader(dataset, seed=3, train={**TRAIN, **changes}, normals=True, start=start,
                          device=CPU)
    return list(loader)


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(x[k], y[k]) for k in ("rgb", "x", "label"))


def test_batches_do_not_depend_on_workers_or_resuming(dataset: SynthDrive) -> None:
    reference = batches(dataset)
    assert len(reference) == 7 and reference[0]["rgb"].shape == (3, 3, 24, 40)
    assert reference[0]["label"].shape == (3, 24, 40)
    assert_same(batches(dataset, workers=2), reference)
    assert_same(batches(dataset, start=4), reference[4:])
    assert_same(batches(dataset, start=4, workers=1), reference[4:])
    assert not torch.equal(reference[0]["rgb"], reference[2]["rgb"])  # epochs reshuffle
    other_seed = list(train_loader(dataset, seed=4, train=TRAIN, normals=True, start=0,
                                   device=CPU))
    assert not torch.equal(other_seed[0]["rgb"], reference[0]["rgb"])


def test_samples_of_different_sizes_without_a_crop_are_a_user_error() -> None:
    class Mixed(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict:
            h = 8 + i
            return {"rgb": torch.zeros(3, h, 8), "x": torch.zeros(1, h, 8),
                    "label": torch.zeros(h, 8, dtype=torch.int64)}

    loader = train_loader(Mixed(), seed=0, train={**TRAIN, "crop": None}, normals=False, start=0,
                          device=CPU)
    with pytest.raises(KdbenchError, match="train.crop"):
        next(iter(loader))


@pytest.mark.slow
def test_a_run_gives_identical_metrics_with_0_and_2_workers(tmp_path: Path) -> None:
    suite = {
        "name": "workers",
        "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 12, "eval_samples": 6}},
        "students": ["test_resnet"],
        "methods": ["none"],
        "train": {"steps": 4, "batch_size": 4, "crop": [24, 48], "scale": [0.5, 2.0],
                  "jitter": 0.1, "checkpoint_every": 2},
    }
    records = []
    for workers in (0, 2):
        path = tmp_path / f"w{workers}.yaml"
        path.write_text(yaml.safe_dump({**suite, "train": {**suite["train"], "workers": workers}}))
        (teacher,) = load_suite(path).teachers
        records.append(train_run(teacher, tmp_path / f"results-{workers}"))
    assert [r["status"] for r in records] == ["complete", "complete"]
    assert records[0]["metrics"] == records[1]["metrics"]
    assert records[0]["eval_protocol"]["labels"] == "native resolution"
    assert records[0]["eval_protocol"]["mode"] == "whole"


@pytest.mark.slow
def test_a_process_whose_run_stopped_with_live_workers_exits(tmp_path: Path) -> None:
    """A run stopped on request keeps its DataLoader workers alive in the exception's frames;
    the process must still exit (multiprocessing ends daemon workers with SIGTERM at exit, so
    SIGTERM must not be among the signals the workers are born with blocked)."""
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "stop",
        "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 8, "eval_samples": 4}},
        "students": ["test_resnet"],
        "methods": ["none"],
        "device": "cpu",
        "train": {"steps": 50, "batch_size": 2, "workers": 2},
    }))
    code = (
        "import sys\n"
        "from kdbench.config import load_suite\n"
        "from kdbench.train import context\n"
        "from kdbench.train.run import train_run\n"
        f"(teacher,) = load_suite({str(suite)!r}).teachers\n"
        "context.request_stop('TEST')\n"
        "try:\n"
        f"    train_run(teacher, {str(tmp_path / 'res')!r})\n"
        "except context.Stopped as exc:\n"
        "    kept = exc  # its traceback holds the loader and its live workers\n"
        "    print('stopped', exc.step)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "stopped 1" in out.stdout
