"""End-to-end runs on tiny synthdrive data: determinism, resume, failures, every method."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from kdbench.config import RunSpec, load_suite
from kdbench.config.stages import with_stages
from kdbench.registry import METHODS
from kdbench.results.store import RunStore
from kdbench.train.run import train_run
from tests.suites import tiny

TINY = tiny()


def tiny_suite(tmp_path: Path, **changes: object):  # noqa: ANN201
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return load_suite(path)


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so train_run does not turn it into a failed record."""


def interrupt_after(step: int):  # noqa: ANN201
    def progress(spec: RunSpec, info: dict) -> None:
        if info["step"] >= step:
            raise Interrupt

    return progress


@pytest.fixture(scope="module")
def teacher_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A results folder holding the tiny suite's trained teacher."""
    tmp = tmp_path_factory.mktemp("teacher")
    suite = tiny_suite(tmp)
    results = tmp / "results"
    (teacher,) = suite.teachers
    assert train_run(teacher, results)["status"] == "complete"
    return results, suite


@pytest.mark.slow
def test_same_run_twice_gives_identical_metrics(tmp_path: Path, teacher_results) -> None:  # noqa: ANN001
    results, suite = teacher_results
    kd = next(s for s in suite.students if s.method == "kd")
    first = train_run(kd, results)
    other = tmp_path / "again"
    (other / "runs").mkdir(parents=True)
    teacher_dir = RunStore(results).run_dir(kd.teacher_id)
    os.symlink(teacher_dir, other / "runs" / kd.teacher_id)
    second = train_run(kd, other)
    assert first["status"] == second["status"] == "complete"
    assert first["metrics"] == second["metrics"]
    curves = [RunStore(r).history(kd.id) for r in (results, other)]
    assert [h["loss"] for h in curves[0]] == [h["loss"] for h in curves[1]]


@pytest.mark.slow
@pytest.mark.parametrize(  # dwld: statistics; adv: D's own Adam, or SGD with the penalty
    ("name", "options"),
    [("kd", {}), ("dwld", {}), ("adv", {}), ("adv", {"form": "official"})],
    ids=["kd", "dwld", "adv", "adv-official"],
)
def test_a_resumed_run_equals_the_uninterrupted_one(
    tmp_path: Path, teacher_results, name: str, options: dict  # noqa: ANN001
) -> None:
    results, suite = teacher_results
    kd = next(s for s in suite.students if s.method == "kd")
    if name != "kd":
        kd = RunSpec(**{**kd.__dict__, "method": name, "method_terms": ((name, options),)})
    reference = train_run(kd, results)
    other = tmp_path / "resumed"
    (other / "runs").mkdir(parents=True)
    os.symlink(RunStore(results).run_dir(kd.teacher_id), other / "runs" / kd.teacher_id)
    with pytest.raises(Interrupt):
        train_run(kd, other, progress=interrupt_after(4))
    store = RunStore(other)
    assert store.status(kd.id) == "interrupted"  # its record says running, no lease holds it
    assert store.checkpoint_path(kd.id).exists()
    resumed = train_run(kd, other)
    assert resumed["resumed_from"] == [2]  # killed at step 4's log line, before its checkpoint
    assert resumed["metrics"] == reference["metrics"]
    assert store.history(kd.id) == RunStore(results).history(kd.id)  # the loss window too
    assert not store.checkpoint_path(kd.id).exists()
    assert [s["step"] for s in resumed["sessions"]] == [0, 2]


