r"""LIX: dynamically-weighted logit distillation (DWLD) plus adaptively recalibrated feature
distillation (ARFD), as this project reconstructs them.

Guo et al., "LIX: Implicitly Infusing Spatial Geometric Prior Knowledge into Visual Semantic
Segmentation for Autonomous Driving", arXiv 2403.08215.

**This is kdbench's reconstruction, not the authors' code.** LIX's code and full text were not
available to this project. Taken from the paper: the total objective CE + λ_L·DWLD + λ_F·ARFD;
DWLD extends DKD with per-logit weights on the target and non-target terms produced by a small
MLP ("dynamic weight controller") whose input involves the logits' confidence; ARFD recalibrates
student features towards the teacher by kernel regression with a Laplace kernel and measures
consistency with CKA (built on HSIC); the ablations vary the controller's number of layers and
the kernel. Everything else (the controller's inputs, width, bounds, initialisation and how
it learns, the anchors, σ's initialisation, the CKA estimator, the stages) is this project's
own design, described in methods/dwld.py and methods/arfd.py; the choices an ablation varies
are options.

    L_LIX = λ_L · L_DWLD + λ_F · L_ARFD          (the trainer adds the cross-entropy)

Options: ``lambda_l`` and ``lambda_f`` (default 1 each), and ``dwld`` and ``arfd``: mappings that
accept exactly the options of the standalone ``dwld`` and ``arfd`` methods, with their defaults,
e.g. ``lix: {dwld: {layers: 3, controller: cooperative}, arfd: {kernel: gaussian}}``. A half's
own ``weight`` (default 1) multiplies its λ. The two terms are returned separately,
``{"dwld": λ_L·L_DWLD, "arfd": λ_F·L_ARFD}``, so training curves show each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from kdbench.errors import KdbenchError
from kdbench.method import Batch, Method
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform
from methods.arfd import ARFD
from methods.dwld import DWLD

HALVES: dict[str, type[Method]] = {"dwld": DWLD, "arfd": ARFD}


@register_method("lix", "Guo et al. 2024, reconstructed here: λ_L·DWLD + λ_F·ARFD")
class LIX(Method):
    """LIX = ``dwld`` (logits) + ``arfd`` (encoder stages); submodules ``dwld`` and ``arfd``.

    kdbench's reconstruction of LIX, not the authors' method as published in code: LIX's code
    and full text were not available. See the module docstring for what comes from the paper.
    """

    taps = ("logits", "stages")
    search_space = {
        "lambda_l": LogUniform(0.1, 10.0),
        "lambda_f": LogUniform(0.1, 10.0),
        "dwld.tau": Choice(1.0, 2.0, 4.0, 8.0),
    }
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo,
        *,
        lambda_l: float = 1.0,
        lambda_f: float = 1.0,
        dwld: Mapping[str, Any] | None = None,
        arfd: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(student, teacher)
        options = self.resolve_options({"dwld": dwld or {}, "arfd": arfd or {}})
        dwld_options, arfd_options = options["dwld"], options["arfd"]
        dwld_options["weight"] *= lambda_l
        arfd_options["weight"] *= lambda_f
        self.dwld = DWLD(student, teacher, **dwld_options)
        self.arfd = ARFD(student, teacher, **arfd_options)

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """λs and both halves' options, each half resolved by its own method's rules."""
        resolved = super().resolve_options(options)
        for key, half in HALVES.items():
            given = resolved[key] if resolved[key] is not None else {}
            if not isinstance(given, Mapping):
                raise KdbenchError(
                    f"method 'lix': option {key!r} must be a mapping of {key} options, "
                    f"got {given!r}"
                )
            try:
                resolved[key] = half.resolve_options(given)
            except KdbenchError as exc:
                raise KdbenchError(f"method 'lix', option {key!r}: {exc}") from None
        return resolved

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> dict[str, Tensor]:
        return {**self.dwld(student, teacher, batch), **self.arfd(student, teacher, batch)}

    def statistics(self) -> dict[str, Tensor]:
        """DWLD's weight statistics of the last forward (ARFD has none)."""
        return {**self.dwld.statistics(), **self.arfd.statistics()}

    def before_optimizer_step(self) -> None:
        """Each half's hook, as a method set would call it."""
        self.dwld.before_optimizer_step()
        self.arfd.before_optimizer_step()


__all__ = ["LIX"]
