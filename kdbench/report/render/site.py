"""The HTML page set of ``kdbench report``: ``index.html`` and one ``runs/<id>.html`` per run.

Offline and self-contained: the style sheet and the sorting script
(:data:`kdbench.report.render.html.SORT_SCRIPT`) are inline, figures are the report's PNG files
beside ``index.html`` (relative links) or inline SVG (a run's curves), nothing is fetched from
the network. Every string from a record goes through :func:`~kdbench.report.render.html.escape`.

A run page shows, from the run's record and history (:mod:`kdbench.results.store`): its axes
and status (with the error and traceback of a failed run), the final metrics and the best
periodic evaluation, the cost and timing, the evaluation protocol (``train.eval`` and
``train.eval_every`` of its config), the attempts (the sessions that trained it and the steps it
resumed at), its provenance and environment, the training-loss curve of every loss term and the
periodic evaluations (inline SVG, :mod:`kdbench.report.render.svg`), and the resolved config.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from kdbench.report.render import svg
from kdbench.report.render.html import SORT_SCRIPT, escape

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[data-dir=asc]::after { content: " \\25B2"; } th[data-dir=desc]::after { content: " \\25BC"; }
td.label, td:first-child, th:first-child { text-align: left; }
tr.teacher td, tr.baseline td { background: #fafafa; }
.runs { display: block; font-size: 0.75em; } .runs a { margin-right: 0.4em; }
.caption { font-size: 0.85em; color: #444; max-width: 70em; }
.notes { font-size: 0.85em; } pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
img { max-width: 100%; } dl { display: grid; grid-template-columns: max-content auto; gap: 0 1em; }
dt { font-weight: bold; } dd { margin: 0; }
"""


def page(title: str, body: str, home: str | None = None) -> str:
    """A complete HTML document: inline style, ``body`` and the sorting script."""
    back = f'<p><a href="{escape(home)}">← report</a></p>\n' if home else ""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{back}"
            f"{body}\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n")


def run_href(run_id: str, from_run_page: bool = False) -> str:
    """The href of a run's page from ``index.html`` (or from another run page)."""
    return f"{run_id}.html" if from_run_page else f"runs/{run_id}.html"


def _fields(pairs: Mapping[str, Any]) -> str:
    """A definition list of the pairs that have a value (nested values as compact JSON)."""
    items = []
    for key, value in pairs.items():
        if value is None or value == {} or value == []:
            continue
        shown = value if isinstance(value, (str, int, float)) else json.dumps(
            value, sort_keys=True, default=str)
        items.append(f"<dt>{escape(key)}</dt><dd>{escape(shown)}</dd>")
    return "<dl>" + "".join(items) + "</dl>\n" if items else "<p>(none recorded)</p>\n"


def _curves(history: list[dict[str, Any]]) -> str:
    """The training-loss curves (total and every term) and the periodic evaluations, as SVG."""
    train = [e for e in history if "loss" in e and "step" in e]
    evals = [e for e in history if isinstance(e.get("eval"), dict) and "step" in e]
    steps = [e["step"] for e in train]
    series: list[svg.Series] = [("total", steps, [e["loss"] for e in train])]
    terms = sorted({t for e in train for t in (e.get("losses") or {})})
    series += [(t, steps, [(e.get("losses") or {}).get(t, float("nan")) for e in train])
               for t in terms]
    out = svg.line_chart(series, "training loss", "loss", log=True) if train else ""
    metrics = [m for m in ("miou", "mfsc", "pixel_acc") if any(m in e["eval"] for e in evals)]
    if metrics:
        ev = [(m, [e["step"] for e in evals], [e["eval"].get(m, float("nan")) for e in evals])
              for m in metrics]
        out += "\n" + svg.line_chart(ev, "periodic evaluation", "percent")
    return out or "<p>(no history recorded)</p>"


def run_page(record: Mapping[str, Any], history: list[dict[str, Any]],
             pages: Collection[str] = ()) -> str:
    """The page of one run (see the module docstring); its teacher's id links to the teacher's
    page when the teacher is among ``pages`` (the run ids that get one)."""
    axes = record.get("axes") or {}
    metrics = record.get("metrics") or {}
    best = record.get("best_val")
    config = record.get("config") or {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    teacher = axes.get("teacher")
    head = {"suite": record.get("suite"), "kind": record.get("kind"),
            "status": record.get("status"), **{k: v for k, v in axes.items() if k != "teacher"}}
    body = [f"<h1>Run {escape(record.get('id'))}</h1>", _fields(head)]
    if isinstance(teacher, str):
        shown = (f'<a href="{escape(run_href(teacher, True))}">{escape(teacher)}</a>'
                 if teacher in pages else escape(teacher))
        body.append(f"<p>Teacher: {shown}</p>")
    if record.get("error"):
        body += ["<h2>Error</h2>", f"<pre>{escape(record['error'])}</pre>"]
        if record.get("traceback"):
            body.append(f"<pre>{escape(record['traceback'])}</pre>")
    body += ["<h2>Metrics (final model)</h2>", _fields(metrics),
             "<h2>Best periodic evaluation</h2>", _fields(best or {}),
             "<h2>Curves</h2>", _curves(history),
             "<h2>Cost</h2>", _fields(record.get("cost") or {}),
             "<h2>Timing and size</h2>", _fields({**(record.get("timing") or {}),
                                                  "extra_params": record.get("extra_params"),
                                                  "student_params": record.get("student_params")}),
             "<h2>Evaluation protocol</h2>",
             _fields({"eval": train.get("eval"), "eval_every": train.get("eval_every")}),
             "<h2>Attempts</h2>", _fields({"sessions": record.get("sessions"),
                                           "resumed_from": record.get("resumed_from"),
                                           "stopped": record.get("stopped")}),
             "<h2>Provenance</h2>", _fields({**(record.get("provenance") or {}),
                                             "env": record.get("env")}),
             "<h2>Resolved config</h2>",
             f"<pre>{escape(json.dumps(config, indent=1, sort_keys=True, default=str))}</pre>"]
    return page(f"run {record.get('id')}", "\n".join(body), home="../index.html")


def write_run_pages(out: Path, records: list[Mapping[str, Any]],
                    histories: Mapping[str, list[dict[str, Any]]]) -> None:
    """``out/runs/<id>.html`` for every record."""
    folder = out / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    pages = {str(record["id"]) for record in records}
    for record in records:
        run_id = str(record["id"])
        (folder / run_href(run_id, True)).write_text(
            run_page(record, histories.get(run_id, []), pages), encoding="utf-8")
