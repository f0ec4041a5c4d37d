"""LIX = λ_L·DWLD + λ_F·ARFD: the two terms, the option scheme, gradients, extremes, resume."""

from __future__ import annotations

import json

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import IGNORE_INDEX, Batch, build_method, method_options
from kdbench.models.outputs import Outputs
from kdbench.registry import METHODS
from methods.arfd import ARFD
from methods.dwld import DWLD
from methods.lix import LIX
from tests.methods.test_arfd import STUDENT, TEACHER, stage_outputs
from tests.methods.test_dwld import randomise_controller


def labelled_batch(seed: int, ignore_all: bool = False) -> Batch:
    """Labels for 8x8 inputs (the logits of :func:`stage_outputs` at size 4 are 4x4)."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, STUDENT.num_classes, (2, 8, 8), generator=g)
    if ignore_all:
        label.fill_(IGNORE_INDEX)
    return Batch(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8), label, step=50, total_steps=100)


def with_logits(outputs: Outputs, logits: torch.Tensor) -> Outputs:
    return Outputs(logits, outputs.stages, outputs.decoder)


def test_registered_names() -> None:
    for name in ("dkd", "dwld", "arfd", "lix"):
        assert name in METHODS


def test_options_nest_exactly_the_options_of_both_halves() -> None:
    resolved = LIX.resolve_options({})
    assert resolved == {
        "lambda_l": 1.0,
        "lambda_f": 1.0,
        "dwld": DWLD.resolve_options({}),
        "arfd": ARFD.resolve_options({}),
    }
    assert set(resolved["dwld"]) == set(method_options(DWLD))
    assert set(resolved["arfd"]) == set(method_options(ARFD))
    assert resolved["dwld"]["controller"] == "adversarial" and resolved["arfd"]["stages"] == [
        -2,
        -1,
    ]
    json.dumps(resolved)  # JSON-able, for the run id
    given = LIX.resolve_options({"dwld": {"layers": 3}, "arfd": {"kernel": "gaussian"}})
    assert given["dwld"]["layers"] == 3 and given["dwld"]["tau"] == 4.0
    assert given["arfd"]["kernel"] == "gaussian" and given["arfd"]["anchors"] == 64


def test_terms_are_the_weighted_halves() -> None:
    options = {
        "dwld": {"layers": 3, "tau": 2.0, "weight": 2.0},
        "arfd": {"kernel": "gaussian", "anchors": 5},
    }
    student, teacher = stage_outputs(STUDENT, 4, seed=0), stage_outputs(TEACHER, 8, seed=1)
    batch = labelled_batch(2)
    torch.manual_seed(3)
    lix = LIX(STUDENT, TEACHER, lambda_l=0.5, lambda_f=2.0, **options)
    randomise_controller(lix.dwld)
    out = lix(student, teacher, batch)
    assert set(out) == {"dwld", "arfd"}
    torch.manual_seed(3)
    dwld = DWLD(STUDENT, TEACHER, layers=3, tau=2.0)
    arfd = ARFD(STUDENT, TEACHER, kernel="gaussian", anchors=5)
    randomise_controller(dwld)
    torch.testing.assert_close(out["dwld"], 0.5 * 2.0 * dwld(student, teacher, batch)["dwld"])
    torch.testing.assert_close(out["arfd"], 2.0 * arfd(student, teacher, batch)["arfd"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dwld_layers": 3}, "unknown option 'dwld_layers'"),
        ({"dwld": {"layer": 3}}, "option 'dwld'.*unknown option 'layer'"),
        ({"arfd": {"kernal": "gaussian"}}, "option 'arfd'.*unknown option 'kernal'"),
        ({"dwld": 3}, "option 'dwld' must be a mapping"),
    ],
)
def test_unknown_option_is_a_user_error(options: dict, message: str) -> None:
    with pytest.raises(KdbenchError, match=message):
        build_method([("lix", options)], STUDENT, TEACHER)


def test_bad_values_of_a_half_are_user_errors() -> None:
    with pytest.raises(KdbenchError, match="spread"):
        build_method([("lix", {"dwld": {"spread": 1.5}})], STUDENT, TEACHER)


def test_gradients_reach_every_learnable_part_and_the_student() -> None:
    torch.manual_seed(4)
    method = build_method(
        [("lix", {"arfd": {"anchors": 6}, "dwld": {"controller": "cooperative"}})], STUDENT, TEACHER
    )
    lix = method.terms["lix"]
    assert isinstance(lix, LIX)
    randomise_controller(lix.dwld)
    student = stage_outputs(STUDENT, 4, seed=5, grad=True)
    student = with_logits(student, student.logits.requires_grad_(True))
    out = method(student, stage_outputs(TEACHER, 8, seed=6), labelled_batch(7))
    sum(out.values()).backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for t in (student.logits, *student.stages):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_extreme_logits_and_an_all_ignored_batch_stay_finite() -> None:
    method = LIX(STUDENT, TEACHER)
    student = stage_outputs(STUDENT, 4, seed=8, scale=1e4, grad=True)
    student = with_logits(student, (student.logits * 1e4).requires_grad_(True))
    teacher = stage_outputs(TEACHER, 8, seed=9, scale=1e4)
    teacher = with_logits(teacher, teacher.logits * 1e4)
    out = method(student, teacher, labelled_batch(10, ignore_all=True))
    assert out["dwld"].item() == 0.0 and torch.isfinite(out["arfd"])
    sum(out.values()).backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    grads += [t.grad for t in (student.logits, *student.stages)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_state_dict_round_trip_resumes_without_reinitialising() -> None:
    student, teacher = stage_outputs(STUDENT, 4, seed=11), stage_outputs(TEACHER, 8, seed=12)
    batch = labelled_batch(13)
    torch.manual_seed(14)
    first = LIX(STUDENT, TEACHER)
    randomise_controller(first.dwld)
    want = first(student, teacher, batch)
    torch.manual_seed(15)
    resumed = LIX(STUDENT, TEACHER)
    resumed.load_state_dict(first.state_dict())
    got = resumed(student, teacher, batch)
    for key in ("dwld", "arfd"):
        torch.testing.assert_close(got[key], want[key])
