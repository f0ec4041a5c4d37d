r"""Published segmentation checkpoints loaded into kdbench's own models.

The field publishes its teachers as checkpoints (CIRKD's DeepLabV3-ResNet101 trains 80k
iterations); importing one spares a suite that training. A *format* is a key map from the
checkpoint's parameter names to kdbench's: a list of (prefix in the file, prefix in kdbench)
rules, the first matching rule renaming a key. Import is strict: every tensor of the file must
find a kdbench parameter or buffer of the same shape, and every kdbench tensor must be filled,
else one line names the file and the first key that does not fit.

Formats:

- ``kdbench``: a kdbench model's own state dict (identity);
- ``torchvision``: ``torchvision.models.segmentation.deeplabv3_resnet{50,101}`` (with or
  without its aux classifier) into an ``rgb`` teacher of backbone ``resnet50``/``resnet101``
  (timm's, the same architecture) with ``head: deeplabv3``, ``decoder_channels: 256`` and
  ``output_stride: 8`` (torchvision's dilated layer3/layer4), ``aux`` > 0 for the aux
  classifier on ``aux_stage: -2`` (layer3). Both dropouts are identities in eval mode, so the
  logits agree (a test: max difference ≤ 1e-5 of the largest logit).
- ``cirkd``: CIRKD's ``DeepLabV3`` (Yang et al., "Cross-Image Relational Knowledge Distillation
  for Semantic Segmentation", CVPR 2022; its ``models/deeplabv3.py`` and
  ``models/base_models/resnetv1b.py``) into an ``rgb`` teacher of backbone ``resnet18s``,
  ``resnet34s``, ``resnet50s`` or ``resnet101s`` (its ``resnet18``/``resnet101`` are
  ResNet-v1s: the deep stem conv3x3 3→64 s2, 64→64, 64→128, each with BN and ReLU, as timm's
  ``stem_type='deep', stem_width=64``; layer3/layer4 dilated 2/4, the first block of each at
  the previous dilation, as timm's ``output_stride: 8``) with ``head: deeplabv3``,
  ``decoder_channels: 512`` (its ASPP and head width), ``output_stride: 8`` (rates 12, 24, 36)
  and ``aux`` > 0 for its ``auxlayer`` (an FCN head on layer3, 1/4 of its channels). Its
  dropouts (0.5 after the ASPP projection, 0.1 before each classifier) are identities in eval
  mode. Only the deep-stem backbones: its ``*_vanilla`` (7x7 stem) checkpoints name the stem
  differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from kdbench.errors import KdbenchError
from kdbench.models.backbone import read_state

Rules = tuple[tuple[str, str], ...]

_TORCHVISION_DEEPLABV3: Rules = (
    ("backbone.", "encoder.body."),
    ("classifier.0.convs.0.", "decoder.branches.0."),
    ("classifier.0.convs.1.", "decoder.branches.1."),
    ("classifier.0.convs.2.", "decoder.branches.2."),
    ("classifier.0.convs.3.", "decoder.branches.3."),
    ("classifier.0.convs.4.1.", "decoder.pool.0."),
    ("classifier.0.convs.4.2.", "decoder.pool.1."),
    ("classifier.0.project.", "decoder.project."),
    ("classifier.1.", "decoder.smooth.0."),
    ("classifier.2.", "decoder.smooth.1."),
    ("classifier.4.", "decoder.head.classifier."),
    ("aux_classifier.0.", "aux.body.0."),
    ("aux_classifier.1.", "aux.body.1."),
    ("aux_classifier.4.", "aux.head.classifier."),
)

_CIRKD_DEEPLABV3: Rules = (
    ("pretrained.conv1.", "encoder.body.conv1.0."),
    ("pretrained.bn1.", "encoder.body.conv1.1."),
    ("pretrained.conv2.", "encoder.body.conv1.3."),
    ("pretrained.bn2.", "encoder.body.conv1.4."),
    ("pretrained.conv3.", "encoder.body.conv1.6."),
    ("pretrained.bn3.", "encoder.body.bn1."),
    ("pretrained.layer", "encoder.body.layer"),
    ("head.aspp.b0.", "decoder.branches.0."),
    ("head.aspp.b1.block.", "decoder.branches.1."),
    ("head.aspp.b2.block.", "decoder.branches.2."),
    ("head.aspp.b3.block.", "decoder.branches.3."),
    ("head.aspp.b4.gap.1.", "decoder.pool.0."),
    ("head.aspp.b4.gap.2.", "decoder.pool.1."),
    ("head.aspp.project.", "decoder.project."),
    ("head.block.0.", "decoder.smooth.0."),
    ("head.block.1.", "decoder.smooth.1."),
    ("head.block.4.", "decoder.head.classifier."),
    ("auxlayer.block.0.", "aux.body.0."),
    ("auxlayer.block.1.", "aux.body.1."),
    ("auxlayer.block.4.", "aux.head.classifier."),
)

FORMATS: dict[str, Rules] = {
    "kdbench": (("", ""),),
    "torchvision": _TORCHVISION_DEEPLABV3,
    "cirkd": _CIRKD_DEEPLABV3,
}


def rename(key: str, rules: Rules) -> str | None:
    """``key`` renamed by the first rule whose prefix it starts with, or None if none does."""
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def mapped_state(state: Mapping[str, Tensor], rules: Rules, where: str) -> dict[str, Tensor]:
    """The file's tensors under kdbench's names; a key no rule covers is an error."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = rename(key, rules)
        if name is None:
            raise KdbenchError(f"{where}: key {key!r} has no place in kdbench's model")
        out[name] = value
    return out


def import_checkpoint(model: nn.Module, path: str | Path, fmt: str) -> None:
    """Load the checkpoint at ``path``, written in format ``fmt``, into ``model`` (strict)."""
    where = f"teacher checkpoint {str(path)!r} (format {fmt!r})"
    if fmt not in FORMATS:
        raise KdbenchError(f"{where}: unknown format; expected one of {', '.join(FORMATS)}")
    state = mapped_state(read_state(path, "teacher checkpoint"), FORMATS[fmt], where)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise KdbenchError(f"{where}: has no tensor for {missing[0]!r} ({len(missing)} missing)")
    for key, value in state.items():
        if key not in own:
            raise KdbenchError(f"{where}: {key!r} is not a tensor of kdbench's model")
        if tuple(value.shape) != tuple(own[key].shape):
            raise KdbenchError(
                f"{where}: {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[key].shape)}"
            )
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
