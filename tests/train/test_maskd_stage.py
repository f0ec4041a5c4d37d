"""MasKD's token stage as its own kind of run, end to end on the tiny synthdrive suite.

teacher -> maskd_tokens -> maskd students, through ``train_run`` and the in-process executor:
the stage is shared by the maskd students of a teacher with the same stage options, cached,
resumable (a killed and resumed stage equals an unbroken one), recorded with its loss curve and
cost; the students read its tokens; the SLURM plan puts it between the teacher and its students;
a failed stage blocks only its students.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kdbench.config import RunSpec, load_suite
from kdbench.launch.local import LocalExecutor
from kdbench.launch.slurm import SlurmExecutor
from kdbench.results.store import RunStore
from kdbench.train.build import build_models
from kdbench.train.run import train_run
from methods.maskd import TOKENS_FILE, token_masks
from tests.launch.test_schedule import StandInTraining
from tests.suites import TRAIN, tiny

METHODS = ["none", {"maskd4": {"maskd": {"token_steps": 4}}},
           {"maskd4w2": {"maskd": {"token_steps": 4, "weight": 2.0}}},
           {"maskd6": {"maskd": {"token_steps": 6}}}]
"""Rows: two with 4 token steps (one stage), one with 6 (another)."""


def staged_suite(tmp_path: Path, **sections: object):  # noqa: ANN201
    path = tmp_path / "maskd.yaml"
    data = tiny(name="maskd", methods=METHODS, train={**TRAIN, "workers": 0}, **sections)
    path.write_text(yaml.safe_dump(data))
    return load_suite(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The tiny suite with three maskd rows, trained in process."""
    tmp = tmp_path_factory.mktemp("maskd")
    suite = staged_suite(tmp)
    results = tmp / "results"
    records = LocalExecutor(stream=io.StringIO()).run(suite.runs, results, train_run)
    assert all(r["status"] == "complete" for r in records), [r.get("error") for r in records]
    return results, suite


def test_the_suite_has_one_stage_per_teacher_and_stage_options(tmp_path: Path) -> None:
    suite = staged_suite(tmp_path)
    [teacher] = suite.teachers
    assert [s.kind for s in suite.stages] == ["maskd_tokens", "maskd_tokens"]
    assert [s.method_terms for s in suite.stages] == [
        (("maskd", {"num_tokens": 8, "token_steps": 4}),),
        (("maskd", {"num_tokens": 8, "token_steps": 6}),),
    ]
    short, longer = suite.stages
    assert short.needs == (teacher.id,) and short.teacher_id == teacher.id
    assert short.train["steps"] == 4 and short.train["lr"] == 0.1
    assert short.train["weight_decay"] == 1e-3 and short.train["schedule"] == "poly"
    students = {s.method: s for s in suite.students}
    assert students["none"].needs == ()
    maskd = [s for s in suite.students if s.method != "none"]
    assert [s.needs for s in maskd] == [
        (teacher.id, short.id), (teacher.id, short.id), (teacher.id, longer.id)
    ]
    assert suite.runs.index(short) < min(suite.runs.index(s) for s in maskd)


def test_the_stage_records_its_tokens_curve_and_cost(trained) -> None:  # noqa: ANN001
    results, suite = trained
    store = RunStore(results)
    stage = suite.stages[0]
    record = store.load(stage.id)
    assert record["kind"] == "maskd_tokens" and record["status"] == "complete"
    assert record["tokens"]["shape"] == [8, 7]  # synthdrive has 7 classes
    assert 0 <= record["metrics"]["miou"] <= 100  # the recombined teacher, evaluated
    history = store.history(stage.id)
    assert [h["step"] for h in history] == [2, 4]
    assert all(h["loss"] > 0 for h in history)
    assert record["tokens"]["final_loss"] == history[-1]["loss"]
    cost = record["cost"]
    assert cost["steps"] == 4 and cost["flops"] == 4 * cost["flops_per_step"][
        "teacher_forward_and_tokens"] > 0
    assert not store.checkpoint_path(stage.id).exists()
    saved = torch.load(store.run_dir(stage.id) / TOKENS_FILE, weights_only=True)["tokens"]
    assert saved.shape == (8, 7) and torch.isfinite(saved).all()
    assert saved.std() > 0.01 / 10  # moved from N(0, 0.01²) or kept its spread
    mtime = store.record_path(stage.id).stat().st_mtime_ns
    assert train_run(stage, results) == record  # complete: reused, not run again
    assert store.record_path(stage.id).stat().st_mtime_ns == mtime


