"""``kdbench figure``: run choice, image choice by disagreement, palette, PNG/PDF output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.data.base import IGNORE_INDEX
from kdbench.errors import KdbenchError
from kdbench.figure import choose_runs, disagreement, make_figure, palette, weights_file
from kdbench.results.store import RunStore
from kdbench.train import checkpoint
from kdbench.train.build import build_datasets, build_model

SUITE = {
    "name": "figure",
    "seeds": [0, 1],
    "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 8, "eval_samples": 6}},
    "students": ["test_resnet"],
    "teacher": {"kind": "intermediate"},
    "methods": ["none", "kd"],
    "train": {"steps": 2, "batch_size": 2},
}


def write_results(root: Path) -> Path:
    """Complete records of the tiny suite under ``root/results``, each with random weights
    standing in for training; returns ``root``."""
    (root / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    store = RunStore(root / "results")
    for i, spec in enumerate(load_suite(root / "suite.yaml").runs):
        evaluation = build_datasets(spec)[1]
        torch.manual_seed(i)
        model = build_model(spec, evaluation.num_classes, evaluation.x_channels, weights=False)
        store.run_dir(spec.id).mkdir(parents=True)
        checkpoint.save(store.run_dir(spec.id) / "model.pt", {"model": model.state_dict()})
        record = {
            "id": spec.id,
            "kind": spec.kind,
            "status": "complete",
            "axes": spec.axes,
            "config": spec.to_dict(),
            "metrics": {"miou": 50.0},
        }
        store.record_path(spec.id).write_text(json.dumps(record))
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`write_results` once for the module."""
    return write_results(tmp_path_factory.mktemp("figure"))


def test_disagreement_is_the_spread_of_per_image_accuracy() -> None:
    label = np.array([[0, 1], [1, IGNORE_INDEX]])
    right, wrong = label.copy(), 1 - np.clip(label, 0, 1)
    maps = [[right, right], [wrong, right]]  # two runs, two images
    assert disagreement(maps, [label, label]).tolist() == [1.0, 0.0]


def test_palette_uses_cityscapes_colours_by_name_and_black_for_ignore() -> None:
    colours = palette(["road", "unknown thing", "car"])
    assert colours.shape == (4, 3)
    assert tuple(colours[0]) == (128, 64, 128) and tuple(colours[2]) == (0, 0, 142)
    assert tuple(colours[-1]) == (0, 0, 0)
    assert len({tuple(c) for c in palette([f"c{i}" for i in range(30)])[:-1]}) == 20


def test_columns_are_teacher_baseline_and_methods_of_one_seed(results: Path) -> None:
    records = list(RunStore(results / "results"))
    columns = choose_runs(records, None, None)
    assert [c.title for c in columns] == ["teacher", "baseline", "kd"]
    assert {c.record["axes"]["seed"] for c in columns} == {0}
    assert [c.title for c in choose_runs(records, ["kd"], 1)][1:] == ["kd"]
    with pytest.raises(KdbenchError, match="no complete run of method 'dkd'"):
        choose_runs(records, ["dkd"], None)
    with pytest.raises(KdbenchError, match="seed 7 is not complete"):
        choose_runs(records, None, 7)


@pytest.mark.slow
def test_png_shows_the_most_disputed_images(results: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "figure.png"
    shown = make_figure(results / "results", out, images=2, errors=True)
    assert len(shown) == 2 and len(set(shown)) == 2
    image = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert image.std() > 10  # drawn, not blank
    assert make_figure(results / "results", tmp_path / "ids.png", ids=[5, 0]) == [5, 0]
    with pytest.raises(KdbenchError, match="--ids: 6 is not an index of the 6"):
        make_figure(results / "results", tmp_path / "bad.png", ids=[6])


@pytest.mark.slow
def test_pdf_is_a_figure_latex_can_include(results: Path, tmp_path: Path) -> None:
    make_figure(results / "results", tmp_path / "qualitative.pdf", images=1)
    assert (tmp_path / "qualitative.pdf").read_bytes().startswith(b"%PDF")
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (bash .ci/run installs TeX Live)")
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\\usepackage{graphicx}\\begin{document}"
        "\\begin{figure}\\includegraphics[width=\\linewidth]{qualitative.pdf}"
        "\\caption{Qualitative results.}\\end{figure}\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def test_output_must_be_png_or_pdf(results: Path, tmp_path: Path) -> None:
    with pytest.raises(KdbenchError, match=r"expected a \.png or \.pdf"):
        make_figure(results / "results", tmp_path / "f.jpg")


def test_best_checkpoint_weights_are_those_of_a_best_evaluation_that_won(
    results: Path, tmp_path: Path
) -> None:
    store = RunStore(results / "results")
    rec = next(r for r in store if r["kind"] == "student")
    rec = {**rec, "metrics": {"miou": 50.0}, "best_val": {"step": 2, "miou": 51.0}}
    assert weights_file(store, rec, "best").name == "model_best.pt"
    assert weights_file(store, rec, "final").name == "model.pt"
    rec["metrics"]["miou"] = 51.0  # the final model wins ties, as in the tables
    assert weights_file(store, rec, "best").name == "model.pt"
    rec["best_val"] = None  # no periodic evaluation
    assert weights_file(store, rec, "best").name == "model.pt"
    with pytest.raises(KdbenchError, match="--checkpoint 'last': expected final or best"):
        make_figure(results / "results", tmp_path / "f.png", checkpoint_name="last")


def test_missing_weights_are_named_before_any_data_is_built(results: Path, tmp_path: Path) -> None:
    copy = tmp_path / "results"
    shutil.copytree(results / "results", copy)
    kd = next(r for r in RunStore(copy) if r["axes"]["method"] == "kd" and r["axes"]["seed"] == 0)
    (RunStore(copy).run_dir(kd["id"]) / "model.pt").unlink()
    with pytest.raises(KdbenchError, match=f"no saved weights of run {kd['id']}/model.pt"):
        make_figure(copy, tmp_path / "f.png")


@pytest.mark.slow
def test_the_report_embeds_the_figure_or_says_in_one_line_why_not(
    results: Path, tmp_path: Path
) -> None:
    from PIL import Image

    out = tmp_path / "report"
    assert main(["report", str(results / "results"), "--out", str(out), "--metrics", "miou"]) == 0
    text = (out / "report.md").read_text()
    assert "![qualitative figure synthdrive / test\\_resnet](figure_0.png)" in text
    assert '<img src="figure_0.png"' in (out / "index.html").read_text()
    assert np.asarray(Image.open(out / "figure_0.png").convert("L"), dtype=float).std() > 10
    copy = tmp_path / "copy"
    shutil.copytree(results / "results", copy)
    for path in copy.glob("runs/*/model.pt"):
        path.unlink()
    assert main(["report", str(copy), "--out", str(tmp_path / "bare"), "--metrics", "miou"]) == 0
    lines = [
        line
        for line in (tmp_path / "bare" / "report.md").read_text().splitlines()
        if "qualitative figure" in line
    ]
    assert len(lines) == 1 and "no qualitative figure (figure: no saved weights of run" in lines[0]
    assert not (tmp_path / "bare" / "figure_0.png").exists()
    skip = ["report", str(results / "results"), "--out", str(tmp_path / "skip"), "--no-figure"]
    assert main([*skip, "--metrics", "miou"]) == 0
    assert "Qualitative figure" not in (tmp_path / "skip" / "report.md").read_text()
