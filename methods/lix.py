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
the kernel. Everything else (the controller's inputs, width, normalisation and initialisation,
the anchors, σ's initialisation, the CKA estimator, the stages) is this project's own design,
described in methods/dwld.py and methods/arfd.py; the choices an ablation varies are options.

    L_LIX = λ_L · L_DWLD + λ_F · L_ARFD          (the trainer adds the cross-entropy)

Options: ``lambda_l`` and ``lambda_f`` (default 1 each), then every option of the two halves
except their ``weight`` (which λ_L and λ_F replace), prefixed by the half's name:
``dwld_tau``, ``dwld_alpha``, ``dwld_beta``, ``dwld_weights``, ``dwld_layers``, ``dwld_hidden``,
``dwld_warmup``, ``arfd_stages``, ``arfd_kernel``, ``arfd_anchors``, ``arfd_cka``,
``arfd_subsample``. The defaults are those of ``dwld`` and ``arfd``. The two terms are returned
separately, ``{"dwld": λ_L·L_DWLD, "arfd": λ_F·L_ARFD}``, so training curves show each.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from kdbench.method import Batch, Method
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.registry import register_method
from kdbench.search import Choice, LogUniform
from methods.arfd import ARFD
from methods.dwld import DWLD


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
        "dwld_tau": Choice(1.0, 2.0, 4.0, 8.0),
    }
    """What ``tune:`` searches (:mod:`kdbench.search`): loss weights and temperatures."""

    def __init__(
        self,
        student: TapInfo,
        teacher: TapInfo | None,
        *,
        lambda_l: float = 1.0,
        lambda_f: float = 1.0,
        dwld_tau: float = 4.0,
        dwld_alpha: float = 1.0,
        dwld_beta: float = 8.0,
        dwld_weights: str = "mlp",
        dwld_layers: int = 2,
        dwld_hidden: int = 32,
        dwld_warmup: float = 0.08,
        arfd_stages: Sequence[int] = (-2, -1),
        arfd_kernel: str = "laplace",
        arfd_anchors: int = 64,
        arfd_cka: str = "linear",
        arfd_subsample: int = 1024,
    ) -> None:
        super().__init__(student, teacher)
        self.dwld = DWLD(
            student,
            teacher,
            tau=dwld_tau,
            alpha=dwld_alpha,
            beta=dwld_beta,
            weights=dwld_weights,
            layers=dwld_layers,
            hidden=dwld_hidden,
            warmup=dwld_warmup,
            weight=lambda_l,
        )
        self.arfd = ARFD(
            student,
            teacher,
            stages=arfd_stages,
            kernel=arfd_kernel,
            anchors=arfd_anchors,
            cka=arfd_cka,
            subsample=arfd_subsample,
            weight=lambda_f,
        )

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        return {**self.dwld(student, teacher, batch), **self.arfd(student, teacher, batch)}


__all__ = ["LIX"]