def test_the_students_read_their_stages_tokens(trained) -> None:  # noqa: ANN001
    results, suite = trained
    store = RunStore(results)
    for student in (s for s in suite.students if s.method != "none"):
        stage_id = student.needs[1]
        saved = torch.load(store.run_dir(stage_id) / TOKENS_FILE, weights_only=True)["tokens"]
        _, _, models = build_models(student, store, torch.device("cpu"))
        torch.testing.assert_close(models.method.terms["maskd"].tokens, saved, rtol=0, atol=0)
        record = store.load(student.id)
        assert record["status"] == "complete"
        assert "maskd" in store.history(student.id)[-1]["losses"]


def test_a_student_without_its_complete_stage_is_refused(trained) -> None:  # noqa: ANN001
    results, suite = trained
    student = next(s for s in suite.students if s.method != "none")
    cut = RunSpec(**{**student.__dict__, "needs": student.needs[:1]})
    record = train_run(cut, results / "elsewhere")
    assert record["status"] == "failed"
    assert "has no record" in record["error"] or "needs its stage run" in record["error"]
    store = RunStore(results)
    with pytest.raises(Exception, match=r"needs its stage run \w+, which is not complete"):
        build_models(cut, store, torch.device("cpu"))


class Interrupt(BaseException):
    """Stands for a kill (not an Exception: train_run does not record it as a failure)."""


def stop_at(step: int):  # noqa: ANN201
    def progress(spec: RunSpec, info: dict) -> None:
        if info["step"] >= step:
            raise Interrupt

    return progress


def test_a_killed_and_resumed_stage_equals_an_unbroken_one(
    trained, tmp_path: Path  # noqa: ANN001
) -> None:
    results, suite = trained
    stage = suite.stages[1]  # 6 steps, checkpoint every 2, log every 2
    other = tmp_path / "resumed"
    (other / "runs").mkdir(parents=True)
    os.symlink(RunStore(results).run_dir(stage.teacher_id), other / "runs" / stage.teacher_id)
    with pytest.raises(Interrupt):
        train_run(stage, other, progress=stop_at(4))  # at step 4's log, before its checkpoint
    store = RunStore(other)
    assert store.status(stage.id) == "interrupted" and store.checkpoint_path(stage.id).exists()
    resumed = train_run(stage, other)
    assert resumed["status"] == "complete" and resumed["resumed_from"] == [2]
    assert [s["step"] for s in resumed["sessions"]] == [0, 2]
    assert store.history(stage.id) == RunStore(results).history(stage.id)
    tokens = [torch.load(RunStore(r).run_dir(stage.id) / TOKENS_FILE, weights_only=True)["tokens"]
              for r in (results, other)]
    torch.testing.assert_close(tokens[0], tokens[1], rtol=0, atol=0)


@pytest.mark.slow
def test_aux_heads_add_the_aux_term_with_the_same_tokens(tmp_path: Path) -> None:
    """Student and teacher with an auxiliary head: the student's history has ``maskd_aux``;
    the frozen teacher gives its auxiliary logits in eval mode."""
    suite = staged_suite(tmp_path, head={"fpn": {"aux": 0.4}})
    runs = [*suite.teachers, suite.stages[0], *(s for s in suite.students if s.method == "maskd4")]
    records = LocalExecutor(stream=io.StringIO()).run(runs, tmp_path / "r", train_run)
    assert all(r["status"] == "complete" for r in records), [r.get("error") for r in records]
    store = RunStore(tmp_path / "r")
    student = runs[-1]
    assert student.kind == "student"
    losses = store.history(student.id)[-1]["losses"]
    assert {"maskd", "maskd_aux", "aux", "ce"} <= set(losses)
    _, _, models = build_models(student, store, torch.device("cpu"))
    out = models.teacher(torch.zeros(1, 3, 32, 64), torch.zeros(1, 1, 32, 64))
    assert out.aux is not None and not models.teacher.training
    masks = token_masks(out.aux, models.method.terms["maskd"].tokens)
    assert masks.shape[:2] == (1, 8)


def test_the_slurm_plan_puts_the_stage_between_teacher_and_students(tmp_path: Path) -> None:
    suite = staged_suite(tmp_path)
    [teacher] = suite.teachers
    executor = SlurmExecutor(tmp_path / "jobs", time_min=30, teacher={"time_min": 600})
    plan = executor.plan(suite.runs, tmp_path / "results")
    stage_ids = {s.id for s in suite.stages}
    stage_array = next(a for a in plan.arrays if a.specs[0].id in stage_ids)
    assert {s.id for s in stage_array.specs} == stage_ids
    assert stage_array.params["time"] == 600  # the teachers' launch resources
    text = executor.describe(plan)
    lines = {line.split("# ")[1].split(":")[0]: line for line in text.splitlines()}
    assert re.search(r" --dependency=afterok:<teachers>_0 ", lines[stage_array.name])
    maskd = {s.id for s in suite.students if s.method != "none"}
    waiting = [a for a in plan.arrays if any(s.id in maskd for s in a.specs)]
    assert waiting and all(f"<{stage_array.name}>_" in lines[a.name] for a in waiting)
    assert "--dependency" not in lines["teachers"]
    assert not (tmp_path / "results").exists()


