"""Training budgets: a suite's list of budgets (a grid axis), one run's resolved budget, the
compute-matched baseline's, the teachers' recipe, and a budget's table label."""

from __future__ import annotations

from typing import Any

from kdbench.config.sections import TRAIN_SCHEMA, amp_mode
from kdbench.errors import KdbenchError
from kdbench.schema import check


def budget_label(budget: dict[str, Any]) -> str:
    """``{"flops": 2e12}`` -> ``"2e+12 FLOPs"``: a budget's table label (matched: its base's)."""
    kind, amount = next(iter(budget.items()))
    if kind == "match":
        return budget_label(amount["budget"])
    if kind == "steps":
        return f"{amount} steps"
    return f"{amount:g} FLOPs" if kind == "flops" else f"{amount:g} s"


MATCHED_BASELINE = "none-matched"
"""Row label of the compute-matched baseline, the ``methods`` entry ``{none: {budget: match}}``:
the student alone given the FLOPs the costliest method of the suite spends."""


def budget_list(train: dict[str, Any]) -> list[dict[str, Any]]:
    """The suite's budgets (a list is a grid axis); none given = ``{steps: train.steps}``."""
    budget = train["budget"]
    if budget is None:
        return [{"steps": train["steps"]}]
    return [dict(b) for b in budget] if isinstance(budget, list) else [dict(budget)]


def with_budget(train: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """``train`` with one resolved budget. A steps budget is ``steps`` itself (no ``budget``
    key), so a steps run has one source of truth and keeps the id it had before budgets."""
    out = {k: v for k, v in train.items() if k != "budget"}
    if "steps" in budget:
        return {**out, "steps": budget["steps"]}
    return {**out, "budget": budget}


def matched(budget: dict[str, Any], rows: list[tuple[str, Any]]) -> dict[str, Any]:
    """The compute-matched budget: the FLOPs the costliest of ``rows`` spends under ``budget``
    (resolved at run time by :mod:`kdbench.train.budget`)."""
    return {"match": {"budget": budget, "rows": [[label, [list(t) for t in terms]]
                                                 for label, terms in rows]}}


def student_recipe(train: dict[str, Any]) -> dict[str, Any]:
    """The suite's ``train:`` section as the students' recipe (``amp`` spelled as a mode)."""
    return {**train, "amp": amp_mode(train["amp"])}


def teacher_recipe(
    train: dict[str, Any], overrides: dict[str, Any] | None, where: str
) -> dict[str, Any]:
    """The teachers' recipe: the students' with ``teacher.train`` over it, and one budget
    (``teacher.train.budget`` if given, else ``train.steps`` steps)."""
    recipe = check({**train, "budget": None, **(overrides or {})}, TRAIN_SCHEMA, where,
                   "teacher.train.")
    recipe["amp"] = amp_mode(recipe["amp"])
    budgets = budget_list(recipe)
    if len(budgets) > 1:
        raise KdbenchError(f"{where}: teacher.train.budget: expected one budget, not a list")
    return with_budget(recipe, budgets[0])
