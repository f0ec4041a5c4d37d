"""Tests of the feature-selection helpers of kdbench/method.py shared by the methods.

``resolve_stages`` (the ``stages`` option), ``distilled_features`` / ``distilled_channels`` /
``distilled_reductions`` (the ``feature: decoder | stages`` selection), and the one error
format of a method's options.
"""

from __future__ import annotations

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.method import (
    distilled_channels,
    distilled_features,
    distilled_reductions,
    resolve_stages,
)
from kdbench.models.outputs import Outputs, TapInfo
from methods.cirkd import CIRKD
from methods.cwd import CWD
from methods.ifvd import IFVD
from methods.skd import SKD

SIZE = 32


def info(*channels: int, decoder: int = 7) -> TapInfo:
    """Taps of an encoder whose stages have ``channels`` at reductions 2, 4, 8, ..."""
    return TapInfo(
        stage_channels=channels,
        stage_reductions=tuple(2 ** (i + 1) for i in range(len(channels))),
        decoder_channels=decoder,
        num_classes=3,
        logit_reduction=4,
    )


STUDENT, TEACHER = info(3, 4, 6), info(5, 6, 8, 10, decoder=9)


def outputs(taps: TapInfo) -> Outputs:
    """Zero outputs of one ``SIZE`` x ``SIZE`` image with the shapes ``taps`` describes."""
    stages = tuple(
        torch.zeros(1, c, SIZE // r, SIZE // r)
        for c, r in zip(taps.stage_channels, taps.stage_reductions, strict=True)
    )
    side = SIZE // taps.logit_reduction
    return Outputs(
        logits=torch.zeros(1, taps.num_classes, side, side),
        stages=stages,
        decoder=torch.zeros(1, taps.decoder_channels, side, side),
    )


def test_negative_indices_pair_the_deepest_stages_of_unequal_encoders() -> None:
    stages = resolve_stages("m", [-2, -1], STUDENT, TEACHER)
    assert stages == (-2, -1)
    s, t = outputs(STUDENT), outputs(TEACHER)
    fs, ft = distilled_features(s, "stages", stages), distilled_features(t, "stages", stages)
    assert [f is g for f, g in zip(fs, s.stages[1:], strict=True)] == [True, True]
    assert [f is g for f, g in zip(ft, t.stages[2:], strict=True)] == [True, True]


def test_non_negative_indices_pair_from_the_shallow_end() -> None:
    stages = resolve_stages("m", (0, 2), STUDENT, TEACHER)
    assert distilled_channels(STUDENT, "stages", stages) == [3, 6]
    assert distilled_channels(TEACHER, "stages", stages) == [5, 8]


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ((), "method 'm': option 'stages' must select at least one stage"),
        ((3,), "method 'm': option 'stages' index 3 is out of range for 3 student and 4 teacher"),
        ((-4,), "index -4 is out of range"),
        ((1.0,), "method 'm': option 'stages' expects integers, got 1.0"),
        ((True,), "expects integers, got True"),
        (("last",), "expects integers, got 'last'"),
        ((-1, 2), r"method 'm': option 'stages' selects a stage twice: \(-1, 2\)"),
        ((0, 0), "selects a stage twice"),
        ((-3, 1), "selects a stage twice"),  # distinct student stages, one teacher stage
    ],
)
def test_bad_stage_selections_raise_one_line_kdbench_errors(stages: tuple, message: str) -> None:
    with pytest.raises(KdbenchError, match=message) as caught:
        resolve_stages("m", stages, STUDENT, TEACHER)
    assert "\n" not in str(caught.value)


def test_decoder_selection_is_the_decoder_feature_alone() -> None:
    s = outputs(STUDENT)
    for stages in [(), (-1,), (0, 1)]:
        picked = distilled_features(s, "decoder", stages)
        assert len(picked) == 1 and picked[0] is s.decoder
        assert distilled_channels(STUDENT, "decoder", stages) == [STUDENT.decoder_channels]
        assert distilled_reductions(STUDENT, "decoder", stages) == [STUDENT.logit_reduction]


