"""Tables per suite, stale records, mixed recipes footnoted; a finished suite without torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdbench.cli import main
from kdbench.config import RunSpec
from kdbench.launch.base import failed_record
from kdbench.results.store import RunStore
from kdbench.suite_cache import load_suite_cached
from tests.suites import tiny

ROOT = Path(__file__).resolve().parents[1]
SUITE = tiny(name="recipes", seeds=[0, 1], train={"steps": 4, "batch_size": 4})


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_suite(tmp_path: Path, name: str, **train: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "train": {**SUITE["train"], **train}}))
    return path


def record(spec: RunSpec, miou: float | None) -> dict[str, Any]:
    """A stored record of ``spec``: complete with ``miou``, or failed when ``miou`` is None."""
    rec = failed_record(spec, "RuntimeError: boom")
    if miou is not None:
        rec.update(status="complete", error=None,
                   metrics={"miou": miou, "mfsc": miou, "pixel_acc": miou})
    return rec


def fill(results: Path, suite: Path, miou: dict[str, float | None]) -> list[RunSpec]:
    """Records for every run of ``suite``: ``miou[method]`` per method (+ seed), teachers 80."""
    store = RunStore(results)
    runs = load_suite_cached(suite).runs
    for spec in runs:
        value = miou.get(spec.method, 80.0)
        store.write(record(spec, None if value is None else value + spec.seed))
    return runs


@pytest.mark.slow
def test_an_old_recipe_is_footnoted_or_excluded_never_merged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "res"
    old = write_suite(tmp_path, "old")
    new = write_suite(tmp_path, "new", lr=0.05)  # the recipe changed ...
    fill(results, old, {"none": 60.0, "kd": 61.0})
    new_runs = fill(results, new, {"none": None, "kd": None})  # ... and its runs failed
    capsys.readouterr()

    assert main(["table", str(results)]) == 0
    merged = capsys.readouterr().out
    kd_line = next(line for line in merged.splitlines() if line.startswith("| kd"))
    assert "61.5" in kd_line and "<sup>" in kd_line  # the old value, with a footnote mark
    assert "mixes runs of different resolved recipes" in merged

    assert main(["table", str(results), "--suite", str(new)]) == 0
    only_new = capsys.readouterr().out
    assert "61.5" not in only_new and "mixes runs" not in only_new
    kd_line = next(line for line in only_new.splitlines() if line.startswith("| kd"))
    assert "failed" in kd_line  # the new kd runs failed: nothing older stands in
    teacher_ids = {s.id for s in new_runs if s.kind == "teacher"}
    assert teacher_ids  # the new teachers are the new suite's (steps changed)

    assert main(["report", str(results), "--suite", str(new), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "61.5" not in report

    assert main(["status", str(new), "--results", str(results)]) == 0
    status = capsys.readouterr().out.splitlines()
    stale = [line for line in status if line.split()[1] == "stale"]
    assert len(stale) == 6  # the old recipe's 2 teachers, 2 baselines and 2 kd runs


def test_the_closing_table_shows_only_the_suites_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "res"
    fill(results, write_suite(tmp_path, "old"), {"none": 60.0, "kd": 61.0})
    new = write_suite(tmp_path, "new", steps=8)
    fill(results, new, {"none": 62.0, "kd": 64.0})
    capsys.readouterr()
    assert main(["run", str(new), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "61.5" not in out and "64.5" in out and "mixes runs" not in out
    assert out.count("mIoU (%), mean ± sample std") == 1  # one caption


def shared_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A results folder where suite "quick" trained the teachers and the baseline and suite
    "ablation" (the same recipe, one method more) trained only its kd runs: the teachers' and
    the baseline's records still name "quick"."""
    results = tmp_path / "res"
    quick, ablation = tmp_path / "quick.yaml", tmp_path / "ablation.yaml"
    quick.write_text(yaml.safe_dump({**SUITE, "name": "quick", "methods": ["none"]}))
    ablation.write_text(yaml.safe_dump({**SUITE, "name": "ablation", "methods": ["none", "kd"]}))
    shared = {s.id for s in fill(results, quick, {"none": 60.0})}
    store = RunStore(results)
    for spec in load_suite_cached(ablation).runs:
        if spec.id not in shared:
            assert spec.method == "kd"  # the suites share every other run by id
            store.write(record(spec, 63.0 + spec.seed))
    return results, ablation


