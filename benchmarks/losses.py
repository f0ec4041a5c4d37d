"""Cost of every method's loss at a realistic segmentation shape, against the student's own step.

For each registered method, the loss ``method(student, teacher, batch)`` is run forward and
backward on random tensors of a Cityscapes-like shape, and its median time and peak memory are
printed next to (and as a ratio to) the forward + backward of a real student measured in the
same run. Each measurement runs in a fresh subprocess, so one peak cannot hide another.

Shapes (input ``--size`` H x W = 512 x 1024, ``--batch`` N = 8, K = 19 classes):

- logits (N, 19, H/8, W/8) = (8, 19, 64, 128), as the issue states (a stride-8 head); the
  decoder feature has the logits' size (the ``Outputs`` contract), 128 channels for the student
  and 256 for the teacher;
- two encoder stages, at 1/8 and 1/16 of the input: student (128, 256) channels, teacher
  (256, 512), i.e. the teacher 2x wider, so every adapter exists. With two stages the methods'
  default ``stages`` ((-1,) or (-2, -1)) select these stages;
- teacher tensors without grad; student tensors are leaves that require grad; labels at the
  input size, uniform over the 19 classes. Every method runs with its default options, and the
  rows of :data:`VARIANTS` with theirs (``adv:official``: SKD's WGAN-GP form).

A row's step is the loss's forward and backward plus the method's hook around the optimiser
step (:meth:`~kdbench.method.Method.before_optimizer_step`: adv's discriminator step, Af-DCD's
gradient clipping), as a training step runs them.

Reference: ``Segmenter(--student, 19)`` (resnet18 + FPN decoder, logits at 1/4) on
(N, 3, H, W) images: forward, cross-entropy on logits upsampled to the labels, backward.

Time: wall and process CPU time (all threads), each the median of up to ``--repeat`` calls
after one warm-up call (which also initialises state, e.g. ARFD's anchors); a row stops early
once its calls add up to ``--budget`` seconds, and a warm-up call that alone exceeds the budget
is the row's only (timed) call, its one-time costs being negligible at that length; so the
slowest rows (the student reference, CIRKD) do not make the whole benchmark run for half an
hour on a CPU. The table says how many calls each median has. The ratio to the student uses
CPU time, which other processes sharing the machine inflate far less than wall time (the rows
run minutes apart, under whatever load there is then). Peak memory: on CPU, the rise of
``ru_maxrss`` (the process's resident high-water mark) over its value once inputs and modules
are built; on CUDA, ``max_memory_allocated`` minus the memory allocated at that point. Both
include the gradients.

    python benchmarks/losses.py [--methods kd arfd] [--repeat 3] [--device cpu] [--quick]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import Report, parser

from kdbench.data.base import IGNORE_INDEX
from kdbench.method import Batch, build_method
from kdbench.models.outputs import Outputs, TapInfo
from kdbench.models.student import Segmenter
from kdbench.registry import METHODS

K = 19
STUDENT_INFO = TapInfo((128, 256), (8, 16), 128, K, 8)
TEACHER_INFO = TapInfo((256, 512), (8, 16), 256, K, 8)
REFERENCE = "student"
VARIANTS = {"adv:official": ("adv", {"form": "official"})}
"""Rows of a method with non-default options: row name -> (method, options)."""


def rows() -> dict[str, tuple[str, dict]]:
    """Every row but the reference: each registered method at its defaults, then VARIANTS."""
    return {name: (name, {}) for name in METHODS.names() if name != "none"} | VARIANTS


def random_outputs(
    info: TapInfo, n: int, size: tuple[int, int], grad: bool, device: str
) -> Outputs:
    """Random (N, C, H/r, W/r) logits, stages and decoder for ``info``, leaves iff ``grad``."""

    def rand(channels: int, reduction: int) -> torch.Tensor:
        shape = (n, channels, size[0] // reduction, size[1] // reduction)
        return torch.randn(shape, device=device).requires_grad_(grad)

    return Outputs(
        logits=rand(info.num_classes, info.logit_reduction),
        stages=tuple(
            rand(c, r) for c, r in zip(info.stage_channels, info.stage_reductions, strict=True)
        ),
        decoder=rand(info.decoder_channels, info.logit_reduction),
    )


def student_step(args: argparse.Namespace) -> Callable[[], None]:
    """One forward + cross-entropy + backward of the reference student, inputs built once."""
    model = Segmenter(args.student, K).to(args.device)
    rgb = torch.randn(args.batch, 3, *args.size, device=args.device)
    label = torch.randint(0, K, (args.batch, *args.size), device=args.device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits = F.interpolate(model(rgb).logits, size=args.size, mode="bilinear")
        F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX).backward()

    return step


def loss_step(name: str, args: argparse.Namespace) -> Callable[[], None]:
    """One forward + backward of row ``name``'s summed loss terms and the method's hook,
    inputs built once."""
    method = build_method([rows()[name]], STUDENT_INFO, TEACHER_INFO).to(args.device)
    student = random_outputs(STUDENT_INFO, args.batch, args.size, True, args.device)
    teacher = random_outputs(TEACHER_INFO, args.batch, args.size, False, args.device)
    batch = Batch(
        rgb=torch.randn(args.batch, 3, *args.size, device=args.device),
        x=torch.randn(args.batch, 1, *args.size, device=args.device),
        label=torch.randint(0, K, (args.batch, *args.size), device=args.device),
        step=50,
        total_steps=100,
    )
    leaves = (student.logits, student.decoder, *student.stages)

    def step() -> None:
        method.zero_grad(set_to_none=True)
        for t in leaves:
            t.grad = None
        sum(method(student, teacher, batch).values()).backward()
        method.before_optimizer_step()

    return step


def high_water(device: torch.device) -> int:
    """Peak bytes so far: CUDA allocator peak, or the process's max resident set (Linux KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Median fwd+bwd milliseconds and peak MB above the built-inputs baseline, for ``name``."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    step = student_step(args) if name == REFERENCE else loss_step(name, args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    baseline = high_water(device)
    times: list[float] = []
    cpu_times: list[float] = []
    for _ in range(args.repeat + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        if sum(times) >= args.budget:  # a warm-up this long is the single timed call
            break
    timed = slice(1, None) if len(times) > 1 else slice(None)
    return {
        "ms": 1e3 * statistics.median(times[timed]),
        "cpu_ms": 1e3 * statistics.median(cpu_times[timed]),
        "calls": len(times[timed]),
        "mb": (high_water(device) - baseline) / 2**20,
    }


def run_isolated(name: str, argv: list[str]) -> dict[str, float] | str:
    """:func:`measure` in a fresh interpreter; the result, or the error's last line."""
    cmd = [sys.executable, __file__, *argv, "--one", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        return f"failed: {lines[-1]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe_arfd(args: argparse.Namespace) -> None:
    """Print ARFD's CKA size per distilled stage: n pixels, d channels, an n x n Gram's size."""
    arfd = build_method([("arfd", {})], STUDENT_INFO, TEACHER_INFO).terms["arfd"]
    for i in arfd.stages:
        r = TEACHER_INFO.stage_reductions[i]
        n = args.batch * (args.size[0] // r) * (args.size[1] // r)
        d_s, d_t = STUDENT_INFO.stage_channels[i], TEACHER_INFO.stage_channels[i]
        print(f"ARFD stage 1/{r}: linear CKA on n = {n} pixels, d = {d_t} (recalibrated from "
              f"{d_s}) x {d_t}; an n x n float32 Gram would need {4 * n * n / 1e9:.3g} GB")


def main(argv: list[str] | None = None) -> None:
    """Parse options; either measure one name (``--one``) or run all and print the table."""
    options = parser(__doc__, "losses")
    default = list(rows())
    options.add_argument("--methods", nargs="+", default=default, choices=default)
    options.add_argument("--repeat", type=int, default=3)
    options.add_argument("--budget", type=float, default=30.0,
                         help="seconds of timed calls after which a row stops (default: 30)")
    options.add_argument("--device", default="cpu")
    options.add_argument("--batch", type=int, default=8)
    options.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    options.add_argument("--student", default="resnet18", help="timm backbone of the reference")
    options.add_argument("--quick", action="store_true", help="smoke: batch 2, 128x256, repeat 1")
    options.add_argument("--one", help=argparse.SUPPRESS)
    args = options.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeat = 2, (128, 256), 1
    args.size = tuple(args.size)
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    with Report("losses", args, argv) as report:
        report.results = table(args)


def table(args: argparse.Namespace) -> dict[str, dict[str, float] | str]:
    """Measure the reference and every method, each in its own process; print the table and
    return each row's figures (or its error)."""
    argv = ["--repeat", str(args.repeat), "--budget", str(args.budget), "--device", args.device,
            "--batch", str(args.batch),
            "--size", *map(str, args.size), "--student", args.student]
    h, w = args.size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"median of up to {args.repeat} calls (fewer past {args.budget:g} s) after 1 warm-up; "
          "one subprocess per row")
    print(f"reference: {args.student} student, fwd + CE + bwd on {args.batch}x3x{h}x{w}")
    print(f"losses: logits {args.batch}x{K}x{h // 8}x{w // 8}, stages 1/8 and 1/16 with "
          f"student {STUDENT_INFO.stage_channels} / teacher {TEACHER_INFO.stage_channels} ch\n")
    ref = run_isolated(REFERENCE, argv)
    if isinstance(ref, str):
        sys.exit(f"reference student {ref}")
    rows = {REFERENCE: ref}
    print("| method | wall ms | CPU ms | calls | ratio to student (CPU) | peak MB | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in [REFERENCE, *args.methods]:
        row = rows[name] = ref if name == REFERENCE else run_isolated(name, argv)
        if isinstance(row, str):
            print(f"| {name} | {row} | | | | | |")
        else:
            print(f"| {name} | {row['ms']:.0f} | {row['cpu_ms']:.0f} | {row['calls']} | "
                  f"{row['cpu_ms'] / ref['cpu_ms']:.3f} | {row['mb']:.0f} | "
                  f"{row['mb'] / ref['mb']:.3f} |", flush=True)
    if "arfd" in args.methods:
        print()
        describe_arfd(args)
    return rows


if __name__ == "__main__":
    main()
