"""The DeepLabV3 head's ``aspp`` tap (its ASPP projection, before the 3x3 conv that gives the
decoder feature): its shape and identities, ``feature: aspp`` in every feature method (refused
in one line for a head without it), and a composite reading it training on synthdrive."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbench.data.synthdrive import SynthDrive
from kdbench.errors import KdbenchError
from kdbench.method import Batch, build_method
from kdbench.models.heads import heads_with_tap
from kdbench.models.student import Segmenter
from kdbench.registry import METHODS, TEACHERS
from kdbench.train.loop import Models, train_step
from kdbench.train.pipeline import train_loader
from kdbench.train.precision import PendingSteps
from methods.cwd import cwd_loss

K = 5


def deeplab(channels: int, classes: int = K, **options: object) -> Segmenter:
    torch.manual_seed(channels)
    return Segmenter("test_resnet", classes, decoder_channels=channels, head="deeplabv3",
                     head_options={"output_stride": 8, **options})


def test_aspp_is_the_projection_the_rest_of_the_head_turns_into_decoder_and_logits() -> None:
    model = deeplab(12).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        out = model(x)
        head, f = model.decoder, out.stages[-1]
        pooled = head.pool(F.adaptive_avg_pool2d(f, 1)).expand(-1, -1, *f.shape[-2:])
        by_hand = head.project(torch.cat([b(f) for b in head.branches] + [pooled], dim=1))
        d, z = head.tail(out.aspp)
    assert model.tap_info.aspp_channels == 12
    assert out.aspp.shape == (2, 12, 6, 8) == out.decoder.shape
    assert torch.equal(out.aspp, by_hand)
    assert torch.equal(d, out.decoder) and torch.equal(z, out.logits)
    assert torch.equal(out.decoder, head.smooth(out.aspp))  # the 3x3 conv comes after the tap
    assert not torch.allclose(out.aspp, out.decoder)
    assert (out.aspp >= 0).all()  # after the projection's ReLU


def test_only_deeplabv3_has_the_tap_and_late_fusion_concatenates_it() -> None:
    assert heads_with_tap("aspp") == ["deeplabv3"]
    fpn = Segmenter("test_resnet", K, decoder_channels=8, head="fpn").eval()
    assert fpn.tap_info.aspp_channels is None and fpn(torch.randn(1, 3, 32, 32)).aspp is None
    late = TEACHERS.get("late")("test_resnet", K, 1, decoder_channels=8, head="deeplabv3",
                                head_options={"output_stride": 8}).eval()
    with torch.no_grad():
        out = late(torch.randn(1, 3, 32, 32), torch.randn(1, 1, 32, 32))
    assert late.tap_info.aspp_channels == 16 and out.aspp.shape == (1, 16, 4, 4)


FEATURE_METHODS = sorted(
    e.name for e in METHODS if "feature" in e.obj.options() and e.name != "none"
)


def test_the_feature_methods_are_the_expected_ones() -> None:
    assert {"cwd", "skd", "ifvd", "cirkd", "at", "fitnet"} <= set(FEATURE_METHODS)


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_every_feature_method_reads_aspp_and_its_gradient_reaches_the_projection(
    name: str,
) -> None:
    student, teacher = deeplab(8).train(), deeplab(16).eval()
    method = build_method([(name, {"feature": "aspp"})], student.tap_info, teacher.tap_info)
    x = torch.randn(2, 3, 64, 64)
    label = torch.randint(0, K, (2, 64, 64))
    with torch.no_grad():
        t = teacher(x)
    s = student(x)
    # the tap alone is distilled: the gradient reaches the projection through it, not the 3x3
    aspp = s.aspp.detach().requires_grad_(True)
    terms = method(type(s)(s.logits.detach(), s.stages, s.decoder.detach(), aspp=aspp), t,
                   Batch(x, x[:, :1], label))
    feature_terms = [v for k, v in terms.items() if "pixel" not in k]
    torch.stack(feature_terms).sum().backward()
    assert all(torch.isfinite(v) for v in terms.values()), terms
    assert aspp.grad is not None and aspp.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_feature_aspp_without_the_tap_is_a_one_line_error(name: str) -> None:
    fpn = Segmenter("test_resnet", K, decoder_channels=8, head="fpn")
    with pytest.raises(KdbenchError) as err:
        build_method([(name, {"feature": "aspp"})], fpn.tap_info, deeplab(16).tap_info)
    message = str(err.value)
    assert "\n" not in message and f"method {name!r}" in message
    assert "feature: aspp" in message and "student" in message and "deeplabv3" in message


def test_cwd_on_aspp_is_cwd_of_the_adapted_projections() -> None:
    student, teacher = deeplab(8).eval(), deeplab(16).eval()
    method = build_method([("cwd", {"feature": "aspp", "weight": 2.0})], student.tap_info,
                          teacher.tap_info)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        s, t = student(x), teacher(x)
        got = method(s, t, Batch(x, x[:, :1], torch.zeros(2, 48, 48, dtype=torch.long)))["cwd"]
        adapter = method.terms["cwd"].adapters[0]
        expected = 2.0 * cwd_loss(adapter(s.aspp), t.aspp, 4.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.slow
def test_the_published_cwd_composite_trains_on_the_aspp_tap() -> None:
    """kd + adv + cwd on aspp (weight 50, τ 4, CIRKD's normaliser) + cwd on logits (3, τ 4),
    R18-like widths halved (student 8, teacher 16 channels), three steps on synthdrive."""
    data = SynthDrive("train", size=(32, 64), train_samples=6, modality="depth")
    train = {"batch_size": 2, "steps": 3, "flip": True, "scale": [0.75, 1.25], "crop": [32, 64],
             "jitter": 0.0, "workers": 0, "amp": "off"}
    batches = list(train_loader(data, seed=0, train=train, normals=False, start=0,
                                device=torch.device("cpu")))
    classes = data.num_classes
    student, teacher = deeplab(8, classes, aux=0.4), deeplab(16, classes).eval()
    terms = [("kd", {}), ("adv", {}),
             ("cwd", {"feature": "aspp", "weight": 50.0, "tau": 4.0, "channels": "student"}),
             ("cwd", {"weight": 3.0, "tau": 4.0})]
    method = build_method(terms, student.tap_info, teacher.tap_info)
    models = Models(student, method, teacher, uses_x=False, aux_weight=student.aux_weight)
    params = [p for m in (student, method) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    project = student.decoder.project[0].weight.detach().clone()
    for step, data in enumerate(batches):
        pending = PendingSteps()
        pending.add(train_step(models, data, step, len(batches), 0, train, optimizer, scaler,
                               torch.device("cpu")))
        losses = pending.read().losses[0]
        assert {"ce", "aux", "kd/kd", "adv/adv", "cwd/cwd", "cwd3/cwd"} <= set(losses), losses
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert not torch.equal(project, student.decoder.project[0].weight)
