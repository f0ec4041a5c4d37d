"""What a training step costs: FLOPs counted on the run's real shapes, and step-time statistics.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products,
convolutions and attention, forward and backward; element-wise operations, normalisation,
softmax and interpolation count as zero, as in every FLOP table of the literature) once per
run on its first batch, in three parts:

- ``teacher_forward``: the frozen teacher's forward pass (0 when the method reads no teacher
  output, as the trainer then never runs it);
- ``student``: the student's forward and backward pass with the task loss (cross-entropy);
- ``loss``: the distillation terms' forward and backward pass, learnable parts included
  (connectors, projectors, the LIX weight controller), and what the method does around the
  optimiser step (:meth:`~kdbench.method.Method.before_optimizer_step`: adv's discriminator
  forward, backward and update): the terms are computed on detached
  copies of the student's outputs, their gradients flow into those copies and the method's
  parameters, and the student's backward pass then receives those gradients together with the
  task loss's, so no FLOP is counted twice or in the wrong part.

The count runs on deep copies of the student and the method inside a forked RNG, so it changes
neither the weights, the BatchNorm statistics, a method's queues nor any random stream: a run
measures the same metrics with the count as it would without it. A copy of the student and the
method lives while it counts, so the CPU's resident-set peak includes it (the CUDA allocator's
peak is reset after it).

Step times: :func:`median_step_seconds` is the median of the per-step wall times, skipping the
first :func:`warmup_steps` of every session (allocator and kernel warm-up, cache fills).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, astuple, dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from kdbench.data.base import IGNORE_INDEX
from kdbench.method import Batch
from kdbench.models.outputs import Outputs
from kdbench.train.loop import Models


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step (a multiply-add counts 2), by part."""

    teacher_forward: int
    student: int
    """Student forward and backward with the task loss."""
    loss: int
    """Distillation terms forward and backward, learnable parts included."""

    @property
    def total(self) -> int:
        return self.teacher_forward + self.student + self.loss

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}

    def times(self, processes: int) -> StepFlops:
        """The step's FLOPs when ``processes`` ranks each train a shard like the one counted."""
        return StepFlops(*(processes * v for v in astuple(self)))


T = TypeVar("T")


def _conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of ``aten.convolution_backward``, grouped convolutions counted right.

    ``args`` = (bias, stride, padding, dilation, transposed, output_padding, groups,
    output_mask). Each gradient does the products of the forward pass once: grad of the input
    is the transposed convolution of grad_out with w, grad of the weight the correlation of x
    with grad_out, both 2·N·C_out·H_out·W_out·(C_in/groups)·k² for a plain convolution. (Torch
    2.x's own formula counts the weight gradient as if groups were 1, 16x too much for a
    16-channel depthwise convolution.)
    """
    transposed, output_mask = args[4], args[7]
    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, x_shape, not transposed)
    if output_mask[1]:
        flops += conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return flops


def counted(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and the FLOPs it performed."""
    counter = FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops},
    )
    with counter:
        result = fn()
    return result, int(counter.get_total_flops())


def _leaf(t: Tensor) -> Tensor:
    return t.detach().requires_grad_(True)


def count_step_flops(models: Models, data: dict[str, Tensor], total_steps: int) -> StepFlops:
    """FLOPs of one training step of ``models`` on the batch ``data`` (rgb, x, label).

    ``data`` has the shapes a step trains on (augmentation keeps them); ``total_steps`` only
    fills :class:`~kdbench.method.Batch` for methods that read the schedule.
    """
    devices = [data["rgb"].device] if data["rgb"].device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model = copy.deepcopy(models.model).train()
        method = copy.deepcopy(models.method).train()
        rgb, x, label = data["rgb"], data["x"], data["label"]
        out, student_fwd = counted(lambda: model(rgb, x if models.uses_x else None))
        teacher_out, teacher_flops = None, 0
        if models.teacher is not None and method.taps:
            with torch.no_grad():
                teacher_out, teacher_flops = counted(lambda: models.teacher(rgb, x))
        leaves = Outputs(
            logits=_leaf(out.logits),
            stages=tuple(_leaf(s) for s in out.stages),
            decoder=_leaf(out.decoder),
            aux=None if out.aux is None else _leaf(out.aux),
            aspp=None if out.aspp is None else _leaf(out.aspp),
        )
        batch = Batch(rgb=rgb, x=x, label=label, step=0, total_steps=total_steps)

        def distil() -> None:
            terms = method(leaves, teacher_out, batch)
            if terms:
                torch.stack([v.float() for v in terms.values()]).sum().backward()
            method.before_optimizer_step()  # e.g. adv's discriminator step

        _, loss_flops = counted(distil)

        def backward() -> None:
            logits = F.interpolate(
                out.logits, size=label.shape[-2:], mode="bilinear", align_corners=False
            )
            ce = F.cross_entropy(logits.float(), label, ignore_index=IGNORE_INDEX)
            pairs = [(ce, None)] + [
                (o, leaf.grad)
                for o, leaf in zip(
                    (out.logits, *out.stages, out.decoder, out.aux, out.aspp),
                    (leaves.logits, *leaves.stages, leaves.decoder, leaves.aux, leaves.aspp),
                    strict=True,
                )
                if leaf is not None and leaf.grad is not None
            ]
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])

        _, student_bwd = counted(backward)
    if devices:
        torch.cuda.reset_peak_memory_stats(devices[0])
    return StepFlops(teacher_flops, student_fwd + student_bwd, loss_flops)


def warmup_steps(session_steps: int) -> int:
    """Steps of a session left out of the median: 10% of it, at least 1 and at most 10, and
    none of a session of a single step."""
    return 0 if session_steps <= 1 else min(10, max(1, session_steps // 10))


def median_step_seconds(step_times: Sequence[float], session_starts: Sequence[int]) -> float | None:
    """Median wall seconds of a training step after each session's warm-up.

    ``step_times[i]`` is the time of step i; ``session_starts`` the steps at which the run
    (re)started (0 and every resume). None without any step.
    """
    if not step_times:
        return None
    bounds = sorted({0, *session_starts, len(step_times)})
    kept: list[float] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        kept += step_times[start + warmup_steps(end - start) : end]
    return statistics.median(kept)


def calibrate_step_seconds(
    models: Models, make_step: Callable[[Models], Callable[[int], None]], steps: int
) -> float:
    """Median seconds of ``steps`` training steps after warm-up, run on copies of the student and
    method inside a forked RNG (the run itself is untouched).

    ``make_step(copies)`` returns the function that trains ``copies`` for one step ``i``.
    """
    device = next(models.model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        copies = Models(
            copy.deepcopy(models.model), copy.deepcopy(models.method), models.teacher, models.uses_x
        )
        step = make_step(copies)
        times = []
        for i in range(steps):
            start = time.perf_counter()
            step(i)
            if devices:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    median = median_step_seconds(times, [0])
    assert median is not None
    return median
