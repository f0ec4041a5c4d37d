"""The one option resolver (kdbench.options): types, constraints, the float rule, the error
format, and YAML's numbers in scientific notation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
import yaml

from kdbench.config import load_suite
from kdbench.errors import KdbenchError
from kdbench.options import (
    Ge,
    Gt,
    Interval,
    describe,
    load_yaml,
    resolve,
    signature_options,
)


def sample(
    *,
    count: Annotated[int, Ge(1)] = 2,
    rate: Annotated[float, Gt(0)] = 0.5,
    share: Annotated[float, Interval(0, 1, closed="left")] = 0.0,
    group: Annotated[int, Ge(1)] | None = 2,
    mode: Literal["a", "b"] = "a",
    sizes: tuple[int, ...] = (1, 2),
) -> None:
    """A stand-in constructor whose options the resolver reads."""


OPTIONS = signature_options(sample)


def test_defaults_are_filled_in_and_tuples_become_lists() -> None:
    assert resolve(OPTIONS, {}, "x") == {
        "count": 2, "rate": 0.5, "share": 0.0, "group": 2, "mode": "a", "sizes": [1, 2]
    }


def test_the_float_rule_makes_an_integer_a_float_only_where_an_integer_is_not_allowed() -> None:
    out = resolve(OPTIONS, {"rate": 2, "count": 3, "group": None, "share": 0}, "x")
    assert type(out["rate"]) is float and out["rate"] == 2.0
    assert type(out["share"]) is float
    assert type(out["count"]) is int and out["group"] is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"count": 0}, "x.count: expected an integer >= 1, got 0"),
        ({"count": 1.5}, "x.count: expected an integer >= 1, got 1.5"),
        ({"count": True}, "x.count: expected an integer >= 1, got True"),
        ({"rate": 0.0}, "x.rate: expected a number > 0, got 0.0"),
        ({"rate": "fast"}, "x.rate: expected a number > 0, got 'fast'"),
        ({"share": 1.0}, "x.share: expected a number in [0, 1), got 1.0"),
        ({"share": -0.1}, "x.share: expected a number in [0, 1), got -0.1"),
        ({"group": 0}, "x.group: expected an integer >= 1 or null, got 0"),
        ({"mode": "c"}, "x.mode: expected one of a, b, got 'c'"),
        ({"sizes": [1, "2"]}, "x.sizes: expected a list of integers, got [1, '2']"),
        ({"count": 2**70}, "x.count: expected an integer that fits in 64 bits"),
        ({"rate": float("inf")}, "x.rate: expected a finite number, got inf"),
        ({"cuont": 1}, "x: unknown option 'cuont'; options: count, rate, share, group, mode"),
    ],
)
def test_one_error_format(given: dict, message: str) -> None:
    with pytest.raises(KdbenchError) as caught:
        resolve(OPTIONS, given, "x")
    assert str(caught.value).startswith(message)


def test_interval_ends_open_and_closed() -> None:
    assert describe(Annotated[float, Interval(0, 1)]) == "a number in [0, 1]"
    assert describe(Annotated[float, Interval(0, 1, closed="neither")]) == "a number in (0, 1)"
    closed_right = Interval(0, 1, closed="right")
    assert closed_right.holds(1) and not closed_right.holds(0)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-4", 1e-4), ("2e-2", 2e-2), ("5E-3", 5e-3), ("-1e+2", -100.0), ("3e5", 3e5)],
)
def test_scientific_notation_without_a_dot_is_a_number(text: str, value: float) -> None:
    assert yaml.safe_load(text) == text  # what YAML 1.1 alone gives
    loaded = load_yaml(text)
    assert type(loaded) is float and loaded == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("yes", True), ("no", False), ("0o17", "0o17"), ("017", 15), ("1.5e-3", 1.5e-3),
     ("e5", "e5"), ("1e", "1e"), ("12", 12), ("1_000", 1000), ("'1e-4'", "1e-4")],
)
def test_every_other_yaml_reading_is_unchanged(text: str, value: object) -> None:
    assert load_yaml(text) == yaml.safe_load(text) == value


SUITE = """
name: sci
datasets: {synthdrive: {size: [32, 64], train_samples: 16, eval_samples: 8}}
students: [test_resnet]
methods: [kd]
train: {steps: 3, batch_size: 4, lr: 2e-2, weight_decay: 1e-4}
"""


def test_a_suite_with_scientific_notation_loads_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    student = load_suite(path).students[0]
    assert student.train["lr"] == 0.02 and student.train["weight_decay"] == 1e-4
    dotted = tmp_path / "dotted.yaml"
    dotted.write_text(SUITE.replace("2e-2", "0.02").replace("1e-4", "0.0001"))
    assert [s.id for s in load_suite(dotted).runs] == [s.id for s in load_suite(path).runs]


def test_set_reads_scientific_notation_as_a_number(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    suite = load_suite(path, ["train.lr=5E-3", "train.weight_decay=-0e+0"])
    assert suite.students[0].train["lr"] == 5e-3
    with pytest.raises(KdbenchError, match=r"train.lr: expected a number > 0, got -100.0"):
        load_suite(path, ["train.lr=-1e+2"])
