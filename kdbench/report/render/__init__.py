"""Layer 4 of the report pipeline, render: words and cells -> LaTeX, Markdown, CSV and plots.

:mod:`~kdbench.report.render.latex`, :mod:`~kdbench.report.render.markdown`,
:mod:`~kdbench.report.render.html` (sortable tables), :mod:`~kdbench.report.render.tidy` (CSV,
one line per cell), :mod:`~kdbench.report.render.plots` (matplotlib figures),
:mod:`~kdbench.report.render.svg` (inline charts of the run pages),
:mod:`~kdbench.report.render.formats` (tables and their summaries in one format),
:mod:`~kdbench.report.render.document` (``report.md`` and ``index.html`` written together),
:mod:`~kdbench.report.render.site` (the HTML pages) and :mod:`~kdbench.report.render.report`
(the ``kdbench report`` folder). Imports only
the layers below (and itself).
"""
