"""Layer 2 of the report pipeline, cells and statistics: DataFrame -> plain data structures.

:mod:`~kdbench.report.cells.stats` (tests, intervals, ranks, power as pure functions),
:mod:`~kdbench.report.cells.tables` (the table model: which runs go in which cell, reference
rows, significance, placing), :mod:`~kdbench.report.cells.summary` (average ranks with
Friedman/Nemenyi, seeds needed), :mod:`~kdbench.report.cells.cost` (mean cost per cell,
rankings per budget), :mod:`~kdbench.report.cells.trace` (the runs behind each cell),
:mod:`~kdbench.report.cells.bayes` (Bayesian signed-rank and correlated t-tests against the
baseline) and :mod:`~kdbench.report.cells.iqm` (interquartile mean, stratified bootstrap,
probability of improvement).
Imports only :mod:`kdbench.report.records` (and itself); nothing here formats a number.
"""
