"""Suite validation, grid expansion, overrides and run ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdbench.config import apply_override, load_suite
from kdbench.errors import KdbenchError
from tests.suites import tiny

ROOT = Path(__file__).resolve().parents[1]

BASE = tiny(name="t", seeds=[0, 1],
            methods=["none", "kd", {"kd+cwd": {"kd": {}, "cwd": {"tau": 2.0}}}],
            train={"steps": 3, "batch_size": 4})


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_grid_expansion_and_teachers(tmp_path: Path) -> None:
    data = dict(BASE, methods={"none": None, "kd": None, "kd+cwd": {"kd": {}, "cwd": {"tau": 2.0}}})
    suite = load_suite(write(tmp_path, data))
    assert len(suite.students) == 2 * 3
    assert len(suite.teachers) == 2  # one per seed
    distilling = [s for s in suite.students if s.method != "none"]
    assert {s.teacher_id for s in distilling} == {t.id for t in suite.teachers}
    assert len({s.id for s in suite.runs}) == len(suite.runs)
    composite = next(s for s in suite.students if s.method == "kd+cwd")
    assert [name for name, _ in composite.method_terms] == ["kd", "cwd"]
    assert composite.method_terms[1][1]["tau"] == 2.0
    assert composite.method_terms[1][1]["weight"] == 3.0  # the default, filled in
    baseline = next(s for s in suite.students if s.method == "none")
    assert baseline.method_terms == ()
    assert baseline.teacher_id is None  # the baseline never reads its teacher


def test_list_form_of_methods(tmp_path: Path) -> None:
    data = dict(BASE, methods=["none", "kd", {"hot-kd": {"kd": {"tau": 4.0}}}])
    suite = load_suite(write(tmp_path, data))
    labels = [s.method for s in suite.students if s.seed == 0]
    assert labels == ["none", "kd", "hot-kd"]


def test_run_ids_are_stable_and_follow_the_recipe(tmp_path: Path) -> None:
    a = load_suite(write(tmp_path, BASE))
    b = load_suite(write(tmp_path, dict(BASE, name="renamed"), "b.yaml"))
    assert [s.id for s in a.runs] == [s.id for s in b.runs]  # the suite name is not identity
    c = load_suite(write(tmp_path, BASE), ["train.steps=4"])
    assert not {s.id for s in a.runs} & {s.id for s in c.runs}


def test_teacher_recipe_change_changes_student_ids(tmp_path: Path) -> None:
    a = load_suite(write(tmp_path, BASE))
    b = load_suite(write(tmp_path, BASE), ["teacher.train.steps=9"])
    assert {s.id for s in a.teachers}.isdisjoint({s.id for s in b.teachers})
    distilling = [[s.id for s in x.students if s.method != "none"] for x in (a, b)]
    assert set(distilling[0]).isdisjoint(distilling[1])
    baselines = [[s.id for s in x.students if s.method == "none"] for x in (a, b)]
    assert baselines[0] == baselines[1]  # the baseline's id does not depend on its teacher


def test_shared_teacher_seed(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, BASE), ["teacher.seed=7"])
    assert len(suite.teachers) == 1 and suite.teachers[0].seed == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=0.1", "train.lrr: unknown key"),
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.steps=0", "train.steps: expected an integer > 0, got 0"),
        ("train.optimizer=adam", "train.optimizer: expected one of sgd, adamw"),
        ("methods=[none, nosuch]", "unknown method 'nosuch'"),
        ("methods={kd: {kd: {tua: 1}}}", "methods.kd: method 'kd': unknown option 'tua'"),
        ("students=[no_such_net]", "unknown backbone 'no_such_net'"),
        ("datasets={nosuch: {}}", "unknown dataset 'nosuch'"),
        ("datasets={synthdrive: {sise: 3}}", "datasets.synthdrive: unknown option 'sise'"),
        ("teacher.kind=nosuch", "teacher.kind: unknown teacher 'nosuch'"),
        ("seeds=[]", "seeds: expected a non-empty list"),
        ("seeds=[1, 1]", "seeds: duplicate seed"),
        ("name=a/b", "name: expected letters"),
        ("bogus=1", "bogus: unknown key"),
        ("launch={executor: pbs}", "launch.executor: expected local or slurm"),
        ("launch={executor: slurm, time_mins: 5}", "launch: unknown option 'time_mins'"),
        ("launch={executor: slurm, cpus_per_task: 0}", "launch.cpus_per_task: expected"),
        ("launch={partition: gpu}", "launch.partition: the local executor takes jobs, gpus_per"),
        ("launch={tasks_per_node: 0}",
         "launch.tasks_per_node: expected an integer >= 1 or null, got 0"),
        ("launch={teacher: {time_min: 5}}", "launch.teacher.time_min: the local executor takes"),
        ("matched_baseline=true", "s.yaml: matched_baseline: no longer a key; the "
         "compute-matched baseline is the methods entry {none: {budget: match}}"),
        ("methods=[none, {kd: {budget: match}}]",
         "methods.kd.budget: only the baseline takes a budget; expected {none: {budget: match}}"),
        ("methods=[none, kd, {none: {budget: steps}}]",
         "methods.none.budget: expected match (the student alone given the FLOPs of the "
         "costliest method), got 'steps'"),
        ("methods=[kd, {none: {budget: match, kd: {}}}]",
         "methods.none: expected {budget: match} alone, got kd"),
        ("methods=[none, {none: {budget: match}}]",
         "methods.none.budget: match: no distillation method to match"),
        ("methods=[kd, {none-matched: none}]",
         "methods.none-matched: the label of the compute-matched baseline"),
    ],
)
def test_bad_suites_name_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(KdbenchError, match=None) as info:
        load_suite(write(tmp_path, BASE), [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_budget_match_on_none_adds_the_compute_matched_baseline(tmp_path: Path) -> None:
    plain = load_suite(write(tmp_path, BASE, "plain.yaml"))
    matched = load_suite(write(tmp_path, {**BASE, "methods": [*BASE["methods"], {
        "none": {"budget": "match"}}]}, "matched.yaml"))
    extra = [s for s in matched.students if s.method == "none-matched"]
    assert [s.id for s in matched.runs if s.method != "none-matched"] == [
        s.id for s in plain.runs
    ]  # the other rows keep their ids, plain none stays the baseline
    assert len(extra) == 2 and {s.seed for s in extra} == {0, 1}
    assert all(s.method_terms == () and s.teacher_id for s in extra)
    rows = extra[0].train["budget"]["match"]["rows"]
    assert [label for label, _ in rows] == ["kd", "kd+cwd"]


def test_matched_baseline_is_refused_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdbench.cli import main

    path = write(tmp_path, {**BASE, "matched_baseline": True})
    assert main(["run", str(path), "--dry-run", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "{none: {budget: match}}" in err


def test_missing_required_key(tmp_path: Path) -> None:
    data = {k: v for k, v in BASE.items() if k != "methods"}
    with pytest.raises(KdbenchError, match="methods: required key is missing"):
        load_suite(write(tmp_path, data))


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nseeds: [0\n")
    with pytest.raises(KdbenchError, match=r"bad.yaml: not valid YAML at line \d"):
        load_suite(path)


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(KdbenchError, match="suite file not found"):
        load_suite(tmp_path / "nope.yaml")


def test_apply_override_paths() -> None:
    data: dict = {"train": {"steps": 1}}
    apply_override(data, "train.steps=5")
    apply_override(data, "teacher.train.lr=0.5")
    assert data == {"train": {"steps": 5}, "teacher": {"train": {"lr": 0.5}}}
    with pytest.raises(KdbenchError, match="expected key.path=value"):
        apply_override(data, "train.steps")
    with pytest.raises(KdbenchError, match="train.steps is not a mapping"):
        apply_override(data, "train.steps.x=1")


@pytest.mark.parametrize("suite", sorted((ROOT / "suites").rglob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.usefixtures("shipped_data_roots")
def test_shipped_suites_are_valid(suite: Path) -> None:
    assert load_suite(suite).runs


def test_a_missing_data_folder_is_found_when_the_suite_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path))
    with pytest.raises(KdbenchError, match=r"datasets\.kitti: kitti: data root .* not found"):
        load_suite(ROOT / "suites" / "kitti.yaml")


def test_the_readme_suite_example_is_valid(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    suite = load_suite(path)
    assert [s.method for s in suite.students if s.seed == 0] == [
        "none", "kd", "hot-kd", "kd+cwd", "none-matched"
    ]
