"""The HTML page set of ``kdbench report`` without a browser: escaping, offline links, SVG maths."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kdbench.cli import main
from kdbench.report.render import svg
from tests.report.records import record, teacher_id, write
from tests.report.test_render import HOSTILE

MARKUP = ["<script>alert(1)</script>", "<b>bold</b>", '"quoted" & \'single\'']
TAGS = {"html", "head", "meta", "title", "style", "body", "script", "h1", "h2", "h3", "h4", "p",
        "a", "table", "thead", "tbody", "tr", "th", "td", "span", "strong", "u", "sup", "ul",
        "li", "img", "dl", "dt", "dd", "pre", "svg", "rect", "text", "polyline"}


class Page(HTMLParser):
    """Tags, links and text of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("href", "src") and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report whose method names, classes and errors hold markup and special characters."""
    root = tmp_path_factory.mktemp("html")
    recs = [record("teacher", s, 80.0 + s, per_class={"<road>": 90.0}) for s in range(2)]
    for i, name in enumerate(["none", *HOSTILE, *MARKUP]):
        for s in range(2):
            recs.append(record(name, s, 70.0 + i * 0.3 + s, teacher=teacher_id(seed=s),
                               per_class={"<road>": 80.0 + i},
                               history=[{"step": 0, "loss": 1.0}, {"step": 5, "loss": 0.5}]))
    recs.append(record("<i>oom</i>", 0, None, status="failed", error="<img src=x onerror=1>"))
    write(root / "results", recs)
    assert main(["report", str(root / "results"), "--out", str(root / "report")]) == 0
    return root / "report"


def test_every_user_string_is_text_never_markup(report: Path) -> None:
    pages = [report / "index.html", *sorted((report / "runs").glob("*.html"))]
    assert len(pages) == 1 + 2 + 2 * (1 + len(HOSTILE) + len(MARKUP)) + 1
    for path in pages:
        page = _parse(path)
        assert set(page.tags) <= TAGS, path
        assert page.tags.count("script") == 1 and "b" not in page.tags and "i" not in page.tags
    index = _parse(report / "index.html")
    text = "".join(index.text)
    for name in [*HOSTILE, *MARKUP, "<i>oom</i>", "<img src=x onerror=1>", "<road>"]:
        assert name in text


def test_the_pages_link_only_to_files_of_the_report(report: Path) -> None:
    for path in [report / "index.html", *(report / "runs").glob("*.html")]:
        for link in _parse(path).links:
            assert not re.match(r"[a-z]+:", link), link  # no http:, file:, javascript:
            assert (path.parent / link).resolve().is_file(), (path, link)
    index = _parse(report / "index.html")
    runs = {p.stem for p in (report / "runs").glob("*.html")}
    linked = {Path(link).stem for link in index.links if link.startswith("runs/")}
    assert linked == runs  # every run page is reachable from the index


def test_line_chart_maps_points_by_its_formula() -> None:
    chart = svg.line_chart([("a", [0, 10, 20], [1.0, 3.0, float("nan")]),
                            ("b", [0, 20], [2.0, 2.0])], "t", "y", width=200, height=100)
    lines = re.findall(r'points="([^"]+)"', chart)
    pw, ph = 200 - 64 - 12, 100 - 24 - 36
    # x in [0, 20], y in [1, 3]: px = 64 + x/20·pw, py = 24 + (1 − (y − 1)/2)·ph
    assert lines[0] == f"64.0,{24 + ph:.1f} {64 + pw / 2:.1f},24.0"
    assert lines[1] == f"64.0,{24 + ph / 2:.1f} {64 + pw:.1f},{24 + ph / 2:.1f}"
    assert svg.line_chart([("a", [0], [float("nan")])], "t", "y") == ""
    log = svg.line_chart([("a", [0, 1], [10.0, 1000.0])], "t", "y", log=True)
    assert ">1e+03<" in log and ">10<" in log and "(log scale)" in log


def test_a_run_page_shows_the_records_best_evaluation() -> None:
    from kdbench.report.render.site import run_page

    rec = record("kd", 0, 70.0)
    rec["best_val"] = {"step": 40, "miou": 71.5}  # where the trainer writes it
    best = run_page(rec, []).split("<h2>Best periodic evaluation</h2>")[1].split("<h2>")[0]
    assert "<dt>step</dt><dd>40</dd>" in best and "<dt>miou</dt><dd>71.5</dd>" in best
    assert "(none recorded)" in run_page(record("kd", 0, 70.0), []).split(
        "<h2>Best periodic evaluation</h2>")[1].split("<h2>")[0]
