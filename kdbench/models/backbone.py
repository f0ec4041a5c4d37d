"""Backbones: any timm model as a multi-stage feature encoder, with timm's or local weights.

A backbone is ``timm.create_model(name, features_only=True, in_chans=C)``:
for an input (N, C, H, W) it returns stage features ``f_i`` of shape
(N, C_i, H / r_i, W / r_i), shallow to deep, with ``C_i = feature_info.channels()[i]`` and
``r_i = feature_info.reduction()[i]`` (e.g. 2, 4, 8, 16, 32 for a ResNet; 2, 4, 8, 8, 8 at
output stride 8). ``pretrained: true`` fetches timm's default weights from the model hub (where
it is not reachable: one line saying how to give a local file); ``pretrained: PATH`` reads a
local state dict or safetensors file. :data:`VARIANTS` names the few timm architectures
kdbench builds with arguments (``resnet18s``, ``resnet34s``: the deep stem).

:class:`Encoder` wraps such a model and adds what the RGB-X teachers need: stepping through
the stages one at a time (``step``), so that a duplex encoder can feed a fused feature back into
the stream before the next stage. timm is imported inside functions only, so importing this
module (e.g. for ``kdbench --help``) does not import timm.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdbench.errors import KdbenchError

__all__ = [
    "Encoder",
    "adapt_first_conv",
    "build_backbone",
    "describe_backbones",
    "is_backbone",
    "load_state",
    "load_weights",
]

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
    ("resnet18s", 11.32, "ResNet-18 with the deep stem 64-64-128 (CIRKD's ResNet18-v1s)"),
    ("resnet34", 21.28, "ResNet-34"),
    ("resnet50", 23.51, "ResNet-50; a typical paper-scale teacher/student"),
)


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    f"resnet{depth}s": (f"resnet{depth}", {"stem_type": "deep", "stem_width": 64})
    for depth in (18, 34)
}
"""kdbench's own backbone names for timm architectures built with arguments: ResNet-18/34 with
the deep stem (three 3x3 convolutions 64-64-128 instead of one 7x7), named as timm names the
deep-stem ResNet-50/101 (``resnet50s``, ``resnet101s``) and as CIRKD trains them (ResNet-v1s).
timm has no default weights for them."""


def describe_backbones() -> list[tuple[str, str]]:
    """A curated list of small backbones known to work here, as ``(name, one-line description)``.

    The description ends with the parameter count of the ``features_only`` model (no
    classifier) in millions. Any other timm model name works too (``timm.list_models()``).
    """
    return [(name, f"{text} ({params:.2f} M params)") for name, params, text in _CURATED]


def is_backbone(name: str) -> bool:
    """Whether ``name`` is a model timm knows (any such name is a kdbench backbone) or one of
    :data:`VARIANTS`."""
    import timm

    return name in VARIANTS or bool(timm.is_model(name))


Pretrained = str | bool | None
"""``True``: timm's default weights from the model hub; a path: a local weights file; None or
False: timm's random initialisation."""

HUB_HINT = "give a local file instead: pretrained: /path/to/weights.safetensors (or .pth)"


def build_backbone(
    name: str,
    *,
    in_chans: int = 3,
    pretrained: Pretrained = None,
    output_stride: int | None = None,
    x_branch: bool = False,
) -> nn.Module:
    """The timm ``features_only`` model ``name`` with ``in_chans`` input channels.

    The model maps (N, in_chans, H, W) to a list of stage features (see the module docstring)
    and exposes ``feature_info.channels()`` and ``feature_info.reduction()``. ``output_stride``
    (8 or 16) makes timm replace the last strides by dilation where the architecture allows it.
    Weights are random (timm's initialisation, from the torch RNG) unless ``pretrained`` is True
    (timm's default weights, fetched from the hub) or names a local file; either is loaded with
    :func:`load_state`, which adapts the first convolution of an ``x_branch`` (module docstring
    of :func:`adapt_first_conv`).

    Raises :class:`KdbenchError` for a name timm does not know, a model timm cannot build as a
    feature extractor, an unreachable hub (one line saying how to give a local file) or an
    unusable weights file.
    """
    import timm

    if not is_backbone(name):
        raise KdbenchError(
            f"unknown backbone {name!r}: not a timm model name (see `kdbench list backbones`)"
        )
    extra = {} if output_stride in (None, 32) else {"output_stride": output_stride}
    if pretrained is True and name in VARIANTS:
        raise KdbenchError(f"backbone {name!r}: timm has no default weights for it; {HUB_HINT}")
    architecture, arguments = VARIANTS.get(name, (name, {}))
    try:
        model = timm.create_model(
            architecture, features_only=True, pretrained=False, in_chans=in_chans,
            **arguments, **extra,
        )
    except (RuntimeError, TypeError, ValueError, AssertionError, NotImplementedError) as err:
        reason = " ".join(str(err).split())
        raise KdbenchError(
            f"backbone {name!r}: timm cannot build it as a feature extractor "
            f"with in_chans={in_chans}{f', output_stride={output_stride}' if extra else ''} "
            f"({type(err).__name__}: {reason})"
        ) from err
    if pretrained is True:
        load_state(model, hub_state(name), where=f"timm's default weights of {name!r}",
                   backbone=name, x_branch=x_branch)
    elif pretrained:
        load_weights(model, pretrained, backbone=name, x_branch=x_branch)
    return model


