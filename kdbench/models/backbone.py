"""Backbones: any timm model as a multi-stage feature encoder, with local-file weights only.

A backbone is ``timm.create_model(name, features_only=True, pretrained=False, in_chans=C)``:
for an input (N, C, H, W) it returns stage features ``f_i`` of shape
(N, C_i, H / r_i, W / r_i), shallow to deep, with ``C_i = feature_info.channels()[i]`` and
``r_i = feature_info.reduction()[i]`` (e.g. 2, 4, 8, 16, 32 for a ResNet). Nothing is ever
downloaded: ``pretrained`` is the path of a local weights file.

:class:`Encoder` wraps such a model and adds what the RGB-X teachers need: stepping through
the stages one at a time (``step``), so that a duplex encoder can feed a fused feature back into
the stream before the next stage. timm is imported inside functions only, so importing this
module (e.g. for ``kdbench --help``) does not import timm.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from kdbench.errors import KdbenchError

__all__ = ["Encoder", "build_backbone", "describe_backbones", "is_backbone", "load_weights"]

_CURATED: tuple[tuple[str, float, str], ...] = (
    ("test_efficientnet", 0.08, "timm test model, EfficientNet blocks; smoke tests only"),
    ("test_convnext", 0.21, "timm test model, ConvNeXt blocks; smoke tests only"),
    ("mobilenetv3_small_050", 0.27, "MobileNetV3-Small 0.5x; fastest real architecture"),
    ("test_resnet", 0.37, "timm test model, ResNet blocks; smoke tests only"),
    ("regnetx_002", 2.32, "RegNetX-200MF"),
    ("efficientnet_lite0", 2.96, "EfficientNet-Lite0 (ReLU6, no SE)"),
    ("convnext_atto", 3.37, "ConvNeXt-Atto"),
    ("resnet10t", 4.92, "ResNet-10-T (tiered deep stem); quick teachers"),
    ("resnet18", 11.18, "ResNet-18"),
    ("resnet34", 21.28, "ResNet-34"),
    ("resnet50", 23.51, "ResNet-50; a typical paper-scale teacher/student"),
)


def describe_backbones() -> list[tuple[str, str]]:
    """A curated list of small backbones known to work here, as ``(name, one-line description)``.

    The description ends with the parameter count of the ``features_only`` model (no
    classifier) in millions. Any other timm model name works too (``timm.list_models()``).
    """
    return [(name, f"{text} ({params:.2f} M params)") for name, params, text in _CURATED]


def is_backbone(name: str) -> bool:
    """Whether ``name`` is a model timm knows (any such name is a kdbench backbone)."""
    import timm

    return bool(timm.is_model(name))


def build_backbone(name: str, *, in_chans: int = 3, pretrained: str | None = None) -> nn.Module:
    """The timm ``features_only`` model ``name`` with ``in_chans`` input channels.

    The model maps (N, in_chans, H, W) to a list of stage features (see the module docstring)
    and exposes ``feature_info.channels()`` and ``feature_info.reduction()``. Weights are random
    (timm's initialisation, from the torch RNG) unless ``pretrained`` names a local file, which
    is loaded with :func:`load_weights`.

    Raises :class:`KdbenchError` for a name timm does not know, a model timm cannot build as a
    feature extractor, or an unusable weights file.
    """
    import timm

    if not is_backbone(name):
        raise KdbenchError(
            f"unknown backbone {name!r}: not a timm model name (see `kdbench list backbones`)"
        )
    try:
        model = timm.create_model(name, features_only=True, pretrained=False, in_chans=in_chans)
    except (RuntimeError, TypeError, ValueError, AssertionError, NotImplementedError) as err:
        reason = " ".join(str(err).split())
        raise KdbenchError(
            f"backbone {name!r}: timm cannot build it as a feature extractor "
            f"with in_chans={in_chans} ({type(err).__name__}: {reason})"
        ) from err
    if pretrained is not None:
        load_weights(model, pretrained, backbone=name, in_chans=in_chans)
    return model


def load_weights(model: nn.Module, path: str | Path, *, backbone: str, in_chans: int = 3) -> int:
    """Load a local weights file into the features model ``model``; returns the tensors loaded.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` and may
    hold a plain state dict or ``{"state_dict": ...}`` / ``{"model": ...}``. It may come from
    the features model itself or from the full timm classifier of the same architecture: a key
    is used as it is, or with its first ``.`` turned into ``_`` (timm's features wrapper
    flattens top-level ``nn.Sequential`` children, e.g. ``stem.0.weight`` -> ``stem_0.weight``).
    Keys matching nothing (a classifier head) are ignored (``strict=False``). A 3-channel input
    conv loaded into an ``in_chans != 3`` model is adapted by timm's ``adapt_input_conv``
    (summed for 1 channel, else repeated and scaled by 3 / in_chans).

    Raises :class:`KdbenchError` naming the file if it is missing or unreadable, is not a state
    dict, matches no key of the model, or has a tensor of the wrong shape.
    """
    from timm.models import adapt_input_conv

    where = f"pretrained weights {str(path)!r}"
    if not Path(path).is_file():
        raise KdbenchError(f"{where}: no such file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling/zip failure means an unreadable file
        raise KdbenchError(
            f"{where}: not a readable torch weights file ({err.__class__.__name__})"
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise KdbenchError(f"{where}: expected a state dict, found {type(loaded).__name__}")

    target = model.state_dict()
    matched: dict[str, Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(value, Tensor):
            continue
        name = key if key in target else key.replace(".", "_", 1)
        if name not in target:
            continue
        want = target[name].shape
        if value.shape != want and _is_input_conv(value.shape, want, in_chans):
            value = adapt_input_conv(in_chans, value)
        if value.shape != want:
            raise KdbenchError(
                f"{where}: {key!r} has shape {tuple(value.shape)}, "
                f"backbone {backbone!r} expects {tuple(want)}"
            )
        matched[name] = value
    if not matched:
        first = ", ".join(list(map(str, loaded))[:3]) or "none"
        raise KdbenchError(
            f"{where}: no key matches backbone {backbone!r} (file keys: {first}, ...)"
        )
    model.load_state_dict(matched, strict=False)
    return len(matched)


def _is_input_conv(have: torch.Size, want: torch.Size, in_chans: int) -> bool:
    """True if ``have`` is an RGB conv weight (O, 3, k, k) and ``want`` its (O, in_chans, k, k)."""
    return (
        len(have) == len(want) == 4
        and have[1] == 3
        and want[1] == in_chans
        and (have[0], *have[2:]) == (want[0], *want[2:])
    )


class Encoder(nn.Module):
    """A timm features model seen as a sequence of stages, always NCHW.

    ``forward(x)`` is the backbone's own forward: (N, in_chans, H, W) -> list of stage
    features (N, C_i, H / r_i, W / r_i), converted to NCHW if timm returns NHWC (e.g. Swin).

    ``step(i, h)`` runs stage i alone: for i = 0, ``h`` is the input image; for i > 0 it is the
    stage i-1 feature (N, C_{i-1}, ., .), possibly modified by the caller (a fused RGB-X feature
    in the duplex encoder). Chaining ``step`` over all stages reproduces ``forward`` exactly.
    Stepping is available (``steppable``) for timm's ``FeatureListNet`` / ``FeatureDictNet``
    (an ordered ModuleDict whose children run in sequence; a stage ends at each returned
    child) and for the EfficientNet/MobileNetV3 feature classes (stem, then ``blocks``; a stage
    ends at each returned block). Wrappers built on hooks (e.g. ViT's ``FeatureGetterNet``)
    cannot be stepped.
    """

    def __init__(self, name: str, *, in_chans: int = 3, pretrained: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.body = build_backbone(name, in_chans=in_chans, pretrained=pretrained)
        self.channels: tuple[int, ...] = tuple(self.body.feature_info.channels())
        self.reductions: tuple[int, ...] = tuple(self.body.feature_info.reduction())
        fmt = getattr(self.body, "output_fmt", "NCHW")  # a str enum in timm
        self.nhwc = getattr(fmt, "value", fmt) == "NHWC"
        self._segments = _stage_segments(self.body)

    @property
    def steppable(self) -> bool:
        """Whether :meth:`step` is available for this backbone."""
        return self._segments is not None

    def forward(self, x: Tensor) -> list[Tensor]:  # noqa: D102 - documented on the class
        features = list(self.body(x))
        return [f.permute(0, 3, 1, 2) for f in features] if self.nhwc else features

    def step(self, i: int, h: Tensor) -> Tensor:
        """Stage ``i`` applied to ``h`` (image for i = 0, else an NCHW stage i-1 feature)."""
        if self._segments is None:
            raise RuntimeError(f"backbone {self.name!r} cannot be run stage by stage")
        if self.nhwc and i > 0:
            h = h.permute(0, 2, 3, 1)
        for child in self._segments[i]:
            h = self.body.get_submodule(child)(h)
        return h.permute(0, 3, 1, 2) if self.nhwc else h


def _stage_segments(body: nn.Module) -> tuple[tuple[str, ...], ...] | None:
    """Names of the submodules that make up each stage of ``body``, or None if not steppable.

    Stored as names (not module references) so that ``copy.deepcopy`` and ``.to()`` stay safe.
    """
    from timm.models import FeatureDictNet

    segments: list[tuple[str, ...]] = []
    current: list[str] = []
    if isinstance(body, FeatureDictNet):  # FeatureListNet is a subclass
        for child in body:
            current.append(child)
            if child in body.return_layers:
                segments.append(tuple(current))
                current = []
    else:
        stage_ends = getattr(body, "_stage_out_idx", None)
        blocks = getattr(body, "blocks", None)
        hooked = getattr(body, "feature_hooks", None) is not None
        if stage_ends is None or not isinstance(blocks, nn.Sequential) or hooked:
            return None
        children = [name for name, _ in body.named_children()]
        current = children[: children.index("blocks")]  # the stem: conv_stem, bn1 (, act1)
        for i in range(-1, len(blocks)):  # i = -1: the stem alone
            if i >= 0:
                current.append(f"blocks.{i}")
            if i + 1 in stage_ends:
                segments.append(tuple(current))
                current = []
    return tuple(segments) if len(segments) == len(body.feature_info) else None
