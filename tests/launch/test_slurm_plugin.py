"""A plugin method (a suite's ``plugins:`` file) trains inside a SLURM job, a fresh process that
imports the plugin from the path and hash recorded in the run spec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdbench.results.store import RunStore
from tests.suites import tiny

PLUGIN = '''
"""A plugin: pixel-wise KD under another name, with temperature 2 by default."""
from kdbench.registry import register_method
from methods.kd import KD


@register_method("plugin_kd", "KD at temperature 2 (a plugin)")
class PluginKD(KD):
    def __init__(self, student, teacher, *, tau: float = 2.0, weight: float = 1.0) -> None:
        super().__init__(student, teacher, tau=tau, weight=weight)
'''

SUITE = tiny((8, 4), name="slurm-plugin", methods=["plugin_kd"], plugins=["my_methods.py"],
             train={"steps": 2, "batch_size": 4, "log_every": 1},
             launch={"executor": "slurm", "time_min": 10, "cpus_per_task": 1})


@pytest.mark.slurm
def test_a_plugin_method_trains_through_slurm(slurm_cluster: None, tmp_path: Path) -> None:
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "kdbench.cli", "run", str(suite), "--results",
                          str(results)], capture_output=True, text=True, timeout=900,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    records = {r["axes"]["method"]: r for r in RunStore(results)}
    assert records["plugin_kd"]["status"] == "complete"
    assert records["plugin_kd"]["config"]["method_terms"] == [
        ["plugin_kd", {"tau": 2.0, "weight": 1.0}]]
    (path, digest), = records["plugin_kd"]["config"]["plugins"]
    assert Path(path) == (tmp_path / "my_methods.py").resolve() and len(digest) == 64
    assert records["plugin_kd"]["env"]["host"]  # trained in the job, which imported the plugin
    assert list((results / "slurm").rglob("*.out")), "no SLURM job logs"
