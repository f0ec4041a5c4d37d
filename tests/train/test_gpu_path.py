"""The GPU path's settings on the CPU: identity of the new recipe keys, and what a CPU run keeps.

The CUDA side (channels-last, cuDNN autotuning, fused optimisers, compiled steps) is tested under
the ``cuda`` marker in ``tests/train/test_cuda.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kdbench.config import load_suite
from kdbench.errors import KdbenchError
from kdbench.train import gpu
from kdbench.train.loop import Models

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART_IDS = {
    ("teacher", 0): "3b71e75909c8",
    ("teacher", 1): "fb3760a1dbbf",
    ("teacher", 2): "302c26b93157",
    ("none", 0): "1d59eb29edcb",
    ("none", 1): "b2ab9e525a75",
    ("none", 2): "5cf1f44936fb",
}
"""Ids of the quickstart's runs before ``compile`` existed and ``channels_last`` became automatic
(commit 4085a87): the teachers and the baseline, whose ids hash no method file (the methods'
ids move with their source, which the option resolver edited)."""


def test_the_new_keys_at_their_defaults_keep_the_quickstarts_ids() -> None:
    suite = load_suite(ROOT / "suites" / "quickstart.yaml")
    ids = {(s.method, s.seed): s.id for s in suite.runs}
    assert {key: ids[key] for key in QUICKSTART_IDS} == QUICKSTART_IDS
    assert {(s.train["compile"], s.train["channels_last"]) for s in suite.runs} == {(False, None)}


def suite_ids(tmp_path: Path, **train: object) -> dict[str, str]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ids", "seeds": [0], "students": ["test_resnet"], "methods": ["none"],
        "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 16, "eval_samples": 8}},
        "train": {"steps": 3, "batch_size": 4, **train},
    }))
    suite = load_suite(path)
    return {s.kind: s.id for s in suite.runs}


def test_compile_is_part_of_the_identity_and_channels_last_null_is_false(tmp_path: Path) -> None:
    default = suite_ids(tmp_path)
    assert suite_ids(tmp_path, compile=False) == default
    assert suite_ids(tmp_path, channels_last=False) == default
    other = [suite_ids(tmp_path, compile=True), suite_ids(tmp_path, compile="max-autotune"),
             suite_ids(tmp_path, channels_last=True)]
    assert len({ids["student"] for ids in [default, *other]}) == 4


@pytest.mark.parametrize("value", ["reduce-overhead", 1, "true"])
def test_a_bad_compile_value_is_a_user_error(tmp_path: Path, value: object) -> None:
    with pytest.raises(KdbenchError, match="train.compile"):
        suite_ids(tmp_path, compile=value)


def test_the_cpu_keeps_its_layout_and_optimiser() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not gpu.channels_last({"channels_last": None}, cpu)
    assert gpu.channels_last({"channels_last": None}, cuda)
    assert gpu.channels_last({"channels_last": True}, cpu)
    assert not gpu.channels_last({"channels_last": False}, cuda)
    assert gpu.optimizer_options(cpu) == {} and gpu.optimizer_options(cuda) == {"fused": True}
    before = torch.backends.cudnn.benchmark
    gpu.configure(cpu)
    assert torch.backends.cudnn.benchmark == before


def test_compile_false_is_the_models_themselves() -> None:
    model, method = torch.nn.Linear(2, 2), torch.nn.Identity()
    models = Models(model, method, None, uses_x=False)
    assert gpu.compiled(models, False) is models
    wrapped = gpu.compiled(models, True)
    assert wrapped.teacher is None and wrapped.model is not model
    assert wrapped.model._orig_mod is model and wrapped.method._orig_mod is method
