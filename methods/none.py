"""The student baseline: cross-entropy only, no distillation term and no teacher forward pass."""

from __future__ import annotations

from torch import Tensor

from kdbench.method import Batch, Method
from kdbench.models.outputs import Outputs
from kdbench.registry import register_method


@register_method("none", "student baseline: cross-entropy only, the teacher is not run")
class NoDistillation(Method):
    """The student trained alone; the trainer's task loss is the whole objective."""

    taps = ()

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        return {}
