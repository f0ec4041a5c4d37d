"""The identity rule (:mod:`kdbench.config.spec`): a key added later with an identity default
leaves the quickstart's run ids where they were while it sits at that default, and moves them at
any other value; keys that cannot change a result never move them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdbench.config import IDENTITY_DEFAULTS, TRAIN_SCHEMA, RunSpec, load_suite
from kdbench.schema import Field, positive

QUICKSTART = Path(__file__).parents[1] / "suites" / "quickstart.yaml"


def quickstart_ids(*overrides: str) -> list[str]:
    return [spec.id for spec in load_suite(QUICKSTART, list(overrides)).runs]


@pytest.fixture(scope="module")
def recorded() -> list[str]:
    """The quickstart's run ids before the key existed."""
    return quickstart_ids()


@pytest.fixture
def stand_in_key(recorded: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.stand_in``, a key added after the quickstart's runs were trained: its default, 3,
    reproduces the earlier behaviour."""
    monkeypatch.setitem(TRAIN_SCHEMA, "stand_in", Field((int,), 3, check=positive))
    monkeypatch.setitem(IDENTITY_DEFAULTS, "train.stand_in", 3)


def test_a_new_key_at_its_identity_default_keeps_every_id(
    recorded: list[str], stand_in_key: None
) -> None:
    [teacher, *_] = load_suite(QUICKSTART).runs
    assert teacher.train["stand_in"] == 3  # in the resolved config, not in the hash
    assert quickstart_ids() == recorded
    assert quickstart_ids("train.stand_in=3") == recorded


def test_a_new_key_at_another_value_moves_every_id(
    recorded: list[str], stand_in_key: None
) -> None:
    moved = quickstart_ids("train.stand_in=4")
    assert len(set(moved)) == len(recorded) and not set(moved) & set(recorded)


def test_without_its_identity_default_a_new_key_would_move_the_ids(
    recorded: list[str], stand_in_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(IDENTITY_DEFAULTS, "train.stand_in")
    assert not set(quickstart_ids()) & set(recorded)


def test_keys_that_cannot_change_a_result_never_move_an_id(recorded: list[str]) -> None:
    assert quickstart_ids("train.workers=3", "device=cpu", "name=elsewhere") == recorded


def test_a_stored_config_gives_back_the_run_and_its_needs_even_from_before_needs() -> None:
    suite = load_suite(QUICKSTART, ["seeds=[0]", "tune.trials=1"])
    for spec in suite.runs:
        config = spec.to_dict()
        assert RunSpec.from_dict(config) == spec and RunSpec.from_dict(config).id == spec.id
        del config["needs"]  # a record written before runs named their needs
        older = RunSpec.from_dict(config)
        assert older.id == spec.id and older.needs == spec.needs


def test_a_method_option_added_later_hashes_only_away_from_its_identity_default() -> None:
    """``at`` and ``fitnet`` gained ``feature`` (default ``stages``, their only behaviour before):
    a term at that value hashes as the term without the option; ``decoder`` moves the id."""
    from dataclasses import replace

    from kdbench.config.spec import IDENTITY_OPTION_DEFAULTS, identity

    (spec,) = load_suite(QUICKSTART, ["seeds=[0]", "methods=[at]"]).students
    (name, options), = spec.method_terms
    assert (name, options["feature"]) == ("at", "stages")
    assert IDENTITY_OPTION_DEFAULTS[("at", "feature")] == "stages"
    before = replace(spec, method_terms=((name, {k: v for k, v in options.items()
                                                 if k != "feature"}),))
    assert spec.id == before.id and "feature" not in identity(spec)["method_terms"][0][1]
    moved = replace(spec, method_terms=((name, {**options, "feature": "decoder"}),))
    assert moved.id != spec.id
