"""Mixed precision, non-finite losses and gradients, and the all-ignored batch, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from kdbench.config import RunSpec
from kdbench.errors import KdbenchError
from kdbench.method import Batch, Method
from kdbench.models.outputs import Outputs
from kdbench.registry import METHODS
from kdbench.results.store import RunStore
from kdbench.train import checkpoint
from kdbench.train.loop import cross_entropy
from kdbench.train.precision import NonFiniteError, PendingSteps, StepValues, first_nonfinite
from kdbench.train.run import train_run
from tests.train.test_run import teacher_results, tiny_suite  # noqa: F401 - a fixture

NAN_FROM = 3
"""The 0-based step from which the test methods below go wrong."""


class NanLoss(Method):
    """A loss term that is NaN from step NAN_FROM on."""

    taps = ("logits",)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        value = student.logits.mean() * 0.0
        return {"bad": value + (float("nan") if batch.step >= NAN_FROM else 0.0)}


class _NanGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001, D102
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001, D102
        return grad * float("nan")


class NanGradient(Method):
    """A finite loss whose gradient is NaN from step NAN_FROM on."""

    taps = ("logits",)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        x = student.logits.mean()
        return {"quiet": (_NanGradient.apply(x) if batch.step >= NAN_FROM else x) * 1e-3}


@pytest.fixture()
def broken_methods() -> Iterator[None]:
    """Register the two broken methods for one test only (collection never sees them)."""
    METHODS.register("nan_loss")(NanLoss)
    METHODS.register("nan_grad")(NanGradient)
    yield
    for name in ("nan_loss", "nan_grad"):
        METHODS._entries.pop(name)


def student_spec(suite, method: str, **train: object) -> RunSpec:  # noqa: ANN001
    kd = next(s for s in suite.students if s.method == "kd")
    return RunSpec(
        **{
            **kd.__dict__,
            "method": method,
            "method_terms": ((method, {}),),
            "train": {**kd.train, **train},
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("nan_loss", f"NonFiniteError: step {NAN_FROM}: loss term 'bad' is nan"),
        ("nan_grad", f"NonFiniteError: step {NAN_FROM}: non-finite gradient of 'model."),
    ],
)
def test_a_non_finite_loss_or_gradient_fails_the_run_at_that_step(
    method: str,
    message: str,
    broken_methods: None,
    teacher_results,  # noqa: ANN001, F811
) -> None:
    results, suite = teacher_results
    spec = student_spec(suite, method, steps=8, checkpoint_every=2)
    record = train_run(spec, results)
    assert record["status"] == "failed"
    assert record["error"].startswith(message), record["error"]
    store = RunStore(results)
    assert not (store.run_dir(spec.id) / "model.pt").exists()
    assert not store.history_path(spec.id).exists()
    saved = checkpoint.load(store.checkpoint_path(spec.id))  # from step 2, before the NaN
    assert saved["step"] == 2
    for name, tensor in saved["model"].items():
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), name


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_a_mixed_precision_run_completes_and_counts_skipped_steps(
    mode: str,
    teacher_results,  # noqa: ANN001, F811
) -> None:
    results, suite = teacher_results
    record = train_run(student_spec(suite, "kd", steps=3, amp=mode), results)
    assert record["status"] == "complete", record.get("traceback")
    assert record["amp"]["mode"] == mode and record["amp"]["skipped_steps"] >= 0


def test_amp_accepts_off_bf16_fp16_and_yaml_false(tmp_path: Path) -> None:
    for value, want in ((False, "off"), ("off", "off"), ("bf16", "bf16"), ("fp16", "fp16")):
        suite = tiny_suite(tmp_path, train={"steps": 2, "amp": value})
        assert {s.train["amp"] for s in suite.runs} == {want}
    for value in (True, "float16"):
        with pytest.raises(KdbenchError, match="train.amp: expected off, fp16 or bf16"):
            tiny_suite(tmp_path, train={"steps": 2, "amp": value})


def test_cross_entropy_of_an_all_ignored_batch_is_zero_with_zero_gradient() -> None:
    logits = torch.randn(2, 5, 4, 6, requires_grad=True)
    label = torch.full((2, 4, 6), 255)
    loss = cross_entropy(logits, label)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    label[0, 1, 2] = 3  # one labelled pixel: the usual mean over labelled pixels
    want = torch.nn.functional.cross_entropy(logits, label, ignore_index=255)
    torch.testing.assert_close(cross_entropy(logits, label), want)


def _step(step: int, terms: dict[str, float], bad_gradient: int) -> StepValues:
    values = torch.tensor([sum(terms.values()), *terms.values(), float(bad_gradient)])
    return StepValues(step, tuple(terms), values, ["model.a", "model.b"])


def test_the_read_names_the_first_bad_step_and_its_term_or_parameter() -> None:
    pending = PendingSteps()
    pending.add(_step(6, {"ce": 1.0, "kd": 0.5}, -1))
    pending.add(_step(7, {"ce": 1.0, "kd": float("inf")}, 1))
    pending.add(_step(8, {"ce": float("nan"), "kd": 0.5}, -1))
    with pytest.raises(NonFiniteError, match="step 7: loss term 'kd' is inf"):
        pending.read()
    assert pending.steps == []
    pending.add(_step(3, {"ce": 1.0}, -1))
    pending.add(_step(4, {"ce": 1.0}, 1))
    with pytest.raises(NonFiniteError, match="step 4: non-finite gradient of 'model.b'"):
        pending.read()
    fp16 = PendingSteps(fp16=True)  # the scaler skipped step 4's update: counted, not failed
    fp16.add(_step(3, {"ce": 1.0}, -1))
    fp16.add(_step(4, {"ce": 2.0}, 0))
    read = fp16.read()
    assert read.skipped == 1 and read.losses == [{"loss": 1.0, "ce": 1.0}, {"loss": 2.0, "ce": 2.0}]


def test_first_nonfinite_finds_the_first_bad_tensor_without_reading_it() -> None:
    good, nan, inf = torch.ones(3), torch.tensor([1.0, float("nan")]), torch.tensor([-float("inf")])
    assert first_nonfinite([good, good]).item() == -1
    assert first_nonfinite([good, nan, inf]).item() == 1
    assert first_nonfinite([inf, good, nan]).item() == 0
    assert first_nonfinite([]).item() == -1
