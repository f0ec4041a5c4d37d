"""Layer 3 of the report pipeline, words and numbers: cells -> what a reader is told.

:mod:`~kdbench.report.words.text` (numbers as text, what a cell, a header, a row label and
the caption say, the footnotes marked) and :mod:`~kdbench.report.words.summaries` (the small tables
beside a main table: average ranks, seeds needed, cost, rankings per budget, the runs behind
each cell). Plain Unicode strings, no output format: a renderer's
:class:`~kdbench.report.words.text.Style` decides the markup. Imports only the layers below.
"""
