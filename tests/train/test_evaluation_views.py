"""Multi-scale and flip evaluation: one view is single-scale exactly, flipping a flip-equivariant
model changes nothing, several views average their softmax at the label's size (float64
reference), the record names the views, config mistakes name the key, ids of single-scale runs
are unchanged, and a run trains and scores end to end with several views."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from kdbench.config import Suite, load_suite
from kdbench.config.spec import identity
from kdbench.errors import KdbenchError
from kdbench.train.evaluation import describe, evaluate, scores, slide_logits
from tests.train.test_evaluation import CPU, Fixed, K, Sizes, by_hand, protocol

ROOT = Path(__file__).resolve().parents[2]


class Horizontal(nn.Module):
    """A deterministic model that is not flip-equivariant: a seeded 1x3 conv (a horizontal,
    asymmetric kernel) from rgb (+ x) to K logits, then 2x2 average pooling."""

    def __init__(self, in_chans: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(in_chans, K, kernel_size=(1, 3), padding=(0, 1))

    def forward(self, rgb: torch.Tensor, x: torch.Tensor | None = None) -> SimpleNamespace:
        inputs = rgb if x is None else torch.cat([rgb, x], dim=1)
        return SimpleNamespace(logits=F.avg_pool2d(self.conv(inputs), 2))


class PerPixel(nn.Module):
    """A flip-equivariant model with logits at the input resolution: a seeded 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, K, kernel_size=1)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.conv(rgb))


def test_one_unflipped_scale_is_single_scale_exactly() -> None:
    model, dataset = Fixed(in_chans=4), Sizes()
    slide = protocol(mode="slide", window=[8, 8], stride=[6, 6])
    for base in (protocol(), protocol(size=[12, 20]), slide):
        single = evaluate(model, dataset, uses_x=True, protocol=base, device=CPU)
        for views in ({"scales": [1.0]}, {"scales": [1.0], "flip": False}, {"scales": None}):
            got = evaluate(model, dataset, uses_x=True, protocol={**base, **views}, device=CPU)
            assert got == single
    got = evaluate(model, dataset, uses_x=True, protocol=protocol(scales=[1.0]), device=CPU)
    assert got["miou"] == pytest.approx(by_hand(model, dataset, lambda h, w: None, True), abs=1e-9)


def test_flipping_a_flip_equivariant_model_changes_no_prediction() -> None:
    model, dataset = PerPixel(), Sizes()
    single = evaluate(model, dataset, uses_x=False, protocol=protocol(), device=CPU)
    flipped = evaluate(model, dataset, uses_x=False, protocol=protocol(flip=True), device=CPU)
    assert flipped == single
    # the same protocol on a model that is not equivariant does change the predictions
    model = Horizontal()
    single = evaluate(model, dataset, uses_x=False, protocol=protocol(), device=CPU)
    flipped = evaluate(model, dataset, uses_x=False, protocol=protocol(flip=True), device=CPU)
    assert flipped["miou"] != pytest.approx(single["miou"], abs=1e-6)


def reference_scores(model: nn.Module, rgb: torch.Tensor, x: torch.Tensor, label_size: tuple,
                     scales: list[float], flip: bool, base: dict) -> torch.Tensor:
    """(1/V) Σ_(s, f) up(softmax(z_(s, f))) in float64, written out view by view."""
    double = Horizontal(in_chans=4).double()
    double.load_state_dict({k: v.double() for k, v in model.state_dict().items()})

    def forward(r: torch.Tensor, xx: torch.Tensor | None) -> torch.Tensor:
        return double(r, xx).logits

    h, w = rgb.shape[-2:]
    total, count = torch.zeros(rgb.shape[0], K, *label_size, dtype=torch.float64), 0
    for s in scales:
        size = (int(s * h + 0.5), int(s * w + 0.5))
        r = F.interpolate(rgb.double(), size=size, mode="bilinear", align_corners=False,
                          antialias=s < 1)
        xx = F.interpolate(x.double(), size=size, mode="nearest-exact")
        for f in [False, True] if flip else [False]:
            ri, xi = (r.flip(-1), xx.flip(-1)) if f else (r, xx)
            if base["mode"] == "slide":
                z = slide_logits(forward, ri, xi, base["window"], base["stride"])
            else:
                z = forward(ri, xi)
            z = z.flip(-1) if f else z
            p = torch.softmax(z, dim=1)
            total += F.interpolate(p, size=label_size, mode="bilinear", align_corners=False)
            count += 1
    return total / count


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_several_views_average_the_softmax_at_the_label_size(flip: bool, mode: str) -> None:
    model, dataset = Horizontal(in_chans=4), Sizes()
    slide = {"window": [8, 8], "stride": [6, 6]} if mode == "slide" else {}
    base = protocol(mode=mode, scales=[0.5, 1.25], flip=flip, **slide)
    for i in (0, 2, 4):  # 16x24, 18x22 and 20x30: odd scaled sizes included
        item = dataset[i]
        data = {"rgb": item["rgb"][None], "x": item["x"][None], "label": item["label"][None]}
        with torch.no_grad():
            got = scores(lambda r, xx: model(r, xx).logits, data, True, base, CPU)
            want = reference_scores(model, data["rgb"], data["x"], tuple(item["label"].shape),
                                    [0.5, 1.25], flip, base)
        assert got.dtype == torch.float32 and got.shape == want.shape
        torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got.sum(1), torch.ones_like(got[:, 0]), atol=1e-5, rtol=0)