def test_a_failed_stage_blocks_only_its_students(tmp_path: Path) -> None:
    suite = staged_suite(tmp_path)
    fail_short = StandInTraining(fail=("maskd_tokens",))
    records = {r["id"]: r for r in LocalExecutor(stream=io.StringIO()).run(
        suite.runs, tmp_path, fail_short)}
    stage_ids = {s.id for s in suite.stages}
    for spec in suite.runs:
        record = records[spec.id]
        needed = [n for n in spec.needs if n in stage_ids]
        if needed:
            assert record["error"] == (
                f"not started: maskd_tokens run {needed[0]} failed (stand-in failed)"
            )
        elif spec.kind != "maskd_tokens":
            assert record["status"] == "complete"  # the teacher and the baseline


def test_list_methods_shows_maskd_and_its_stage() -> None:
    out = subprocess.run([sys.executable, "-m", "kdbench.cli", "list", "methods"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    block = out[out.index("maskd "):].split("\n")
    text = "\n".join(block[:7])
    for option in ("weight", "aux", "num_tokens", "token_steps"):
        assert option in text
    assert "10000" in text and "0.4" in text and "maskd_tokens" in text


def test_a_cache_hit_keeps_the_stage_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdbench.suite_cache import load_suite_cached

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "maskd.yaml"
    path.write_text(yaml.safe_dump(tiny(name="maskd", methods=METHODS)))
    first = load_suite_cached(path)
    again = load_suite_cached(path)  # a hit
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    assert len(again.stages) == 2
    assert [s.to_dict() for s in again.runs] == [s.to_dict() for s in first.runs]


def test_a_garbage_stage_checkpoint_is_moved_aside_and_the_stage_run_again(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    results, suite = trained
    stage = suite.stages[0]
    store = RunStore(tmp_path)
    (tmp_path / "runs").mkdir()
    os.symlink(RunStore(results).run_dir(stage.teacher_id), tmp_path / "runs" / stage.teacher_id)
    store.checkpoint_path(stage.id).parent.mkdir(parents=True)
    store.checkpoint_path(stage.id).write_bytes(b"not a checkpoint")
    record = train_run(stage, tmp_path)
    assert record["status"] == "complete" and record["resumed_from"] == []
    assert store.history(stage.id) == RunStore(results).history(stage.id)
    aside = store.checkpoint_path(stage.id).with_name("checkpoint.pt.corrupt")
    assert aside.read_bytes() == b"not a checkpoint"
    assert "learning the tokens from step 0" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_processes_run_the_stage_and_its_student(tmp_path: Path) -> None:
    """``launch.tasks_per_node: 2``: the teacher, the stage and a maskd student each trained by
    2 local ranks (gloo); rank 0 alone writes the tokens and the records."""
    path = tmp_path / "ddp.yaml"
    data = tiny(name="maskd_ddp", methods=[METHODS[1]], train={**TRAIN, "workers": 0},
                launch={"tasks_per_node": 2})
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDBENCH_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(path), "--results", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    suite = load_suite(path)
    store = RunStore(tmp_path / "r")
    [stage] = suite.stages
    record = store.load(stage.id)
    assert record["status"] == "complete" and record["env"]["processes"] == 2
    assert len(record["sessions"]) == 1  # rank 0 alone wrote the record
    assert [h["step"] for h in store.history(stage.id)] == [2, 4]
    tokens = torch.load(store.run_dir(stage.id) / TOKENS_FILE, weights_only=True)["tokens"]
    assert tokens.shape == (8, 7) and torch.isfinite(tokens).all()
    [student] = suite.students
    assert store.load(student.id)["status"] == "complete"
    assert "maskd" in store.history(student.id)[-1]["losses"]


def test_tuning_trials_of_a_maskd_row_share_its_stage(tmp_path: Path) -> None:
    """``tune:`` samples the loss weights only: every trial and the tuned student of a row need
    the row's one stage run."""
    suite = staged_suite(tmp_path, tune={"trials": 2})
    trials = [t for t in suite.trials if t.method == "maskd4"]
    [student] = [s for s in suite.students if s.method == "maskd4"]
    [stage] = [s for s in suite.stages if s.id in student.needs]
    assert len(trials) == 2 and all(stage.id in t.needs for t in trials)
    assert {t.method_terms[0][1]["weight"] for t in trials} != {1.0}  # sampled
    assert all(t.method_terms[0][1]["token_steps"] == 4 for t in trials)
    assert len(suite.stages) == 2
