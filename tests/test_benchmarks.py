"""The benchmarks: every script parses its options with the shared ``--json`` flag, and the
cheap ones, run in a tiny mode, print their text and write the same text and their figures as
JSON (command, options, machine) beside it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))
TINY = {
    "aggregate": ["--runs", "1", "--history", "2"],
    "harness_overhead": ["--backbone", "test_resnet", "--steps", "1", "--batch", "2",
                         "--size", "32", "64"],
    "data_speed": ["--samples-small", "2", "--samples-large", "1"],
}
"""Arguments that make a benchmark end in seconds."""
FIGURES = {
    "aggregate": {"records", "load_cached_s", "tables_s"},
    "harness_overhead": {"none", "kd"},
    "data_speed": {"64x128 synthdrive (depth)", "256x512 png decode + normals"},
}
"""Figures each tiny run must report."""


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a script would see it (its folder on the path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_there_are_fourteen_benchmarks_and_tiny_modes_name_real_ones() -> None:
    assert len(SCRIPTS) == 14, SCRIPTS
    assert set(TINY) <= set(SCRIPTS) and set(FIGURES) == set(TINY)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_parses_the_shared_json_flag(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load(name, monkeypatch)
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith(f"usage: benchmarks/{name}.py") and "--json JSON" in usage


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_a_tiny_run_writes_its_text_and_figures_as_json(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = [*TINY[name], "--json", str(tmp_path / "out.json")]
    load(name, monkeypatch).main(argv)
    printed = capsys.readouterr().out.splitlines()
    document = json.loads((tmp_path / "out.json").read_text())
    assert printed[-1] == f"figures written to {tmp_path / 'out.json'}"
    assert document["text"] == printed[:-1] and len(printed) > 1
    assert document["benchmark"] == name
    assert document["command"] == " ".join(["python", f"benchmarks/{name}.py", *argv])
    assert FIGURES[name] <= set(document["results"]), document["results"]
    assert {"date", "cpu", "cpus", "torch", "python"} <= set(document["machine"])
    assert document["machine"]["cpus"] >= 1 and "json" not in document["options"]