def test_the_record_names_the_scales_and_the_flip() -> None:
    assert describe(protocol()) == {
        "labels": "native resolution", "mode": "whole",
        "input": "as loaded (the data set's size option, else native)",
        "scales": [1.0], "flip": False,
    }
    views = describe(protocol(scale=0.5, scales=[0.5, 1, 1.75], flip=True))
    assert (views["input"], views["scales"], views["flip"]) == ("scaled by 0.5", [0.5, 1.0, 1.75],
                                                                True)


BASE = {
    "name": "views",
    "datasets": {"synthdrive": {"size": [32, 64], "train_samples": 8, "eval_samples": 4}},
    "students": ["test_resnet"],
    "methods": ["none"],
}


def suite(tmp_path: Path, data: dict) -> Suite:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_suite(path)


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ({"scales": []}, r"eval.scales: expected a non-empty list of positive numbers"),
        ({"scales": [1.0, 0]}, r"eval.scales: expected a non-empty list of positive numbers"),
        ({"scales": [-0.5]}, r"eval.scales: expected a non-empty list of positive numbers"),
        ({"scales": [1.0, True]}, r"eval.scales: expected a non-empty list of positive numbers"),
        ({"scales": 1.5}, r"eval.scales: expected a list or null"),
        ({"flip": "yes"}, r"eval.flip: expected a boolean"),
        ({"flip": 1}, r"eval.flip: expected a boolean"),
    ],
)
def test_view_mistakes_name_the_key_in_one_line(tmp_path: Path, views: dict, message: str) -> None:
    with pytest.raises(KdbenchError, match=message) as info:
        suite(tmp_path, {**BASE, "eval": views})
    assert "\n" not in str(info.value)


OLD_EVAL_KEYS = {"mode", "size", "scale", "window", "stride", "batch_size"}


def test_single_scale_ids_are_unchanged_and_views_change_them(tmp_path: Path) -> None:
    """The run id hashes exactly the eval keys it hashed before the view keys existed (they sit
    at their identity defaults), explicit defaults keep every id, views change them."""
    quickstart = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    plain = suite(tmp_path, quickstart)
    ids = [r.id for r in plain.runs]
    assert all(set(identity(r)["eval"]) == OLD_EVAL_KEYS for r in plain.runs)
    assert all((r.eval["scales"], r.eval["flip"]) == (None, False) for r in plain.runs)
    for views in ({"scales": None, "flip": False}, {"scales": [1.0]}, {"scales": [1]}):
        same = suite(tmp_path, {**quickstart, "name": "same", "eval": views})
        assert [r.id for r in same.runs] == ids
    multi = suite(tmp_path, {**quickstart, "name": "multi", "eval": {"scales": [1, 1.5]}})
    assert multi.runs[0].eval["scales"] == [1.0, 1.5] and multi.runs[0].eval["flip"] is False
    flipped = suite(tmp_path, {**quickstart, "name": "flipped", "eval": {"flip": True}})
    assert flipped.runs[0].eval["flip"] is True
    assert not {r.id for r in multi.runs + flipped.runs} & set(ids)
    assert len({r.id for r in multi.runs} | {r.id for r in flipped.runs}) == 2 * len(ids)


@pytest.mark.slow
def test_a_run_trains_and_scores_with_two_scales_and_flip(tmp_path: Path) -> None:
    from kdbench.data.synthdrive import SynthDrive
    from kdbench.train.run import train_run

    data = {**BASE, "train": {"steps": 2, "batch_size": 4},
            "eval": {"scales": [0.75, 1.0], "flip": True}}
    (teacher,) = suite(tmp_path, data).teachers
    record = train_run(teacher, tmp_path / "results")
    assert record["status"] == "complete"
    assert record["eval_protocol"]["scales"] == [0.75, 1.0] and record["eval_protocol"]["flip"]
    labels = SynthDrive("eval", size=(32, 64), train_samples=8, eval_samples=4)
    valid = sum(int((labels[i]["label"] != 255).sum()) for i in range(len(labels)))
    assert record["metrics"]["pixels"] == valid
    assert 0.0 <= record["metrics"]["miou"] <= 100.0


def test_a_table_never_merges_single_and_multi_scale_runs_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdbench.cli import main
    from tests.test_suite_results import fill

    grid = {**BASE, "name": "scales", "seeds": [0], "methods": ["none", "kd"],
            "train": {"steps": 4, "batch_size": 4}}
    single, multi = tmp_path / "single.yaml", tmp_path / "multi.yaml"
    single.write_text(yaml.safe_dump(grid))  # seed 0 single-scale, seed 1 multi-scale: one cell
    views = {"seeds": [1], "eval": {"scales": [0.75, 1.0], "flip": True}}
    multi.write_text(yaml.safe_dump({**grid, **views}))
    results = tmp_path / "res"
    fill(results, single, {"none": 60.0, "kd": 61.0})
    fill(results, multi, {"none": 62.0, "kd": 63.0})
    capsys.readouterr()
    assert main(["table", str(results)]) == 0
    assert "mixes runs of different resolved recipes" in capsys.readouterr().out
    assert main(["table", str(results), "--suite", str(multi)]) == 0
    alone = capsys.readouterr().out
    assert "mixes runs" not in alone and "64.0" in alone and "61.0" not in alone