@pytest.mark.parametrize("taps", [STUDENT, TEACHER])
@pytest.mark.parametrize(("feature", "stages"), [("decoder", ()), ("stages", (-1, 0, 1))])
def test_static_channels_and_reductions_describe_the_selected_maps(
    taps: TapInfo, feature: str, stages: tuple[int, ...]
) -> None:
    maps = distilled_features(outputs(taps), feature, stages)  # type: ignore[arg-type]
    channels = distilled_channels(taps, feature, stages)  # type: ignore[arg-type]
    reductions = distilled_reductions(taps, feature, stages)  # type: ignore[arg-type]
    assert [f.shape[1] for f in maps] == channels
    assert [SIZE // f.shape[-1] for f in maps] == reductions
    assert [SIZE // f.shape[-2] for f in maps] == reductions


def test_an_unknown_feature_source_is_a_bug_not_a_user_error() -> None:
    with pytest.raises(ValueError, match="'logits'"):
        distilled_features(outputs(STUDENT), "logits", (-1,))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: SKD(STUDENT, TEACHER, pool="avg"),
            "method 'skd'.pool: expected one of max2, grid2, got 'avg'",
        ),
        (
            lambda: SKD(STUDENT, TEACHER, feature="logits"),
            "method 'skd'.feature: expected one of decoder, stages, aspp, got 'logits'",
        ),
        (
            lambda: IFVD(STUDENT, TEACHER, reduction="sum"),
            "method 'ifvd'.reduction: expected one of valid, all, got 'sum'",
        ),
        (
            lambda: IFVD(STUDENT, TEACHER, feature="logits"),
            "method 'ifvd'.feature: expected one of decoder, stages, aspp, got 'logits'",
        ),
        (
            lambda: CIRKD(STUDENT, TEACHER, feature="logits"),
            "method 'cirkd'.feature: expected one of decoder, stages, aspp, got 'logits'",
        ),
        (
            lambda: CWD(STUDENT, TEACHER, feature="stage"),
            "method 'cwd'.feature: expected one of logits, decoder, stages, aspp, got 'stage'",
        ),
    ],
)
def test_the_methods_choice_errors_name_the_option_and_its_choices(build, message: str) -> None:
    with pytest.raises(KdbenchError) as caught:
        build()
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "build",
    [
        lambda: CIRKD(STUDENT, TEACHER, stages=(9,), pixel_memory=4, region_memory=4),
        lambda: CWD(STUDENT, TEACHER, feature="decoder", stages=(9,)),
        lambda: CWD(STUDENT, TEACHER, feature="logits", stages=(9,)),
        lambda: SKD(STUDENT, TEACHER, feature="decoder", stages=(9,)),
        lambda: IFVD(STUDENT, TEACHER, feature="decoder", stages=(9,)),
    ],
)
def test_feature_methods_ignore_stages_unless_they_distil_stages(build) -> None:
    assert build().stages == ()


def test_labels_are_resized_nearest_exact() -> None:
    """Each output pixel takes the label under its centre: 4x4 -> 2x2 reads rows/cols 1 and 3."""
    from kdbench.method import resize_labels

    label = torch.arange(32).reshape(2, 4, 4)
    assert torch.equal(resize_labels(label, (2, 2)), label[:, 1::2, 1::2])


def test_resolve_options_fills_defaults_and_refuses_unknown_keys() -> None:
    from kdbench.errors import KdbenchError
    from kdbench.method import method_options
    from methods.arfd import ARFD

    resolved = ARFD.resolve_options({"kernel": "gaussian"})
    assert resolved["kernel"] == "gaussian" and resolved["stages"] == [-2, -1]
    assert set(resolved) == set(method_options(ARFD))
    with pytest.raises(KdbenchError, match="method 'arfd': unknown option 'kernal'"):
        ARFD.resolve_options({"kernal": "gaussian"})
