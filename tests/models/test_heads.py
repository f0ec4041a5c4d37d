"""Decoder heads: the same taps for every head, output stride 8, the auxiliary head, and every
head training end to end with every method on synthdrive."""

from __future__ import annotations

import pytest
import torch

from kdbench.data.synthdrive import SynthDrive
from kdbench.errors import KdbenchError
from kdbench.method import build_method
from kdbench.models.student import Segmenter
from kdbench.registry import HEADS, METHODS, TEACHERS
from kdbench.train.loop import Models, train_step
from kdbench.train.pipeline import train_loader
from kdbench.train.precision import PendingSteps

K = 7
HEAD_NAMES = ["fpn", "deeplabv3", "pspnet", "mlp"]


def test_the_shipped_heads_are_registered() -> None:
    assert set(HEAD_NAMES) <= set(HEADS.names())


@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize("stride", [None, 8])
def test_every_head_gives_the_taps_its_tap_info_announces(head: str, stride: int | None) -> None:
    torch.manual_seed(0)
    model = Segmenter("test_resnet", K, decoder_channels=16, head=head,
                      head_options={"output_stride": stride, "aux": 0.4}).train()
    info = model.tap_info
    if stride == 8:
        assert max(info.stage_reductions) == 8
    out = model(torch.randn(2, 3, 64, 96))
    r = info.logit_reduction
    assert out.logits.shape == (2, K, 64 // r, 96 // r)
    assert out.decoder.shape == (2, info.decoder_channels, 64 // r, 96 // r)
    assert [s.shape[1] for s in out.stages] == list(info.stage_channels)
    assert [64 // s.shape[2] for s in out.stages] == list(info.stage_reductions)
    assert out.aux is not None and out.aux.shape[:2] == (2, K)
    assert model.eval()(torch.randn(1, 3, 64, 96)).aux is None  # evaluation skips it


def test_deeplabv3_reads_the_deepest_stage_at_output_stride_8() -> None:
    model = Segmenter("test_resnet", K, head="deeplabv3", head_options={"output_stride": 8})
    assert model.tap_info.logit_reduction == 8
    assert model.decoder.used == (len(model.tap_info.stage_channels) - 1,)


def test_bad_head_options_are_user_errors() -> None:
    with pytest.raises(KdbenchError, match="output_stride"):
        Segmenter("test_resnet", K, head="fpn", head_options={"output_stride": 4})
    with pytest.raises(KdbenchError, match="aux"):
        Segmenter("test_resnet", K, head="fpn", head_options={"aux": -1})
    with pytest.raises(KdbenchError, match="unknown head 'unet'"):
        Segmenter("test_resnet", K, head="unet")


@pytest.fixture(scope="module")
def synthdrive_batches() -> list[dict]:
    data = SynthDrive("train", size=(32, 64), train_samples=8, modality="depth")
    train = {"batch_size": 4, "steps": 2, "flip": True, "scale": [0.75, 1.25], "crop": [32, 64],
             "jitter": 0.0, "workers": 0}
    return list(train_loader(data, seed=0, train=train, normals=False, start=0,
                             device=torch.device("cpu")))


VARIANTS = [("adv", {"form": "official"})]
"""Method options that change what a method computes (beyond weights), trained too."""


def train_every_method(teacher: torch.nn.Module, head: str, options: dict,
                       batches: list[dict]) -> None:
    """Two steps of every method (and of :data:`VARIANTS`) for a student with ``head`` (and an
    auxiliary head)."""
    train = {"amp": "off"}
    for name, method_options in [(n, {}) for n in METHODS.names()] + VARIANTS:
        torch.manual_seed(1)
        student = Segmenter("test_resnet", K, decoder_channels=16, head=head,
                            head_options={**options, "aux": 0.4})
        method = build_method([(name, method_options)] if name != "none" else [],
                              student.tap_info, teacher.tap_info)
        models = Models(student, method, teacher if method.taps else None, uses_x=False,
                        aux_weight=student.aux_weight)
        params = [p for m in (student, method) for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        before = {k: v.clone() for k, v in student.decoder.state_dict().items()}
        for step, data in enumerate(batches):
            pending = PendingSteps()
            pending.add(train_step(models, data, step, 2, 0, train, optimizer, scaler,
                                   torch.device("cpu")))
            terms = pending.read().losses[0]
            assert all(torch.isfinite(torch.tensor(v)) for v in terms.values()), (name, terms)
            assert "aux" in terms and "ce" in terms
            assert name == "none" or len(terms) >= 3, (name, terms)  # a distillation term
        after = student.decoder.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before), name


@pytest.mark.slow
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_every_head_trains_with_every_method(head: str, synthdrive_batches: list[dict]) -> None:
    """A teacher and a student with ``head`` (output stride 8 for the heads that read the
    deepest stage alone, an auxiliary head on the student), two steps of every method."""
    options = {"output_stride": 8} if head in ("deeplabv3", "pspnet") else {}
    torch.manual_seed(0)
    teacher = TEACHERS.get("intermediate")("test_resnet", K, 1, decoder_channels=16, head=head,
                                           head_options=options).eval()
    train_every_method(teacher, head, options, synthdrive_batches)


@pytest.mark.slow
def test_every_method_distils_across_heads_and_strides(synthdrive_batches: list[dict]) -> None:
    """A DeepLabV3 teacher at output stride 8 (logits at 1/8) into an FPN student at the
    backbone's own stride (logits at 1/4): the methods align the resolutions themselves."""
    torch.manual_seed(0)
    teacher = TEACHERS.get("rgb")("test_resnet", K, 1, decoder_channels=24, head="deeplabv3",
                                  head_options={"output_stride": 8}).eval()
    train_every_method(teacher, "fpn", {}, synthdrive_batches)
