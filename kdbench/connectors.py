"""Learnable connectors between student and teacher features, kept apart from the loss maths."""

from __future__ import annotations

from torch import nn


def channel_adapter(student_channels: int, teacher_channels: int) -> nn.Module:
    """A 1x1 conv without bias mapping student channels to teacher channels.

    The convention of ``shared/METHODS.md``: an adapter exists only when the channel counts
    differ; with equal counts the student feature is compared as it is (``nn.Identity``).
    """
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