def hub_state(name: str) -> dict[str, Tensor]:
    """timm's default pretrained weights of ``name`` (features model), from the model hub.

    An unreachable hub (no network, ``HF_HUB_OFFLINE=1``, weights not in the local cache) raises
    :class:`KdbenchError` with one line saying how to give a local file.
    """
    import timm

    try:
        model = timm.create_model(name, features_only=True, pretrained=True)
    except Exception as err:  # hub errors come as OSError, HTTP, connection or runtime errors
        reason = " ".join(str(err).split())[:160]
        raise KdbenchError(
            f"backbone {name!r}: pretrained: true could not fetch timm's default weights "
            f"({type(err).__name__}: {reason}); {HUB_HINT}"
        ) from err
    return model.state_dict()


def read_state(path: str | Path, what: str = "pretrained weights") -> dict[str, Tensor]:
    """A local weights file -> its state dict: ``.safetensors`` with safetensors, anything else
    with ``torch.load(weights_only=True)``, unwrapping ``{"state_dict": ...}`` / ``{"model":
    ...}``. Raises :class:`KdbenchError` naming the file (as ``what``) when it is missing or
    unreadable."""
    where = f"{what} {str(path)!r}"
    if not Path(path).is_file():
        raise KdbenchError(f"{where}: no such file")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling/zip/header failure means an unreadable file
        raise KdbenchError(
            f"{where}: not a readable torch or safetensors weights file "
            f"({err.__class__.__name__})"
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise KdbenchError(f"{where}: expected a state dict, found {type(loaded).__name__}")
    return dict(loaded)


def load_weights(
    model: nn.Module, path: str | Path, *, backbone: str, x_branch: bool = False
) -> int:
    """Load a local weights file (:func:`read_state`) into ``model`` with :func:`load_state`."""
    return load_state(
        model, read_state(path), where=f"pretrained weights {str(path)!r}", backbone=backbone,
        x_branch=x_branch,
    )


def adapt_first_conv(weight: Tensor, in_chans: int) -> Tensor:
    r"""An RGB first-convolution weight W (O, 3, k, k) for an input of ``in_chans`` channels:

        W'[:, c] = (3 / in_chans) · (1/3) Σ_j W[:, j]       for c = 1 .. in_chans

    the mean over the RGB filters, rescaled so that a constant input gives the response of the
    original filters to the same constant on every RGB channel (Σ_c W'[:, c] = Σ_j W[:, j]). For
    a geometric X channel the RGB filters' colour selectivity means nothing; their spatial
    structure (edges, blobs) is what transfers.
    """
    mean = weight.float().mean(dim=1, keepdim=True)
    return (mean * (3.0 / in_chans)).repeat(1, in_chans, 1, 1).to(weight.dtype)


def load_state(
    model: nn.Module,
    state: Mapping[str, Any],
    *,
    where: str,
    backbone: str,
    x_branch: bool = False,
) -> int:
    """Load ``state`` into the features model ``model``; returns the tensors loaded.

    ``state`` may come from the features model itself or from the full timm classifier of the
    same architecture: a key is used as it is, or with its first ``.`` turned into ``_`` (timm's
    features wrapper flattens top-level ``nn.Sequential`` children, e.g. ``stem.0.weight`` ->
    ``stem_0.weight``). Keys matching nothing (a classifier head) are ignored. The first
    convolution (timm's ``pretrained_cfg["first_conv"]``, or any RGB conv whose input channels
    differ) is adapted with :func:`adapt_first_conv` when its input channels differ from the
    file's, and always for an ``x_branch``.

    Raises :class:`KdbenchError` (prefixed by ``where``) if no key matches or a tensor has the
    wrong shape.
    """
    first = getattr(model, "pretrained_cfg", {}).get("first_conv") or ()
    first_convs = {f"{c}.weight" for c in ((first,) if isinstance(first, str) else first)}
    first_convs |= {k.replace(".", "_", 1) for k in first_convs}
    target = model.state_dict()
    matched: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        name = key if key in target else key.replace(".", "_", 1)
        if name not in target:
            continue
        want = target[name].shape
        is_first = name in first_convs or (value.shape != want and _is_input_conv(value, want))
        if is_first and (x_branch or value.shape != want) and _is_input_conv(value, want):
            value = adapt_first_conv(value, want[1])
        if value.shape != want:
            raise KdbenchError(
                f"{where}: {key!r} has shape {tuple(value.shape)}, "
                f"backbone {backbone!r} expects {tuple(want)}"
            )
        matched[name] = value
    if not matched:
        first_keys = ", ".join(list(map(str, state))[:3]) or "none"
        raise KdbenchError(
            f"{where}: no key matches backbone {backbone!r} (file keys: {first_keys}, ...)"
        )
    model.load_state_dict(matched, strict=False)
    return len(matched)


def _is_input_conv(have: Tensor, want: torch.Size) -> bool:
    """True if ``have`` is an RGB conv weight (O, 3, k, k) and ``want`` is (O, C, k, k)."""
    return (
        have.dim() == len(want) == 4
        and have.shape[1] == 3
        and (have.shape[0], *have.shape[2:]) == (want[0], *want[2:])
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

    def __init__(
        self,
        name: str,
        *,
        in_chans: int = 3,
        pretrained: Pretrained = None,
        output_stride: int | None = None,
        x_branch: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.body = build_backbone(
            name,
            in_chans=in_chans,
            pretrained=pretrained,
            output_stride=output_stride,
            x_branch=x_branch,
        )
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
