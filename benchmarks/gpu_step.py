"""The training step at the Cityscapes recipe's shapes: kdbench's step against a bare PyTorch loop.

For each method (default: none, kd, cirkd, lix; ``--methods all``: every registered one) and
per-GPU batch (2, as CIRKD's 8 × 2, and 8) at a 512×1024 crop, a DeepLabV3 ResNet-101 teacher
(forward only, output stride 8) and a DeepLabV3 ResNet-18 student with its auxiliary head are
stepped by

- ``harness``: kdbench's :func:`~kdbench.train.loop.train_step` with the GPU path's defaults
  (fused SGD, channels-last, cuDNN autotuning; the losses read once per ``--log-every`` steps
  through :class:`~kdbench.train.precision.PendingSteps`), and
- ``bare``: a loop written here with the same modules and no kdbench code: forward, the task
  cross-entropy and auxiliary cross-entropy, the teacher's forward without gradient, the
  distillation loss (KD written out; other methods call the method module itself, whose
  computation is the method, not the harness), backward, the same optimiser, and one
  ``loss.item()`` per ``--log-every`` steps.

Variants: bf16 autocast with and without channels-last for every method; float32 eager and
bf16 + channels-last + ``torch.compile`` for kd only. Both loops run interleaved in blocks
(harness, bare, harness, ...) so drift affects both alike; a block's step time is its wall
time between two device synchronisations over its steps. Reported per configuration: median
step seconds, images per second, achieved TFLOP/s from kdbench's FLOP count of the step
(:func:`kdbench.train.cost.count_step_flops`), peak device memory, and harness / bare.

The data pipeline at Cityscapes' size (measured first): a synthetic tree at 2048×1024 in the
Cityscapes layout (:mod:`benchmarks.loader_speed`), read through kdbench's pipeline with CIRKD's
augmentation by 1 and 2 DataLoader workers: samples per second per worker, beside the images per
second the fastest configuration of each batch size consumes (the workers a GPU needs).

JSON goes to ``--out`` after every configuration (a run cut short keeps what it measured);
``--budget-s`` stops starting new configurations after that many seconds (they are listed as
skipped). ``--device cpu --tiny --compile-backend eager`` runs the same code on tiny models and
crops in seconds (figures meaningless, for the tests).

    python benchmarks/gpu_step.py [--device auto] [--tiny] [--out gpu_step.json] [--budget-s 240]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # loader_speed beside this file

from _common import parser as shared_parser  # noqa: E402

from kdbench.method import Batch, build_method  # noqa: E402
from kdbench.models.student import Segmenter  # noqa: E402
from kdbench.registry import METHODS, TEACHERS  # noqa: E402
from kdbench.train import gpu  # noqa: E402
from kdbench.train.cost import count_step_flops  # noqa: E402
from kdbench.train.loop import Models, train_step  # noqa: E402
from kdbench.train.precision import PendingSteps  # noqa: E402

K = 19
IGNORE = 255
DEFAULT_METHODS = ("none", "kd", "cirkd", "lix")


@dataclass(frozen=True)
class Scale:
    """Shapes and sizes of one benchmark scale (the recipe's, or tiny for the CPU tests)."""

    crop: tuple[int, int]
    teacher: str
    student: str
    channels: int
    batches: tuple[int, ...]
    warmup: int
    blocks: int
    steps: int
    loader_image: tuple[int, int]
    loader_images: int
    loader_batches: int


FULL = Scale((512, 1024), "resnet101", "resnet18", 256, (8, 2), 3, 3, 5, (1024, 2048), 6, 4)
TINY = Scale((32, 64), "test_resnet", "test_resnet", 16, (2,), 1, 2, 2, (64, 128), 3, 2)


@dataclass(frozen=True)
class Variant:
    """One configuration of the matrix."""

    method: str
    batch: int
    amp: str
    channels_last: bool
    compile: bool

    @property
    def name(self) -> str:
        layout = "+cl" if self.channels_last else ""
        return f"{self.method} b{self.batch} {self.amp}{layout}{' compile' if self.compile else ''}"


def matrix(methods: list[str], batches: tuple[int, ...]) -> list[Variant]:
    """bf16 ± channels-last for every method, fp32 eager and bf16 + cl + compile for kd.

    In the order a cut budget should keep: per batch size, bf16 + channels-last (the GPU path's
    default) for every method, then kd's fp32 and compiled steps, then bf16 without
    channels-last."""
    out = []
    for batch in batches:
        out += [Variant(m, batch, "bf16", True, False) for m in methods]
        if "kd" in methods:
            out += [Variant("kd", batch, "off", False, False),
                    Variant("kd", batch, "bf16", True, True)]
        out += [Variant(m, batch, "bf16", False, False) for m in methods]
    return out


@dataclass
class Setup:
    """The modules of one configuration, shared by both loops (built per configuration)."""

    models: Models
    fast: Models
    """What both loops step: ``models``, compiled when the variant is (compiled once)."""
    optimizer: torch.optim.Optimizer
    data: dict[str, torch.Tensor]
    device: torch.device
    variant: Variant


def build(scale: Scale, variant: Variant, device: torch.device, backend: str) -> Setup:
    """Teacher, student and method at ``scale`` on ``device``, in the variant's layout."""
    torch.manual_seed(0)
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    teacher = TEACHERS.get("rgb")(scale.teacher, K, 1, decoder_channels=scale.channels,
                                  head="deeplabv3", head_options={"output_stride": 8})
    teacher = teacher.eval().requires_grad_(False).to(device, memory_format=fmt)
    student = Segmenter(scale.student, K, decoder_channels=scale.channels, head="deeplabv3",
                        head_options={"output_stride": 8, "aux": 0.4})
    student = student.train().to(device, memory_format=fmt)
    terms = [] if variant.method == "none" else [(variant.method, {})]
    method = build_method(terms, student.tap_info, teacher.tap_info).to(device)
    params = [p for m in (student, method) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4,
                                **gpu.optimizer_options(device))
    models = Models(student, method, teacher if method.taps else None, uses_x=False,
                    aux_weight=student.aux_weight)
    g = torch.Generator().manual_seed(1)
    h, w = scale.crop
    label = torch.randint(0, K, (variant.batch, h, w), generator=g)
    label[:, : h // 16] = IGNORE  # a band of unlabelled pixels, as Cityscapes has
    data = {"rgb": torch.randn(variant.batch, 3, h, w, generator=g).to(device, memory_format=fmt),
            "x": torch.zeros(variant.batch, 1, h, w).to(device, memory_format=fmt),
            "label": label.to(device)}
    fast = gpu.compiled(models, variant.compile, backend)
    return Setup(models, fast, optimizer, data, device, variant)


def harness_loop(setup: Setup, log_every: int) -> Callable[[int, int], None]:
    """``run(first, n)``: n steps of kdbench's train_step from step ``first``."""
    models = setup.fast
    scaler = torch.amp.GradScaler(setup.device.type, enabled=False)
    pending, train = PendingSteps(), {"amp": setup.variant.amp}

    def run(first: int, n: int) -> None:
        for step in range(first, first + n):
            pending.add(train_step(models, setup.data, step, 10**6, 0, train, setup.optimizer,
                                   scaler, setup.device))
            if (step + 1) % log_every == 0:
                pending.read()

    return run


def bare_loop(setup: Setup, log_every: int) -> Callable[[int, int], None]:
    """``run(first, n)``: the same work written as a plain PyTorch loop."""
    m = setup.fast
    student, teacher, method = m.model, m.teacher, m.method
    rgb, label = setup.data["rgb"], setup.data["label"]
    size, bf16 = label.shape[-2:], setup.variant.amp == "bf16"
    kd = setup.variant.method == "kd"

    def ce(logits: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return F.cross_entropy(up.float(), label, ignore_index=IGNORE)

    def step(i: int) -> torch.Tensor:
        with torch.autocast(setup.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = student(rgb)
            loss = ce(out.logits) + m.aux_weight * ce(out.aux)
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(rgb, None)
                if kd:
                    log_ps = F.log_softmax(out.logits.float(), dim=1)
                    log_pt = F.log_softmax(t_out.logits.float(), dim=1)
                    loss = loss + (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()
                else:
                    batch = Batch(rgb=rgb, x=None, label=label, step=i, total_steps=10**6)
                    loss = loss + sum(method(out, t_out, batch).values())
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        setup.optimizer.step()
        return loss

    def run(first: int, n: int) -> None:
        for i in range(first, first + n):
            loss = step(i)
            if (i + 1) % log_every == 0:
                loss.item()

    return run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Median step seconds of the timed blocks of one loop, and its peak device memory."""

    blocks: list[float] = field(default_factory=list)
    peak_mb: float | None = None

    def step_s(self) -> float:
        return statistics.median(self.blocks)


def measure(setup: Setup, scale: Scale, log_every: int) -> dict[str, Timing]:
    """Warm both loops up, then time ``scale.blocks`` interleaved blocks of each."""
    loops = {"harness": harness_loop(setup, log_every), "bare": bare_loop(setup, log_every)}
    timings = {name: Timing() for name in loops}
    step = 0
    for name, run in loops.items():
        if setup.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(setup.device)
        run(step, scale.warmup)
        step += scale.warmup
        sync(setup.device)
        if setup.device.type == "cuda":
            timings[name].peak_mb = torch.cuda.max_memory_allocated(setup.device) / 2**20
    for _ in range(scale.blocks):
        for name, run in loops.items():
            sync(setup.device)
            t0 = time.perf_counter()
            run(step, scale.steps)
            sync(setup.device)
            timings[name].blocks.append((time.perf_counter() - t0) / scale.steps)
            step += scale.steps
    return timings


def step_flops(setup: Setup) -> int:
    """kdbench's FLOP count of one training step of this configuration."""
    return count_step_flops(setup.models, setup.data, 10**6).total


def config_result(variant: Variant, timings: dict[str, Timing], flops: int) -> dict[str, Any]:
    out: dict[str, Any] = {**asdict(variant), "name": variant.name, "flops_per_step": flops}
    for name, t in timings.items():
        s = t.step_s()
        out[name] = {"step_s": s, "images_s": variant.batch / s, "tflops": flops / s / 1e12,
                     "peak_memory_mb": t.peak_mb, "blocks_s": t.blocks}
    out["harness_over_bare"] = out["harness"]["step_s"] / out["bare"]["step_s"]
    return out


def loader_part(scale: Scale, workers: list[int]) -> dict[str, Any]:
    """Samples per second (and per worker) of the Cityscapes pipeline on a synthetic tree."""
    from loader_speed import RECIPE, loader_rate, write_tree

    from kdbench.data.cityscapes import Cityscapes

    recipe = {**RECIPE, "crop": list(scale.crop)}
    out: dict[str, Any] = {"image": list(scale.loader_image), "recipe": recipe, "workers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cityscapes"
        write_tree(root, scale.loader_images, scale.loader_image)
        dataset = Cityscapes("train", root=str(root), modality="disparity")
        for n in workers:
            rate, cpu = loader_rate(dataset, n, scale.loader_batches, 2, recipe)
            out["workers"][str(n)] = {"samples_s": rate, "per_worker_samples_s": rate / n,
                                      "main_cpu_s_per_sample": cpu}
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Ratios for the README: harness / bare per configuration, the fastest kd configuration
    against fp32 eager, and the loader workers each GPU needs at the fastest step."""
    configs = result["configs"]
    out: dict[str, Any] = {
        "worst_harness_over_bare": max((c["harness_over_bare"] for c in configs), default=None),
        "harness_over_bare": {c["name"]: round(c["harness_over_bare"], 4) for c in configs},
    }
    for batch in sorted({c["batch"] for c in configs}):
        kd = {(c["amp"], c["channels_last"], c["compile"]): c["harness"]["step_s"]
              for c in configs if c["method"] == "kd" and c["batch"] == batch}
        fp32 = kd.get(("off", False, False))
        if fp32 is not None:
            out[f"kd_b{batch}_fp32_over"] = {
                f"{amp}{'+cl' if cl else ''}{'+compile' if comp else ''}": fp32 / s
                for (amp, cl, comp), s in kd.items()
            }
        need = max(c["harness"]["images_s"] for c in configs if c["batch"] == batch)
        loader = result.get("loader", {}).get("workers", {})
        per_worker = max((w["per_worker_samples_s"] for w in loader.values()), default=None)
        out[f"b{batch}_images_s_needed"] = need
        out[f"b{batch}_workers_needed"] = need / per_worker if per_worker else None
    return out


def write(path: Path, result: dict[str, Any]) -> None:
    result["summary"] = summary(result)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)


def environment(device: torch.device) -> dict[str, Any]:
    return {"torch": torch.__version__, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads()}


def run_matrix(args: argparse.Namespace, scale: Scale, device: torch.device,
               result: dict[str, Any]) -> None:
    """Measure every configuration, writing the JSON after each; stop at the budget."""
    gpu.configure(device)
    methods = list(METHODS.names()) if args.methods == ["all"] else args.methods
    flops: dict[tuple[str, int], int] = {}
    start = time.perf_counter()
    for variant in matrix(methods, scale.batches):
        if time.perf_counter() - start > args.budget_s:
            result["skipped"].append(variant.name)
            continue
        setup = build(scale, variant, device, args.compile_backend)
        key = (variant.method, variant.batch)
        if key not in flops:
            flops[key] = step_flops(setup)
        timings = measure(setup, scale, args.log_every)
        result["configs"].append(config_result(variant, timings, flops[key]))
        print(f"{variant.name:28s} harness/bare {result['configs'][-1]['harness_over_bare']:.3f}"
              f"  {result['configs'][-1]['harness']['images_s']:8.2f} img/s", flush=True)
        write(args.json, result)
        del setup
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = shared_parser(__doc__, "gpu_step")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="tiny models and crops (tests)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=240.0)
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (eager: trace only, for quick CPU checks)")
    args = parser.parse_args(argv)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    scale = TINY if args.tiny else FULL
    result: dict[str, Any] = {"env": environment(device), "scale": asdict(scale),
                              "configs": [], "skipped": []}
    result["loader"] = loader_part(scale, args.loader_workers)
    write(args.json, result)
    run_matrix(args, scale, device, result)
    print(json.dumps(result["summary"], indent=1))
    return result


if __name__ == "__main__":
    main()
