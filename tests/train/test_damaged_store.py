"""A damaged results folder: truncated or incomplete records, unwritable folders, a full disk.

Each ends as the run store promises: reported per run, never stopping the rest of the suite,
one line and exit 2 for storage problems, no temporary file left, nothing lost of other runs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.results import files
from kdbench.results.store import RunStore
from tests.results.small_disk import small_file_system
from tests.suites import TRAIN, tiny

SUITE = tiny(name="damaged", train={**TRAIN, "steps": 4})


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The suite file and a results folder holding its three complete runs."""
    tmp = tmp_path_factory.mktemp("damaged")
    suite = tmp / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    assert main(["run", str(suite), "--results", str(tmp / "done")]) == 0
    return suite, tmp / "done"


def copy_of(results: Path, into: Path) -> Path:
    import shutil

    shutil.copytree(results, into)
    return into


def run_ids(suite: Path) -> dict[str, str]:
    return {s.method: s.id for s in load_suite(suite).runs}


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda text: text[: len(text) // 2], "not a readable run record"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "metrics"}),
         "complete without metrics.miou"),
        (lambda text: json.dumps({"id": json.loads(text)["id"]}), "incomplete record: no kind"),
        (lambda text: "[1, 2]", "expected a JSON object"),
    ],
    ids=["truncated", "no-metrics", "no-status", "not-an-object"],
)
def test_a_damaged_record_is_reported_left_out_and_retrained(
    tmp_path: Path, finished, damage, reason: str, capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    suite, done = finished
    results = copy_of(done, tmp_path / "res")
    kd = run_ids(suite)["kd"]
    store = RunStore(results)
    record = store.record_path(kd)
    good = json.loads(record.read_text())
    record.write_text(damage(record.read_text()))
    capsys.readouterr()

    assert main(["status", str(suite), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith(kd)]
    assert "corrupt" in line and reason in line
    assert [x.split()[1] for x in out.splitlines()].count("complete") == 2  # the others

    assert main(["table", str(results)]) == 0
    table = capsys.readouterr().out
    assert f"left out, unreadable: {kd}" in table and "| kd" not in table
    assert "Baseline (none)" in table

    assert main(["run", str(suite), "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert f"run {kd}: " in err and "training again" in err
    assert store.load(kd)["metrics"] == good["metrics"]  # retrained, deterministically
    assert list(store.run_dir(kd).glob("record.json.corrupt-*"))  # the bad file kept aside


@pytest.mark.slow
def test_an_unwritable_results_folder_is_one_line_and_exit_2(
    tmp_path: Path, finished, capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    suite, _ = finished
    if os.geteuid() == 0:  # root writes anywhere: a file where the folder should be instead
        results = tmp_path / "a-file"
        results.write_text("")
        target = results
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        results = locked / "results"
        target = locked
    code = main(["run", str(suite), "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(target) in err and "cannot write" in err
    assert not list(tmp_path.rglob("*.tmp"))


class FullDisk:
    """``open`` for the run store whose files take ``budget`` bytes in all, then ENOSPC."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def __call__(self, fd: int, mode: str = "r"):  # noqa: ANN204
        disk = self
        real = open(fd, mode)  # noqa: SIM115

        class File:
            def __getattr__(self, name: str):  # noqa: ANN204
                return getattr(real, name)

            def __enter__(self):  # noqa: ANN204
                return self

            def __exit__(self, *exc: object) -> None:
                real.close()

            def write(self, data: bytes) -> int:
                disk.budget -= len(data)
                if disk.budget < 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real.write(data)

        return File()


@pytest.mark.slow
@pytest.mark.parametrize("budget", [2_000, 200_000])
def test_a_full_disk_is_one_line_exit_2_and_leaves_no_temporary_file(
    tmp_path: Path, finished, budget: int,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    suite, done = finished
    results = copy_of(done, tmp_path / "res")
    store = RunStore(results)
    ids = run_ids(suite)
    kept = {m: store.load(i) for m, i in ids.items() if m != "kd"}
    for path in store.run_dir(ids["kd"]).iterdir():
        path.unlink()  # kd must be trained again
    capsys.readouterr()
    monkeypatch.setattr(files, "open", FullDisk(budget), raising=False)
    code = main(["run", str(suite), "--results", str(results)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("kdbench: error: ") and "no space left on device" in err[-1]
    assert str(results) in err[-1]
    assert not list(results.rglob("*.tmp")), "a temporary file was left"
    assert {m: store.load(ids[m]) for m in kept} == kept  # nothing lost of the others
    assert store.status(ids["kd"]) != "complete"
    monkeypatch.undo()
    assert main(["run", str(suite), "--results", str(results)]) == 0  # space again: it finishes
    assert store.load(ids["kd"])["status"] == "complete"


def used_bytes(folder: Path) -> int:
    """What the files under ``folder`` take on a file system of 4 KiB pages."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_exit_2_and_leaves_no_partial_file(
    tmp_path: Path, finished, capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    """On a tmpfs holding the finished runs and half of kd's weights, torch.save meets the full
    disk (it says so in its own words: "unexpected pos ..."); the run ends as promised."""
    suite, done = finished
    ids = run_ids(suite)
    weights = (RunStore(done).run_dir(ids["kd"]) / "model.pt").stat().st_size
    kept = {m: RunStore(done).load(i) for m, i in ids.items() if m != "kd"}
    size = used_bytes(done) + weights // 2 + 8 * 4096  # room for records, not for kd's weights
    with small_file_system(tmp_path / "disk", size) as disk:
        results = copy_of(done, disk / "res")
        store = RunStore(results)
        shutil.rmtree(store.run_dir(ids["kd"]))  # kd must be trained again
        capsys.readouterr()
        code = main(["run", str(suite), "--results", str(results)])
        err = capsys.readouterr().err.strip().splitlines()
        print(f"on a {size}-byte tmpfs: exit {code}: {err[-1]}")
        assert code == 2
        assert err[-1].startswith("kdbench: error: ") and "no space left" in err[-1]
        assert str(store.run_dir(ids["kd"])) in err[-1]
        assert not list(results.rglob("*.tmp")), "a partial file was left"
        assert not (store.run_dir(ids["kd"]) / "model.pt").exists()
        assert {m: store.load(ids[m]) for m in kept} == kept  # finished records untouched
        assert store.status(ids["kd"]) != "complete"
