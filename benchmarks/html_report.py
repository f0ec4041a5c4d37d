"""Benchmark: ``kdbench report`` with its HTML page set on 1,000 generated records (target: the
report written in under 30 s; ``index.html`` open in a browser in under 3 s).

Builds synthetic records with :func:`aggregate.build` (4 data sets x 5 students x 10 methods x
4 seeds + 10 teachers per column = 1,000 records of 19 classes, each with a 100-step history)
in a temporary folder, then times:

1. ``write_report`` (every table in Markdown, LaTeX, CSV and HTML, every figure, ``index.html``
   and the 1,000 run pages): the figure the target is about, as wall and CPU seconds of this
   process (CPU time is what a busy shared machine inflates least);
2. with ``--browser``: opening ``index.html`` in headless Chromium through Playwright until the
   ``load`` event (the page parsed, its figures loaded, the sorting script run), best of three.

Run: ``python benchmarks/html_report.py [--runs N] [--history STEPS] [--dir DIR] [--browser]``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import Report
from _common import parser as shared_parser
from aggregate import build

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def open_seconds(index: Path, tries: int = 3) -> float:
    """The best of ``tries`` times to open ``index`` in headless Chromium (to its load event)."""
    from playwright.sync_api import sync_playwright

    best = float("inf")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(tries):
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(index.as_uri(), wait_until="load")
            best = min(best, time.perf_counter() - t0)
            page.close()
        browser.close()
    return best


def run(root: Path, runs: int, history: int, browser: bool) -> dict[str, float]:
    """Build the records under ``root`` unless they are there, write the report, print and
    return the times."""
    from kdbench.report.render.report import ReportOptions, write_report

    results = root / "results"
    if not (results / "runs").is_dir():
        t0 = time.perf_counter()
        count = build(results, runs, history)
        print(f"built {count} records in {time.perf_counter() - t0:.1f} s")
    out = root / "report"
    t0, c0 = time.perf_counter(), time.process_time()
    write_report(results, out, ReportOptions())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    index = out / "index.html"
    pages = len(list((out / "runs").glob("*.html")))
    print(f"report with index.html ({index.stat().st_size / 2**20:.1f} MiB) and {pages} run "
          f"pages written in {seconds:.1f} s wall, {cpu:.1f} s CPU (target < 30 s)")
    figures = {"write_s": seconds, "write_cpu_s": cpu, "run_pages": pages}
    if browser:
        figures["open_s"] = open_seconds(index)
        print(f"index.html opened in {figures['open_s']:.2f} s (best of 3; target < 3 s)")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = shared_parser(__doc__, "html_report")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--dir", type=Path, help="reuse/keep the records here")
    parser.add_argument("--browser", action="store_true", help="also time opening index.html")
    args = parser.parse_args(argv)
    with Report("html_report", args, argv) as report:
        if args.dir:
            report.results.update(run(args.dir, args.runs, args.history, args.browser))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                report.results.update(run(Path(tmp), args.runs, args.history, args.browser))


if __name__ == "__main__":
    main()
