"""Markdown, CSV and LaTeX output: marks in the right cells, escaping, and pdflatex compiling."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdbench.report import load_results
from kdbench.report.cells.tables import TableSpec, build_tables
from kdbench.report.render import latex, markdown
from kdbench.report.render.formats import render
from tests.report.records import KITTI, demo_records, record, teacher_id, write

HOSTILE = ["a&b", "50%", "x_y", "#1", "back\\slash", "$x$", "{br}", "til~de", "hat^", "<|>"]


def _sd(values: list[float]) -> str:
    """The sample std as a table shows it."""
    return f"{np.std(values, ddof=1):.1f}"


@pytest.fixture
def tables(tmp_path: Path):
    """The mIoU table (with the gap column) of the demo records."""
    frame = load_results(write(tmp_path / "results", demo_records()))
    return build_tables(frame, TableSpec(gap=True))


def _row(text: str, label: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{text}")


def test_markdown_marks_bold_underline_significance_and_counts(tables) -> None:
    text = render(tables, "markdown")
    assert _row(text, "Method")[1:5] == ["kitti / resnet18", "Δ", "gap (%)", "vkitti2 / resnet18"]
    kd = _row(text, "kd")
    # seed counts differ between the columns (3 and 2), so every cell shows n/N
    assert kd[1] == f"**74.1 ± {_sd(KITTI['kd'])}**<sup>\\*</sup> (3/3)"
    delta = np.mean(KITTI["kd"]) - 71.0
    assert kd[2] == f"+{delta:.1f}"
    assert kd[3] == f"{100 * delta / (82.0 - 71.0):.0f}"
    assert _row(text, "Baseline (none)")[1] == "<ins>71.0 ± 1.0</ins> (3/3)"
    assert _row(text, "Baseline (none)")[2] == ""  # no Δ of the baseline to itself
    cwd_mean = f"{np.mean(KITTI['cwd']):.1f}"
    assert _row(text, "cwd")[1] == f"{cwd_mean} ± {_sd(KITTI['cwd'])}<sup>†</sup> (3/3)"
    assert _row(text, "cwd")[3 + 1] == "missing<sup>a</sup>"  # no cwd run on vkitti2
    assert _row(text, "lix")[1] == "**74.1** (1/3)<sup>b</sup>"
    assert _row(text, "Teacher (RGB-X)")[1].startswith("82.0 ± 2.8")
    assert "- <sup>a</sup> 2 of 2 seeds not averaged: seeds 0, 1 have no record" in text
    assert "- <sup>b</sup> 2 of 3 seeds not averaged: seed 1 failed" in text
    assert "t-test paired by seed, Holm-corrected" in text and "α = 0.05" in text


def test_markdown_uniform_seed_counts_go_to_the_caption(tmp_path: Path) -> None:
    recs = [record(m, s, 70.0 + s + (m == "kd")) for m in ("none", "kd") for s in range(3)]
    (table,) = build_tables(load_results(write(tmp_path, recs)), TableSpec())
    text = render([table], "markdown")
    assert _row(text, "kd")[1] == "**72.0 ± 1.0**<sup>\\*</sup>"
    assert "over 3 seeds" in text


def test_markdown_escapes_table_syntax() -> None:
    assert markdown.escape("a|b*c_d") == "a\\|b\\*c\\_d"
    assert markdown.escape("<b>[x]") == "\\<b\\>\\[x\\]"


def test_csv_is_tidy_numbers(tables) -> None:
    df = pd.read_csv(io.StringIO(render(tables, "csv", with_ranks=True, power_delta=1.0)))
    kd = df[(df.method == "kd") & (df.dataset == "kitti")].iloc[0]
    assert kd["mean"] == pytest.approx(np.mean(KITTI["kd"]))
    assert kd["std"] == pytest.approx(np.std(KITTI["kd"], ddof=1))
    assert (kd["n"], kd["expected"], kd["mark"], kd["place"], kd["role"]) == (3, 3, 1, 1, "method")
    assert kd["delta"] == pytest.approx(np.mean(KITTI["kd"]) - 71.0)
    lix = df[(df.method == "lix") & (df.dataset == "kitti")].iloc[0]
    assert (lix["n"], lix["failed"], lix["missing"]) == (1, 1, 1)
    assert "seed 1 failed" in lix["note"]
    assert {"average_rank", "seeds_needed", "p_value", "p_holm", "gap_pct"} <= set(df.columns)
    assert len(df) == 5 * 2  # teacher, none, cwd, kd, lix x two columns


def test_latex_escape_replaces_each_special_character() -> None:
    cases = {
        "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
        "±": r"$\pm$", "a": "a",
    }
    for raw, escaped in cases.items():
        assert latex.escape(raw) == escaped
    assert latex.escape("\\&{}") == r"\textbackslash{}\&\{\}"  # one pass: no double escaping


def test_latex_table_uses_booktabs_and_marks(tables) -> None:
    text = render(tables, "latex")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-4}"):
        assert rule in text
    assert rf"\textbf{{74.1 $\pm$ {_sd(KITTI['kd'])}}}\textsuperscript{{*}}" in text
    assert r"\underline{71.0 $\pm$ 1.0}" in text
    assert r"\textsuperscript{$\dagger$}" in text


def _hostile_results(root: Path) -> Path:
    """Records whose names, classes and errors hold every LaTeX special character."""
    recs = []
    for dataset in ("kitti_2015", "city&scapes"):
        recs += [record("teacher", s, 80.0 + s, dataset=dataset, student="res_net",
                        per_class={"road & rail": 90.0, "50%_sky": 70.0}) for s in range(3)]
        for i, name in enumerate(["none", *HOSTILE]):
            for s in range(3):
                failed = name == "50%" and s == 2
                recs.append(record(
                    name, s, 70.0 + i * 0.3 + 0.2 * s * (i % 3), dataset=dataset,
                    student="res_net", teacher=teacher_id(dataset, "res_net", s),
                    status="failed" if failed else "complete",
                    error="OOM: 100% of {mem} used & $x^2$ ~ \\n #1 _",
                    per_class={"road & rail": 80.0 + i, "50%_sky": 60.0 + s},
                ))
    return write(root, recs)


def test_latex_with_hostile_names_compiles_with_pdflatex(tmp_path: Path) -> None:
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is required in CI (apt-get install texlive-latex-recommended)")
        pytest.skip("pdflatex is not installed")
    frame = load_results(_hostile_results(tmp_path / "results"))
    spec = TableSpec(gap=True, cell="ci", resamples=200)
    body = render(build_tables(frame, spec), "latex", with_ranks=True, power_delta=0.5)
    body += render(build_tables(frame, TableSpec(metric="per_class")), "latex")
    for name in HOSTILE:
        assert latex.escape(name) in body
    assert "Friedman" in body and "Seeds needed" in body
    doc = tmp_path / "table.tex"
    doc.write_text(latex.document(body))
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    log = (tmp_path / "table.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    assert (tmp_path / "table.pdf").stat().st_size > 0
    assert "Missing character" not in log
