"""The GPU path on a GPU (marker ``cuda``; skipped without one): no host synchronisation between
logging intervals, bf16 losses equal to float32 through the method call, and two NCCL
processes training the run of one (where two GPUs exist).

``benchmarks/device_check.sh`` runs these with ``pytest -m cuda``.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kdbench.config import load_suite
from kdbench.method import Batch, build_method
from kdbench.models.student import Segmenter
from kdbench.registry import METHODS, TEACHERS
from kdbench.results.store import RunStore
from kdbench.train import gpu
from kdbench.train.loop import Models, train_step
from kdbench.train.precision import PendingSteps
from kdbench.train.run import train_run
from tests.methods.test_all_methods import STUDENT, TEACHER, outputs
from tests.train.test_distributed import TINY, first_loss

pytestmark = pytest.mark.cuda
K = 5
CUDA = torch.device("cuda")


def tiny_models(name: str) -> tuple[Models, torch.optim.Optimizer]:
    torch.manual_seed(0)
    fmt = torch.channels_last
    teacher = TEACHERS.get("intermediate")("test_resnet", K, 1, decoder_channels=16)
    teacher = teacher.eval().requires_grad_(False).to(CUDA, memory_format=fmt)
    student = Segmenter("test_resnet", K, decoder_channels=16, head_options={"aux": 0.4})
    student = student.to(CUDA, memory_format=fmt)
    method = build_method([(name, {})] if name != "none" else [], student.tap_info,
                          teacher.tap_info).to(CUDA)
    params = [p for m in (student, method) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, **gpu.optimizer_options(CUDA))
    models = Models(student, method, teacher if method.taps else None, uses_x=False,
                    aux_weight=student.aux_weight)
    return models, optimizer


@pytest.mark.parametrize("amp", ["off", "bf16"])
@pytest.mark.parametrize("name", METHODS.names())
def test_no_host_synchronisation_between_logging_intervals(name: str, amp: str) -> None:
    """After a warm-up step (one-time state, cuDNN autotuning), 4 steps under
    ``torch.cuda.set_sync_debug_mode("error")``: any synchronising call raises."""
    gpu.configure(CUDA)
    models, optimizer = tiny_models(name)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, K, (2, 64, 128), generator=g)
    label[:, :8] = 255
    data = {"rgb": torch.randn(2, 3, 64, 128, generator=g), "x": torch.randn(2, 1, 64, 128),
            "label": label}
    data = {k: v.to(CUDA) for k, v in data.items()}
    pending = PendingSteps()
    pending.add(train_step(models, data, 0, 10, 0, {"amp": amp}, optimizer, scaler, CUDA))
    pending.read()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 5):
            pending.add(train_step(models, data, step, 10, 0, {"amp": amp}, optimizer, scaler,
                                   CUDA))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(pending.read().losses) == 4


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n != "none"])
def test_bf16_losses_equal_float32_through_the_method_call(name: str) -> None:
    """The method computes in float32 with autocast disabled inside: called under bf16 autocast
    on float32 outputs, its losses equal the float32 call's within 1e-4 (relative)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    method = build_method([(name, {})], STUDENT, TEACHER).to(CUDA)
    student = outputs(STUDENT, 1.0, g, grad=False)
    teacher = outputs(TEACHER, 1.0, g, grad=False)
    student, teacher = (type(o)(**{k: _to_cuda(v) for k, v in vars(o).items()})
                        for o in (student, teacher))
    label = torch.randint(0, 5, (2, 32, 64), generator=g).to(CUDA)
    batch = Batch(rgb=torch.zeros(2, 3, 32, 64, device=CUDA), x=None, label=label, step=50,
                  total_steps=100)
    losses = {}
    for amp in (False, True):
        torch.manual_seed(1)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            losses[amp] = copy.deepcopy(method)(student, teacher, batch)
    for term, value in losses[False].items():
        torch.testing.assert_close(losses[True][term], value, rtol=1e-4, atol=1e-6)


def _to_cuda(value):  # noqa: ANN001, ANN202
    if isinstance(value, torch.Tensor):
        return value.to(CUDA)
    if isinstance(value, tuple):
        return tuple(_to_cuda(v) for v in value)
    return value


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_nccl_processes_train_the_run_of_one(tmp_path: Path) -> None:
    """As the gloo test (tests/train/test_distributed.py), on two GPUs with NCCL."""
    suite_path = tmp_path / "ddp.yaml"
    suite_path.write_text(yaml.safe_dump({**TINY, "device": "cuda",
                                          "launch": {"tasks_per_node": 2}}))
    two = tmp_path / "two"
    out = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(suite_path), "--results", str(two)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    suite = load_suite(suite_path)
    one = tmp_path / "one"
    for spec in suite.runs:
        assert train_run(spec, one)["status"] == "complete"
    for spec in suite.runs:
        single, double = RunStore(one).load(spec.id), RunStore(two).load(spec.id)
        assert double["status"] == "complete" and double["env"]["backend"] == "nccl"
        assert abs(first_loss(one, spec.id) - first_loss(two, spec.id)) < 1e-4
        assert abs(single["metrics"]["miou"] - double["metrics"]["miou"]) < 0.5
