"""``index.html`` of ``kdbench report`` in a real browser (Debian's Chromium through Playwright).

Opens the page from disk with the network cut off by the flags below: no console error or
failed request, every table row present, clicking a header sorts the rows, a cell's link opens
its run's page (with its curves), the qualitative figure is shown (or a line says why not), a
screenshot that is not blank; and the page of 1,000 generated runs opens in under 3 s.
Skipped, with the reason, where Chromium or the ``playwright`` package is missing (``.ci/run``
installs both; no ``playwright install``).
"""

from __future__ import annotations

import io
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdbench.cli import main
from tests.report.records import KITTI, demo_records, write

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _history(level: float) -> list[dict[str, Any]]:
    """A short training curve with two loss terms and two periodic evaluations."""
    steps = [{"step": s, "loss": 2.0 / (1 + s), "losses": {"ce": 1.0 / (1 + s), "kd": 0.5},
              "lr": 0.01} for s in range(0, 50, 10)]
    return steps + [{"step": s, "eval": {"miou": level - 5 + s / 10}} for s in (20, 40)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The report of the demo records (one method named like markup), and the records."""
    records = demo_records()
    for rec in records:
        rec["history"] = _history(rec.get("metrics", {}).get("miou") or 50.0)
        if rec["axes"]["method"] == "cwd":
            rec["axes"]["method"] = "<b>cwd</b>"
    root = tmp_path_factory.mktemp("html")
    write(root / "results", records)
    assert main(["report", str(root / "results"), "--out", str(root / "report")]) == 0
    return root / "report" / "index.html", records


def _open(browser: Any, path: Path) -> tuple[Any, list[str]]:
    """A page showing ``path`` and the list its console errors and failed requests go to."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors


def _table(page: Any, header: str) -> Any:
    """The first table with a header cell starting with ``header``."""
    return page.locator("table", has=page.locator("th", has_text=header)).first


def _labels(table: Any) -> list[str]:
    """The first cell of every body row."""
    return [t.strip() for t in table.locator("tbody tr td:first-child").all_inner_texts()]


def test_every_table_row_is_there_without_console_errors(browser: Any, report: Any) -> None:
    index, records = report
    page, errors = _open(browser, index)
    main_table = _table(page, "kitti / resnet18: mIoU")
    assert _labels(main_table) == ["Teacher (RGB-X)", "Baseline (none)", "<b>cwd</b>", "kd",
                                   "lix"]  # the markup-like name shows as text
    assert page.locator("b", has_text="cwd").count() == 0
    all_runs = page.locator("h2:has-text('All runs') + table")
    assert sorted(_labels(all_runs)) == sorted(r["id"] for r in records)
    assert all(img.evaluate("i => i.naturalWidth > 0") for img in page.locator("img").all())
    assert page.locator("img").count() >= 3  # CD diagram, per-class bars, curves
    assert errors == []
    page.close()


def _means(table: Any, column: int) -> list[float]:
    """The numbers a column's cells sort by (``data-v``), top to bottom, where set."""
    cells = table.locator(f"tbody tr td:nth-child({column})").all()
    values = [c.get_attribute("data-v") for c in cells]
    return [float(v) for v in values if v is not None]


def test_clicking_a_header_sorts_the_rows(browser: Any, report: Any) -> None:
    page, errors = _open(browser, report[0])
    table = _table(page, "kitti / resnet18: mIoU")
    header = table.locator("th", has_text="kitti / resnet18: mIoU")
    header.click()
    up = _means(table, 2)
    header.click()
    down = _means(table, 2)
    expected = sorted([82.0, *(np.mean(v) for v in KITTI.values()), 74.1])
    assert up == pytest.approx(expected) and down == pytest.approx(expected[::-1])
    assert _labels(table)[0] == "Teacher (RGB-X)" and _labels(table)[-1] == "<b>cwd</b>"
    table.locator("th", has_text="Method").click()
    assert _labels(table) == sorted(_labels(table), key=str.casefold)  # localeCompare
    assert errors == []
    page.close()


def test_a_cell_opens_its_run_page(browser: Any, report: Any) -> None:
    index, records = report
    page, errors = _open(browser, index)
    row = _table(page, "kitti / resnet18: mIoU").locator("tbody tr", has_text="kd").first
    row.locator("a", has_text="seed 0").first.click()
    page.wait_for_load_state("load")
    kd0 = next(r for r in records if r["axes"]["method"] == "kd" and r["axes"]["seed"] == 0
               and r["axes"]["dataset"] == "kitti")
    assert page.url.endswith(f"runs/{kd0['id']}.html")
    assert page.locator("h1").inner_text() == f"Run {kd0['id']}"
    assert page.locator("svg polyline").count() == 4  # total, ce and kd losses; eval mIoU
    assert "Evaluation protocol" in page.content() and "Resolved config" in page.content()
    page.go_back()
    assert errors == []
    page.close()


def test_the_qualitative_figure_is_shown_or_its_absence_said(
        browser: Any, report: Any, tmp_path: Path) -> None:
    from tests.test_figure import write_results

    page, errors = _open(browser, report[0])  # the demo records have no saved weights
    lines = page.locator("h2:has-text('Qualitative figure') ~ p", has_text="no qualitative figure")
    assert lines.count() == 1 and "no saved weights of run" in lines.first.inner_text()
    assert "the 1 other data set / student cell has none either" in lines.first.inner_text()
    assert page.locator("img[alt^='qualitative figure']").count() == 0
    page.close()
    results = write_results(tmp_path) / "results"  # random weights standing in for training
    assert main(["report", str(results), "--out", str(tmp_path / "report"),
                 "--metrics", "miou"]) == 0
    page, more = _open(browser, tmp_path / "report" / "index.html")
    figure = page.locator("h2:has-text('Qualitative figure') ~ p img").first
    assert figure.get_attribute("src") == "figure_0.png"
    assert figure.get_attribute("alt") == "qualitative figure synthdrive / test_resnet"
    assert figure.evaluate("i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 50")
    assert errors == [] and more == []
    page.close()


def test_the_screenshot_is_not_blank(browser: Any, report: Any) -> None:
    from PIL import Image

    page, _ = _open(browser, report[0])
    page.set_viewport_size({"width": 1280, "height": 900})
    png = page.screenshot(full_page=False)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 10.0 and (pixels < 128).mean() > 0.005  # text and rules, not a fill
    page.close()


@pytest.mark.slow
def test_the_page_of_a_thousand_runs_opens_in_under_3_s(browser: Any, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    try:
        from aggregate import build
    finally:
        sys.path.pop(0)
    from kdbench.report.render.report import ReportOptions, write_report

    assert build(tmp_path / "results", 1000, 20) == 1000
    write_report(tmp_path / "results", tmp_path / "report", ReportOptions(metrics=("miou",)))
    index = tmp_path / "report" / "index.html"
    best = float("inf")
    for _ in range(3):
        page = browser.new_page()
        t0 = time.perf_counter()
        page.goto(index.as_uri(), wait_until="load")
        best = min(best, time.perf_counter() - t0)
        rows = page.locator("h2:has-text('All runs') + table tbody tr").count()
        page.close()
    assert rows == 1000
    assert best < 3.0
    shutil.rmtree(tmp_path / "results")
