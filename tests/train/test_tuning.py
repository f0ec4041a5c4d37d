"""Tuning: search spaces, the held-out split, equal trials per method and the chosen options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.data.holdout import HoldOut, held_out
from kdbench.data.synthdrive import SynthDrive
from kdbench.errors import KdbenchError
from kdbench.launch.local import LocalExecutor
from kdbench.method import build_method, check_options, method_options
from kdbench.models.outputs import TapInfo
from kdbench.registry import METHODS
from kdbench.search import Choice, LogUniform, lookup, trial_options
from kdbench.train.run import train_run

from .test_run import TINY

INFO = TapInfo((16, 32, 64, 128), (4, 8, 16, 32), 64, 7, 4)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_search_space_is_valid_for_its_methods_options(name: str) -> None:
    cls = METHODS.get(name)
    space = cls.search_space
    assert name == "none" or space, f"{name} declares no search space"
    searched = {key.split(".")[0] for key in space}  # dotted: an option of a nested mapping
    assert searched <= set(method_options(cls)), f"{name}: a searched key is not an option"
    for trial in range(4):
        options = trial_options(space, {}, 0, name, trial)
        assert all(space[k].contains(lookup(options, k)) for k in space)
        check_options(name, cls, options)
        build_method([(name, options)], INFO, INFO)  # the method accepts every sample


def test_trials_are_seeded_and_keep_the_suites_own_options() -> None:
    space = {"tau": Choice(1.0, 2.0, 4.0), "weight": LogUniform(0.1, 10.0)}
    first = [trial_options(space, {"tau": 8.0}, 0, "kd/kd", i) for i in range(5)]
    assert first == [trial_options(space, {"tau": 8.0}, 0, "kd/kd", i) for i in range(5)]
    assert {o["tau"] for o in first} == {8.0}  # fixed by the suite, never searched
    assert len({o["weight"] for o in first}) == 5
    assert first != [trial_options(space, {"tau": 8.0}, 1, "kd/kd", i) for i in range(5)]


def test_the_held_out_part_is_of_the_training_split_and_shares_no_sample_with_eval() -> None:
    fit, score = held_out(20, 0.25, seed=3)
    assert len(score) == 5 and sorted(fit + score) == list(range(20))
    options = {"size": [32, 64], "train_samples": 20, "eval_samples": 10}
    train, evaluation = SynthDrive("train", **options), SynthDrive("eval", **options)
    scored = HoldOut(train, 0.25, "score", seed=3)
    assert [scored[i]["rgb"].sum() for i in range(5)] == [train[i]["rgb"].sum() for i in score]
    for i in range(len(scored)):
        for j in range(len(evaluation)):
            assert not torch.equal(scored[i]["rgb"], evaluation[j]["rgb"])
    with pytest.raises(KdbenchError, match="tune.split"):
        held_out(20, 1.0, 0)


@pytest.mark.slow
def test_every_method_gets_the_same_trials_and_trains_with_the_best(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    suite_data = {**TINY, "methods": ["none", "kd", "cwd"], "tune": {"trials": 2, "split": 0.25},
                  "train": {**TINY["train"], "steps": 3}}
    path.write_text(yaml.safe_dump(suite_data))
    suite = load_suite(path)
    assert [s.id for s in suite.trials] == [s.id for s in load_suite(path).trials]
    assert sorted(s.method for s in suite.trials) == ["cwd", "cwd", "kd", "kd"]
    assert all(s.train["holdout"] == {"split": 0.25, "seed": 0} for s in suite.trials)
    assert all(trial.needs == (trial.teacher_id,) for trial in suite.trials)
    for spec in suite.students:  # a tuned row's students need their teacher and its trials
        trials = [t.id for t in suite.trials if t.method == spec.method]
        assert spec.needs == ((spec.teacher_id, *trials) if spec.method != "none" else ())
    results = tmp_path / "results"
    records = {r["id"]: r for r in LocalExecutor().run(suite.runs, results, train_run)}
    assert all(r["status"] == "complete" for r in records.values())
    for spec in suite.students:
        tuning = records[spec.id].get("tuning")
        if spec.method == "none":
            assert tuning is None
            continue
        scores = {t["id"]: t["miou"] for t in tuning["trials"]}
        assert list(scores) == spec.train["tune"]["trials"]
        best = max(scores, key=lambda i: scores[i])
        assert scores[tuning["chosen_trial"]] == scores[best]
        assert tuning["chosen"] == records[tuning["chosen_trial"]]["config"]["method_terms"]
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    kd = next(r for r in records.values() if r["kind"] == "student" and r["axes"]["method"] == "kd")
    (_, chosen), = kd["tuning"]["chosen"]
    listed = ", ".join(f"{k}={v}" for k, v in sorted(chosen.items()))
    assert "## Tuned options" in report and f"kd: {listed}" in report
    assert main(["table", str(results)]) == 0  # trials are not student rows of the table
