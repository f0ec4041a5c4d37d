"""Traceability: every cell's runs and a command that trains each again to the same metrics."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.report.render.markdown import escape
from kdbench.reproduce import command
from kdbench.train.run import train_run

from .test_run import TINY


@pytest.mark.slow
def test_trace_lists_every_cells_runs_and_their_command_reproduces_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "tiny.yaml"
    train = {**TINY["train"], "steps": 3}
    path.write_text(yaml.safe_dump({**TINY, "seeds": [0, 1], "train": train}))
    suite = load_suite(path)
    results = tmp_path / "results"
    for spec in suite.runs:
        assert train_run(spec, results)["status"] == "complete"
    assert main(["table", str(results), "--trace"]) == 0
    out = capsys.readouterr().out
    for spec in suite.runs:  # 2 teachers, 2 seeds x (none, kd)
        assert f"| {spec.id} | complete | {escape(command(results, spec.id))} |" in out
    assert main(["table", str(results), "--trace", "--format", "csv"]) == 0
    tidy = pd.read_csv(io.StringIO(capsys.readouterr().out))
    kd_ids = {s.seed: s.id for s in suite.students if s.method == "kd"}
    kd = tidy[tidy["method"] == "kd"].iloc[0]
    assert kd["runs"] == f"0:{kd_ids[0]};1:{kd_ids[1]}"
    kd1 = next(s for s in suite.students if s.method == "kd" and s.seed == 1)
    out_dir = tmp_path / "again"
    assert main(["reproduce", str(results), kd1.id, "--out", str(out_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [kd1.teacher_id, kd1.id]
    assert all(line.endswith("same metrics as recorded") for line in lines)
    assert main(["reproduce", str(results), "nothex"]) == 2
