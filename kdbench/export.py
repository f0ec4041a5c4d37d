"""A trained student out of kdbench: weights, the model's config and an ONNX graph.

``kdbench export RESULTS RUN_ID --out DIR`` writes

- ``DIR/model.safetensors``: the student's final weights (float32);
- ``DIR/config.json``: what rebuilds it (backbone, head and its options, decoder width, class
  names), the input it expects (RGB, NCHW, ImageNet mean and std after scaling to [0, 1]), the
  output (logits at 1/``logit_reduction`` of the input: upsample them bilinearly to the image)
  and where it came from (run id, suite, method, seed, code, the run's headline metrics);
- ``DIR/model.onnx``: the eval-mode network as an ONNX graph, image -> logits, with dynamic
  batch, height and width (from 32 pixels; torch.export's exporter; needs the ``export``
  extra: onnx, onnxscript; skipped by ``--no-onnx``).

:func:`load_student` rebuilds the torch module from such a folder with kdbench installed, and
needs nothing of the results folder. Only complete student runs are exported: a teacher reads
the X modality, which a deployed RGB model does not have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdbench.data.base import RGB_MEAN, RGB_STD
from kdbench.errors import KdbenchError
from kdbench.models.student import Segmenter
from kdbench.results.store import RunStore
from kdbench.train import checkpoint

FORMAT = "kdbench-student/1"
DEFAULT_INPUT = (512, 1024)


def student_config(record: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a complete student run's record."""
    config, metrics = record["config"], record.get("metrics", {})
    model = config["model"]
    classes = list(metrics.get("per_class_iou", {}))
    return {
        "format": FORMAT,
        "backbone": model["backbone"],
        "decoder_channels": model["decoder_channels"],
        "head": model["head"],
        "num_classes": len(classes),
        "classes": classes,
        "input": {
            "layout": "NCHW",
            "channels": "RGB",
            "scale": 1 / 255,
            "mean": list(RGB_MEAN),
            "std": list(RGB_STD),
        },
        "output": "logits (N, K, H/r, W/r), r = logit_reduction; upsample bilinearly",
        "source": {
            "run_id": record["id"],
            "suite": record.get("suite"),
            "dataset": config["dataset"],
            "method": config.get("method"),
            "seed": config.get("seed"),
            "code": config.get("code"),
            "metrics": {k: metrics[k] for k in ("miou", "mfsc", "pixel_acc") if k in metrics},
        },
    }


def build_student(config: dict[str, Any]) -> Segmenter:
    """The (randomly initialised) student described by a ``config.json``."""
    head = config["head"]
    return Segmenter(
        config["backbone"],
        config["num_classes"],
        decoder_channels=config["decoder_channels"],
        head=head["name"],
        head_options=head["options"],
    )


class LogitsOnly(nn.Module):
    """The student as a plain image -> logits function (what an ONNX graph can return)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, image: Tensor) -> Tensor:  # noqa: D102 - see the class docstring
        return self.student(image).logits


def _complete_student(store: RunStore, run_id: str) -> dict[str, Any]:
    record = store.load(run_id)
    if record is None:
        raise KdbenchError(f"run {run_id}: no record in {store.root} (see `kdbench status`)")
    if record.get("kind") != "student":
        raise KdbenchError(f"run {run_id} is a {record.get('kind')} run; export takes students")
    if record.get("status") != "complete":
        raise KdbenchError(
            f"run {run_id} is {record.get('status')}, not complete: nothing to export"
        )
    return record


def export_run(results: str | Path, run_id: str, out: str | Path, onnx: bool = True) -> Path:
    """Write the three files of the module docstring for ``run_id`` of ``results`` to ``out``."""
    from safetensors.torch import save_file

    store = RunStore(results)
    record = _complete_student(store, run_id)
    config = student_config(record)
    student = build_student(config)
    weights = checkpoint.load(store.run_dir(run_id) / "model.pt")["model"]
    student.load_state_dict(weights)
    student.eval()
    config["logit_reduction"] = student.tap_info.logit_reduction
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in student.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": FORMAT})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if onnx:
        size = record["config"]["dataset_options"].get("size") or DEFAULT_INPUT
        export_onnx(student, out / "model.onnx", tuple(size))
    return out


def export_onnx(student: nn.Module, path: Path, size: tuple[int, int]) -> None:
    """``student`` (eval mode) as an ONNX graph image (N, 3, H, W) -> logits, N, H, W dynamic."""
    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError:
        raise KdbenchError(
            'ONNX export needs the onnx package: pip install "kdbench[export]" (or --no-onnx)'
        ) from None
    from torch.export import Dim

    example = torch.zeros(1, 3, *size)
    side = {"min": 32, "max": 8192}
    dims = {0: Dim("n", max=1024), 2: Dim("h", **side), 3: Dim("w", **side)}
    with torch.no_grad():
        torch.onnx.export(
            LogitsOnly(student).eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamo=True,
            dynamic_shapes={"image": dims},
            verbose=False,
        )


def load_student(folder: str | Path) -> Segmenter:
    """The eval-mode torch student of an exported ``folder`` (see the module docstring)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        state = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError) as err:
        raise KdbenchError(f"{folder}: not an exported kdbench student ({err})") from None
    if config.get("format") != FORMAT:
        raise KdbenchError(f"{folder}/config.json: format {config.get('format')!r}, not {FORMAT}")
    student = build_student(config)
    student.load_state_dict(state)
    return student.eval()
