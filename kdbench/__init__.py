"""kdbench: a benchmark harness for knowledge distillation in semantic segmentation.

Importing the package is cheap (no torch): the CLI's ``--help`` stays fast. The public entry
points are the ``kdbench`` command, :func:`kdbench.config.load_suite`,
:func:`kdbench.train.run.train_run` and :func:`kdbench.report.load_results`.
"""

__version__ = "0.1.0"
