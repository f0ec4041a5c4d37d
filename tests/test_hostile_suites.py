"""Hostile suites (property-based): every one ends with one line on stderr and exit 2 under
``kdbench run --dry-run``, never a traceback and never a launch."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdbench.cli import main
from tests.suites import tiny

VALID: dict[str, Any] = tiny(
    name="hostile", seeds=[0, 1], teacher={"kind": "intermediate", "decoder_channels": 16},
    methods=["none", {"kd": {"kd": {"tau": 2.0}}}, "cwd"],
    train={"steps": 3, "batch_size": 4, "lr": 0.01, "amp": False, "scale": [0.75, 1.5]},
    device="cpu")

INT, FLOAT, STR, BOOL, NAME, LIST = "int", "float", "str", "bool", "name", "list"
LEAVES: dict[tuple[Any, ...], str] = {
    ("seeds", 0): INT,
    ("datasets", "synthdrive", "train_samples"): INT,
    ("datasets", "synthdrive", "eval_samples"): INT,
    ("datasets", "synthdrive", "seed"): INT,
    ("datasets", "synthdrive", "size"): LIST,
    ("datasets", "synthdrive", "size", 0): INT,
    ("teacher", "decoder_channels"): INT,
    ("teacher", "kind"): NAME,
    ("methods", 1, "kd", "kd", "tau"): FLOAT,
    ("methods", 1, "kd", "kd", "reduction"): NAME,
    ("train", "steps"): INT,
    ("train", "batch_size"): INT,
    ("train", "lr"): FLOAT,
    ("train", "flip"): BOOL,
    ("train", "optimizer"): NAME,
    ("train", "scale"): LIST,
    ("device",): NAME,
    ("name",): STR,
}
"""Paths into VALID and what each must be: any value of another kind is an error."""

text = st.text(min_size=1, max_size=12)
wrong: dict[str, st.SearchStrategy[Any]] = {
    INT: st.one_of(text, st.booleans(),
                   st.builds(float.__add__, st.floats(2**-10, 1 - 2**-10),
                             st.integers(-(2**20), 2**20).map(float)),  # never a whole number
                   st.lists(st.integers(), max_size=2),
                   st.dictionaries(text, st.integers(), min_size=1, max_size=2)),
    FLOAT: st.one_of(text, st.booleans(), st.lists(st.floats(), max_size=2),
                     st.dictionaries(text, st.integers(), min_size=1, max_size=1)),
    STR: st.one_of(st.integers(), st.booleans(), st.lists(text, min_size=1, max_size=2)),
    BOOL: st.one_of(st.integers(), text, st.floats(allow_nan=False)),
    NAME: st.one_of(st.integers(), st.lists(text, max_size=2),
                    text.map(lambda t: f"zz-unknown-{t}")),
    LIST: st.one_of(st.integers(), text, st.dictionaries(text, st.integers(), max_size=2)),
}
huge = st.one_of(
    st.integers(min_value=2**63, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=-(2**63)),
    st.sampled_from([float("inf"), float("-inf"), float("nan")]),
)


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@st.composite
def wrong_type_suites(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(sorted(LEAVES, key=str)))
    data = copy.deepcopy(VALID)
    _set(data, path, draw(wrong[LEAVES[path]]))
    return yaml.safe_dump(data)


@st.composite
def unknown_key_suites(draw: st.DrawFn) -> str:
    data = copy.deepcopy(VALID)
    where = draw(st.sampled_from([(), ("train",), ("teacher",), ("datasets", "synthdrive"),
                                  ("methods", 1, "kd", "kd")]))
    node: Any = data
    for key in where:
        node = node[key]
    node[f"zz_{draw(st.text(alphabet='abcxyz_', max_size=6))}"] = draw(st.integers(0, 3))
    return yaml.safe_dump(data)


@st.composite
def unknown_name_suites(draw: st.DrawFn) -> str:
    data = copy.deepcopy(VALID)
    name = f"zz{draw(st.text(alphabet='abcdefgh0123456789_', max_size=8))}"
    where = draw(st.sampled_from(["method", "dataset", "student", "composite"]))
    if where == "method":
        data["methods"] = [*data["methods"], name]
    elif where == "dataset":
        data["datasets"] = {name: {}}
    elif where == "student":
        data["students"] = [name]
    else:
        data["methods"] = [{"combo": {"kd": {}, name: {}}}]
    return yaml.safe_dump(data)


@st.composite
def huge_number_suites(draw: st.DrawFn) -> str:
    data = copy.deepcopy(VALID)
    path = draw(st.sampled_from([p for p, kind in LEAVES.items() if kind in (INT, FLOAT)]))
    _set(data, path, draw(huge))
    return yaml.dump(data)  # yaml.dump writes .inf and .nan


BAD_YAML = [
    "name: [unclosed\n",
    "name: x\n  bad: indent\n: y\n",
    "{a: 1, a: }}\n",
    "\t- tab\n",
    "name: 'quote\n",
    "- a list\n- at the top\n",
    "just a string\n",
    "42\n",
    "",
    "   \n# only a comment\n",
    "&a [*a]\n",
    "a: &a [*a, *a]\nname: x\n",
    "".join(f"{b}: &{b} [{', '.join([f'*{a}' if a else 'x'] * 10)}]\n"
            for a, b in zip(["", *"abcde"], "abcdef", strict=False)) + "name: bomb\nseeds: *f\n",
    "!!python/object/apply:os.system ['echo hi']\n",
]


def dry_run(tmp_path: Path, content: str | bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """Assert that ``kdbench run FILE --dry-run`` refuses ``content`` with one line, exit 2."""
    path = tmp_path / "hostile.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    capsys.readouterr()
    code = main(["run", str(path), "--dry-run", "--results", str(tmp_path / "results")])
    out, err = capsys.readouterr()
    assert code == 2, (content, out, err)
    assert err.count("\n") == 1 and err.startswith("kdbench: error: "), err
    assert not (tmp_path / "results").exists()


def test_the_valid_base_suite_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "valid.yaml"
    path.write_text(yaml.safe_dump(VALID))
    assert main(["run", str(path), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 + 2 * 3  # 2 teachers, 6 students


PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(wrong_type_suites())
def test_a_wrong_type_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               content: str) -> None:
    dry_run(tmp_path, content, capsys)


@PROPERTY
@given(unknown_key_suites())
def test_an_unknown_key_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 content: str) -> None:
    dry_run(tmp_path, content, capsys)


@PROPERTY
@given(unknown_name_suites())
def test_an_unknown_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         content: str) -> None:
    dry_run(tmp_path, content, capsys)


@PROPERTY
@given(huge_number_suites())
def test_numbers_beyond_64_bits_or_not_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              content: str) -> None:
    dry_run(tmp_path, content, capsys)


binary = st.builds(lambda head, byte, tail: head + byte + tail, st.binary(max_size=31),
                   st.sampled_from([b"\x00", b"\xff"]), st.binary(max_size=32))
"""Up to 64 bytes holding a NUL or a 0xFF byte, neither of which a YAML text file may hold."""


@PROPERTY
@given(binary)
def test_binary_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    dry_run(tmp_path, content, capsys)


@pytest.mark.parametrize("content", BAD_YAML, ids=range(len(BAD_YAML)))
def test_bad_yaml_empty_files_and_alias_bombs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    dry_run(tmp_path, content, capsys)