def cells(markdown: str) -> dict[str, str]:
    """Mean ± std of the first Markdown table's student rows (teacher and header left out)."""
    found: dict[str, str] = {}
    for line in markdown.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) > 1 and " ± " in parts[1] and not parts[0].startswith("Teacher"):
            found.setdefault(parts[0], re.search(r"[\d.]+ ± [\d.]+", parts[1]).group(0))
    return found


def test_a_suite_tabulates_the_runs_it_shares_with_another_as_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, ablation = shared_runs(tmp_path)
    capsys.readouterr()
    assert main(["table", str(results), "--suite", str(ablation)]) == 0
    assert cells(capsys.readouterr().out) == {"Baseline (none)": "60.5 ± 0.7", "kd": "63.5 ± 0.7"}
    assert main(["run", str(ablation), "--results", str(results)]) == 0  # nothing to train
    assert cells(capsys.readouterr().out) == {"Baseline (none)": "60.5 ± 0.7", "kd": "63.5 ± 0.7"}
    assert main(["table", str(results)]) == 2  # the whole folder holds two suites' records
    assert "differ in suite (ablation, quick)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_suites_report_has_one_section_with_the_runs_it_shares(tmp_path: Path) -> None:
    results, ablation = shared_runs(tmp_path)
    out = tmp_path / "rep"
    assert main(["report", str(results), "--suite", str(ablation), "--out", str(out),
                 "--metrics", "miou"]) == 0
    report = (out / "report.md").read_text()
    assert "## Suite" not in report
    assert cells(report) == {"Baseline (none)": "60.5 ± 0.7", "kd": "63.5 ± 0.7"}


NO_TORCH = """
import sys
from kdbench.cli import main
code = main(sys.argv[1:])
assert code == 0, code
heavy = sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules)
assert not heavy, f"imported {heavy}"
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "status"])
def test_a_finished_suite_answers_without_importing_torch(
    tmp_path: Path, own_cache: Path, command: str
) -> None:
    results = tmp_path / "res"
    suite = write_suite(tmp_path, "done")
    fill(results, suite, {"none": 60.0, "kd": 61.0})  # also fills the resolved-suite cache
    env = {**os.environ, "KDBENCH_CACHE": str(own_cache), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", NO_TORCH, command, str(suite), "--results",
                          str(results)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "| kd" in out.stdout if command == "run" else "complete" in out.stdout


def test_the_resolved_suite_cache_is_keyed_by_the_overrides(
    tmp_path: Path, own_cache: Path
) -> None:
    suite = write_suite(tmp_path, "s")
    first = [s.id for s in load_suite_cached(suite).runs]
    assert len(list(own_cache.glob("*.json"))) == 1
    assert [s.id for s in load_suite_cached(suite).runs] == first  # a hit
    assert [s.id for s in load_suite_cached(suite, ["train.steps=5"]).runs] != first
    assert len(list(own_cache.glob("*.json"))) == 2


def test_a_cache_hit_keeps_the_tuning_trials(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "tune": {"trials": 2, "split": 0.25}}))
    first = load_suite_cached(path)
    assert first.trials and [s.to_dict() for s in load_suite_cached(path).runs] == [
        s.to_dict() for s in first.runs
    ]


def test_a_data_folder_removed_after_caching_is_still_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "kitti").mkdir(parents=True)
    monkeypatch.setenv("KDBENCH_DATA", str(data))
    suite = ROOT / "suites" / "kitti.yaml"
    assert main(["run", str(suite), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    (data / "kitti").rmdir()
    capsys.readouterr()
    assert main(["run", str(suite), "--dry-run", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kitti: data root" in err and "not found" in err
