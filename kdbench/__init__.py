"""kdbench: a benchmark harness for knowledge distillation in semantic segmentation.

Importing the package is cheap (no torch): the CLI's ``--help`` stays fast. The public entry
points are the ``kdbench`` command, :func:`kdbench.config.load_suite`,
:func:`kdbench.train.run.train_run`, :func:`kdbench.report.load_results` and
:func:`load_student` (an exported student, see :mod:`kdbench.export`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_student(folder: Any) -> Any:
    """The eval-mode torch student exported to ``folder`` by ``kdbench export``."""
    from kdbench.export import load_student as load

    return load(folder)
