"""Layer 1 of the report pipeline, records: run records -> one pandas DataFrame, one row per run.

:mod:`~kdbench.report.records.frame` (a record's flat row, the documented columns) and
:mod:`~kdbench.report.records.cache` (a results folder -> DataFrame, parsing only changed
records). Imports nothing else of :mod:`kdbench.report`.
"""
