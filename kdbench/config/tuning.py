"""Tuning trials (``tune:``): the option sets a row's student is tuned over, each a run of kind
``"trial"`` that its students need (:mod:`kdbench.train.tuning` makes the choice inside the
student's own process)."""

from __future__ import annotations

from typing import Any

from kdbench.config.spec import RunSpec, with_implied_needs
from kdbench.config.validate import Terms


def trials(
    teacher: RunSpec,
    model: dict[str, Any],
    seed: int,
    label: str,
    given: Terms,
    train: dict[str, Any],
    settings: dict[str, Any],
    code: str,
    common: dict[str, Any],
) -> list[RunSpec]:
    """The tuning trials of one row: ``tune.trials`` option sets sampled from each term's
    search space (the options ``given`` by the suite stay fixed; the rest resolved), trained on
    the training split minus the held-out ``tune.split`` (``train.holdout``) with the student's
    recipe, the suite's first seed and budget."""
    from kdbench.registry import METHODS
    from kdbench.search import trial_options

    tune = settings["tune"]
    out = []
    for i in range(tune["trials"]):
        sampled = tuple(
            (
                name,
                METHODS.get(name).resolve_options(
                    trial_options(
                        METHODS.get(name).search_space, options, tune["seed"], f"{label}/{name}", i
                    )
                ),
            )
            for name, options in given
        )
        out.append(with_implied_needs(
            RunSpec(
                kind="trial",
                dataset=teacher.dataset,
                dataset_options=teacher.dataset_options,
                model=model,
                method=label,
                method_terms=sampled,
                seed=seed,
                train={**train, "holdout": {"split": tune["split"], "seed": tune["seed"]}},
                teacher_id=teacher.id,
                code=code,
                **common,
            )
        ))
    return out
