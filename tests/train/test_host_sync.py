"""The training step makes no host synchronisation: every value it reports is read once per
logging interval, for every registered method.

A host synchronisation is counted as a call of one of the tensor methods that copy a value to
the host (:data:`READS`), instrumented by monkeypatching ``torch.Tensor``: on the CPU they cost
nothing, on a GPU each one would wait for the queued kernels (the CUDA test of the same
property is ``tests/train/test_cuda.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from kdbench.method import build_method
from kdbench.models.student import Segmenter
from kdbench.registry import METHODS, TEACHERS
from kdbench.results.store import RunStore
from kdbench.train import run as run_module
from kdbench.train.loop import Models, train_step
from kdbench.train.precision import PendingSteps
from tests.train.test_run import teacher_results  # noqa: F401 - a fixture

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")
K = 5


class SyncCounter:
    """Counts calls of the :data:`READS` methods of ``torch.Tensor`` while patched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, original))

    def _counted(self, name: str, original):  # noqa: ANN001, ANN202
        def wrapper(tensor, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            self.calls.append(name)
            return original(tensor, *args, **kwargs)

        return wrapper


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    model = TEACHERS.get("intermediate")("test_resnet", K, 1, decoder_channels=16)
    return model.eval().requires_grad_(False)


def batches(n: int) -> Iterator[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        label = torch.randint(0, K, (2, 32, 64), generator=g)
        label[:, :4] = 255  # some ignored pixels
        yield {"rgb": torch.randn(2, 3, 32, 64, generator=g),
               "x": torch.randn(2, 1, 32, 64, generator=g), "label": label}


@pytest.mark.parametrize("name", METHODS.names())
def test_a_logging_interval_of_steps_reads_the_host_once(
    name: str, teacher: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two intervals of 3 steps after one warm-up step (which may read a method's one-time
    state, e.g. ARFD's ``initialised``): exactly one read (the ``tolist`` of the interval)."""
    torch.manual_seed(0)
    student = Segmenter("test_resnet", K, decoder_channels=16, head_options={"aux": 0.4})
    method = build_method([(name, {})] if name != "none" else [], student.tap_info,
                          teacher.tap_info)
    models = Models(student, method, teacher if method.taps else None, uses_x=False,
                    aux_weight=student.aux_weight)
    params = [p for m in (student, method) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    pending, cpu = PendingSteps(), torch.device("cpu")
    data = list(batches(7))
    pending.add(train_step(models, data[0], 0, 7, 0, {"amp": "off"}, optimizer, scaler, cpu))
    pending.read()
    counter = SyncCounter(monkeypatch)
    for interval in range(2):
        for step in range(1 + 3 * interval, 4 + 3 * interval):
            pending.add(train_step(models, data[step], step, 7, 0, {"amp": "off"}, optimizer,
                                   scaler, cpu))
        assert counter.calls == [], (name, counter.calls)
        read = pending.read()
        assert counter.calls == ["tolist"], (name, counter.calls)
        counter.calls.clear()
        assert len(read.losses) == 3 and all("ce" in v for v in read.losses)


def test_the_run_reads_once_per_logging_interval(
    teacher_results, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001, F811
) -> None:
    """A run of 12 steps logging every 4 (checkpoint every 6): reads after steps 4, 6, 8 and 12
    (a checkpoint boundary reads too, before it saves), each of the steps since the last."""
    results, suite = teacher_results
    kd = next(s for s in suite.students if s.method == "kd")
    spec = type(kd)(**{**kd.__dict__, "train": {**kd.train, "steps": 12, "log_every": 4,
                                                 "checkpoint_every": 6}})
    sizes: list[int] = []
    original = PendingSteps.read

    def read(self: PendingSteps, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        sizes.append(len(self.steps))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PendingSteps, "read", read)
    record = run_module.train_run(spec, results)
    assert record["status"] == "complete", record.get("traceback")
    assert sizes == [4, 2, 2, 4]
    history = [h for h in RunStore(results).history(spec.id) if "loss" in h]
    assert [h["step"] for h in history] == [4, 8, 12]

