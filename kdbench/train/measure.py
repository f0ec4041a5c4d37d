"""The measurements a run's budget is resolved with (the rules: :mod:`kdbench.train.budget`):
seconds per step timed on copies of the models, the FLOPs of the rows a matched baseline
stands against, all on the run's first batch."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from kdbench.config import RunSpec
from kdbench.distributed import current
from kdbench.errors import KdbenchError
from kdbench.method import build_method
from kdbench.results.store import RunStore
from kdbench.train import budget
from kdbench.train.build import load_teacher, optimizer, teacher_spec
from kdbench.train.cost import calibrate_step_seconds, count_step_flops
from kdbench.train.loop import Models, train_step
from kdbench.train.precision import grad_scaler


def run_budget(spec: RunSpec) -> dict[str, Any]:
    """The run's resolved budget (records written before budgets existed: its steps)."""
    return spec.train.get("budget") or {"steps": spec.train["steps"]}


def resolve(
    spec: RunSpec,
    store: RunStore,
    train_set: Any,
    models: Models,
    data: dict[str, torch.Tensor],
    flops_per_step: int,
    device: torch.device,
) -> budget.Resolved:
    """The run's step count under its budget (:mod:`kdbench.train.budget`), measured on the
    first batch ``data``: a seconds budget times training steps of copies of the models, a
    matched one counts the other rows' FLOPs with the suite's teacher."""
    cfg = spec.train

    def make_step(copies: Models) -> Callable[[int], None]:
        opt = optimizer(copies, cfg, device)
        scaler = grad_scaler(device, cfg["amp"])
        n = budget.CALIBRATION_STEPS

        def step(i: int) -> None:
            train_step(copies, data, i, n, spec.seed, cfg, opt, scaler, device)

        return step

    def rows_flops(rows: list[Any]) -> list[int]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            teacher = models.teacher or load_teacher(
                store, teacher_spec(spec, store), train_set.num_classes, train_set.x_channels
            ).to(device)
            out = []
            for terms in rows:
                method = build_method(
                    [(n, o) for n, o in terms], models.model.tap_info, teacher.tap_info
                ).to(device)
                row = Models(models.model, method, teacher, models.uses_x)
                out.append(count_step_flops(row, data, cfg["steps"]).times(current().world).total)
        return out

    return budget.steps_for(
        run_budget(spec),
        flops_per_step,
        functools.partial(calibrate, models, make_step),
        store.root / "budgets" / f"{spec.id}.json",
        rows_flops,
    )


def calibrate(models: Models, make_step: Callable[[Models], Callable[[int], None]]) -> float:
    """Seconds per step of ``models`` for a seconds budget, measured in this process alone."""
    if current().world > 1:
        raise KdbenchError(
            "train.budget: {seconds: ...} is calibrated by one process; a run trained by "
            f"{current().world} processes (launch.tasks_per_node x nodes) takes steps or flops"
        )
    return calibrate_step_seconds(models, make_step, budget.CALIBRATION_STEPS)