@pytest.mark.slow
def test_a_complete_run_is_not_trained_again(teacher_results) -> None:  # noqa: ANN001
    results, suite = teacher_results
    (teacher,) = suite.teachers
    path = RunStore(results).record_path(teacher.id)
    before = path.stat().st_mtime_ns
    assert train_run(teacher, results)["status"] == "complete"
    assert path.stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_garbage_checkpoint_is_moved_aside_and_the_run_retrained(
    tmp_path: Path, teacher_results, capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    results, suite = teacher_results
    (teacher,) = suite.teachers
    store = RunStore(tmp_path)
    store.checkpoint_path(teacher.id).parent.mkdir(parents=True)
    store.checkpoint_path(teacher.id).write_bytes(b"not a checkpoint")
    record = train_run(teacher, tmp_path)
    assert record["status"] == "complete" and record["resumed_from"] == []
    assert record["metrics"] == RunStore(results).load(teacher.id)["metrics"]
    aside = store.checkpoint_path(teacher.id).with_name("checkpoint.pt.corrupt")
    assert aside.read_bytes() == b"not a checkpoint"
    assert "corrupt or unreadable checkpoint" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in METHODS.names() if n != "none"])
def test_every_method_trains_end_to_end(name: str, teacher_results) -> None:  # noqa: ANN001
    results, suite = teacher_results
    kd = next(s for s in suite.students if s.method == "kd")
    stage = METHODS.get(name).stage  # a method's stage (maskd's tokens) runs first, 2 steps
    options = METHODS.get(name).resolve_options({stage.steps: 2} if stage else {})
    spec = RunSpec(**{**kd.__dict__, "method": name, "method_terms": ((name, options),),
                      "train": {**kd.train, "steps": 3, "checkpoint_every": 100}})
    spec, stages = with_stages(spec, suite.teachers[0])
    assert all(train_run(s, results)["status"] == "complete" for s in stages)
    record = train_run(spec, results)
    assert record["status"] == "complete", record.get("traceback")
    last = RunStore(results).history(spec.id)[-1]
    losses = last["losses"]
    assert "ce" in losses and len(losses) >= 2
    if name in ("dwld", "lix"):  # the controller's weight statistics reach the history
        assert last["statistics"]["w_t_mean"] == pytest.approx(1.0, abs=1e-5)
        assert {"w_n_max", "w_t_spearman"} <= set(last["statistics"])
    else:
        assert "statistics" not in last
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert record["extra_params"] >= 0 and record["metrics"]["miou"] is not None
    cost = record["cost"]
    parts = cost["flops_per_step"]
    assert parts["student"] > 0 and parts["teacher_forward"] > 0
    assert parts["total"] == parts["student"] + parts["teacher_forward"] + parts["loss"]
    assert cost["steps"] == 3 and cost["flops"] == 3 * parts["total"]
    assert cost["step_s_median"] > 0 and cost["device_hours"] > 0


def kdbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdbench.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_runs_a_suite_then_skips_it_and_resumes_after_a_kill(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 40,
                                                        "checkpoint_every": 5}}))
    results = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "kdbench.cli", "run", str(suite),
                             "--results", str(results)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(results.glob("runs/*/checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(results.glob("runs/*/checkpoint.pt")), "no checkpoint appeared"

    done = kdbench("run", str(suite), "--results", str(results), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = list(RunStore(results))
    assert len(records) == 3 and all(r["status"] == "complete" for r in records)
    assert any(r["resumed_from"] for r in records)
    assert "none" in done.stdout and "kd" in done.stdout  # the closing table

    mtimes = {p: p.stat().st_mtime_ns for p in results.glob("runs/*/record.json")}
    again = kdbench("run", str(suite), "--results", str(results), cwd=tmp_path)
    assert again.returncode == 0
    assert "3 complete, 0 to run" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


@pytest.mark.slow
def test_cli_exit_codes_and_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "train": {"stepz": 3}}))
    out = kdbench("run", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "train.stepz: unknown key" in out.stderr
    dry = kdbench("run", str(bad), "--dry-run", "--set", "train={steps: 3}", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert len(dry.stdout.strip().splitlines()) == 3  # teacher + none + kd
    assert not (tmp_path / "results").exists()


def test_help_does_not_import_torch() -> None:
    code = ("import sys\nfrom kdbench.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'pandas' not in sys.modules, 'pandas imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "run" in out.stdout and "table" in out.stdout
