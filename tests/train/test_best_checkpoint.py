"""The best periodic evaluation: its per-class scores in the record, its weights saved, and
the report reading them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kdbench.config import load_suite
from kdbench.report import load_results
from kdbench.results.store import RunStore
from kdbench.train import checkpoint
from kdbench.train.build import build_datasets, build_model
from kdbench.train.evaluation import evaluate
from kdbench.train.run import train_run
from tests.suites import TRAIN, tiny


@pytest.mark.slow
def test_the_best_evaluation_keeps_its_weights_and_per_class_scores(tmp_path: Path) -> None:
    suite_file = tmp_path / "suite.yaml"
    train = {**TRAIN, "steps": 8, "eval_every": 2, "checkpoint_every": 4}
    suite_file.write_text(yaml.safe_dump(tiny(name="best", methods=["none"], train=train)))
    (spec,) = [s for s in load_suite(suite_file).runs if s.kind == "student"]
    record = train_run(spec, tmp_path / "results")
    best, store = record["best_val"], RunStore(tmp_path / "results")
    evaluations = [e["eval"] for e in store.history(spec.id) if "eval" in e]
    assert len(evaluations) == 3  # steps 2, 4, 6 (the final step is the record's own)
    assert best["miou"] == max(e["miou"] for e in evaluations)
    assert set(best["per_class_iou"]) == set(record["metrics"]["per_class_iou"])
    saved = checkpoint.load(store.run_dir(spec.id) / "model_best.pt")
    assert saved["step"] == best["step"]
    evaluation = build_datasets(spec)[1]
    model = build_model(spec, evaluation.num_classes, evaluation.x_channels, weights=False)
    model.load_state_dict(saved["model"])
    protocol = {**spec.eval, "batch_size": spec.eval["batch_size"] or spec.train["batch_size"]}
    again = evaluate(model, evaluation, uses_x=False, protocol=protocol,
                     device=torch.device("cpu"))
    assert again["miou"] == best["miou"] and again["per_class_iou"] == best["per_class_iou"]
    row = load_results(tmp_path / "results").set_index("id").loc[spec.id]  # what tables read
    assert row["best.miou"] == best["miou"] and row["best.step"] == best["step"]
    assert all(row[f"best.iou.{c}"] == v for c, v in best["per_class_iou"].items() if v is not None)
