"""``benchmarks/gpu_step.py --device cpu --tiny``: the GPU benchmark's code runs on the CPU and
its JSON has every part the README's figures are read from."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("gpu_step", ROOT / "benchmarks" / "gpu_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_step"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_matrix_is_bf16_with_and_without_channels_last_and_kd_alone_compiles() -> None:
    names = [v.name for v in load_benchmark().matrix(["none", "kd"], (2, 8))]
    assert names == [
        "none b2 bf16+cl", "kd b2 bf16+cl", "kd b2 off", "kd b2 bf16+cl compile",
        "none b2 bf16", "kd b2 bf16",
        "none b8 bf16+cl", "kd b8 bf16+cl", "kd b8 off", "kd b8 bf16+cl compile",
        "none b8 bf16", "kd b8 bf16",
    ]


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_part(tmp_path: Path) -> None:
    out = tmp_path / "gpu_step.json"
    load_benchmark().main(["--device", "cpu", "--tiny", "--methods", "kd", "cirkd",
                           "--compile-backend", "eager", "--loader-workers", "1",
                           "--budget-s", "1e9", "--json", str(out)])
    result = json.loads(out.read_text())
    assert [c["name"] for c in result["configs"]] == [
        "kd b2 bf16+cl", "cirkd b2 bf16+cl", "kd b2 off", "kd b2 bf16+cl compile",
        "kd b2 bf16", "cirkd b2 bf16",
    ]
    assert result["skipped"] == []
    for config in result["configs"]:
        assert config["flops_per_step"] > 0
        for loop in ("harness", "bare"):
            t = config[loop]
            assert t["step_s"] > 0 and t["images_s"] == pytest.approx(2 / t["step_s"])
            assert t["tflops"] == pytest.approx(config["flops_per_step"] / t["step_s"] / 1e12)
        assert config["harness_over_bare"] == pytest.approx(
            config["harness"]["step_s"] / config["bare"]["step_s"])
    assert result["loader"]["workers"]["1"]["samples_s"] > 0
    summary = result["summary"]
    assert set(summary["kd_b2_fp32_over"]) == {"off", "bf16", "bf16+cl", "bf16+cl+compile"}
    assert summary["kd_b2_fp32_over"]["off"] == 1.0
    assert summary["b2_workers_needed"] > 0
