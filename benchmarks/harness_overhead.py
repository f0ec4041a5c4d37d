"""What the harness costs per training step, against a bare PyTorch loop on the same work.

For the student baseline (cross-entropy only) and for KD (teacher forward + KD loss), the same
model, batch and optimizer are stepped by (a) ``kdbench.train.loop.train_step`` and (b) a
hand-written loop of forward, loss, backward, SGD step. Both are interleaved (ABAB...) so drift
of the machine affects both alike; the script prints the median step time of each and the
ratio. Neither augments: augmentation runs in the data pipeline (kdbench.train.pipeline).

    python benchmarks/harness_overhead.py [--backbone resnet10t] [--steps 30] [--size 64 128]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import Report, parser

from kdbench.data.base import IGNORE_INDEX
from kdbench.method import build_method
from kdbench.models.student import Segmenter
from kdbench.registry import TEACHERS
from kdbench.train.loop import Models, train_step
from kdbench.train.precision import PendingSteps
from methods.kd import kd_loss

TRAIN = {"amp": "off"}
LOG_EVERY = 10
"""``train.log_every``'s default: the harness reads its losses once per 10 steps."""


def bare_step(model, teacher, opt, rgb, x, label, use_kd: bool) -> None:  # noqa: ANN001
    out = model(rgb)
    logits = F.interpolate(out.logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX)
    if use_kd:
        with torch.no_grad():
            zt = teacher(rgb, x).logits
        loss = loss + kd_loss(out.logits, zt)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "harness_overhead")
    options.add_argument("--backbone", default="resnet10t")
    options.add_argument("--steps", type=int, default=30)
    options.add_argument("--batch", type=int, default=8)
    options.add_argument("--size", type=int, nargs=2, default=(64, 128))
    args = options.parse_args(argv)
    with Report("harness_overhead", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Step both loops in turn; print and return the median milliseconds of each, per method."""
    torch.manual_seed(0)
    figures = {}
    k, (h, w) = 8, args.size
    rgb = torch.randn(args.batch, 3, h, w)
    x = torch.randn(args.batch, 1, h, w)
    label = torch.randint(0, k, (args.batch, h, w))
    data = {"rgb": rgb, "x": x, "label": label}
    teacher = TEACHERS.get("intermediate")(args.backbone, k, 1).eval()
    device = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backbone "
          f"{args.backbone}, batch {args.batch}x3x{h}x{w}, median of {args.steps} steps each")
    for name in ("none", "kd"):
        model = Segmenter(args.backbone, k)
        method = build_method([] if name == "none" else [(name, {})], model.tap_info,
                              teacher.tap_info)
        models = Models(model, method, teacher, uses_x=False)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        harness, bare, pending = [], [], PendingSteps()
        for step in range(args.steps + 3):
            t0 = time.perf_counter()
            pending.add(train_step(models, data, step, args.steps, 0, TRAIN, opt, scaler, device))
            if (step + 1) % LOG_EVERY == 0:
                pending.read()  # the run's one read of the losses per logging interval
            t1 = time.perf_counter()
            bare_step(model, teacher, opt, rgb, x, label, name == "kd")
            t2 = time.perf_counter()
            if step >= 3:  # warm-up
                harness.append(t1 - t0)
                bare.append(t2 - t1)
        mh, mb = statistics.median(harness), statistics.median(bare)
        print(f"{name:5s} harness {mh * 1e3:8.1f} ms   bare loop {mb * 1e3:8.1f} ms   "
              f"overhead {100 * (mh / mb - 1):+5.1f}%")
        figures[name] = {"harness_ms": mh * 1e3, "bare_ms": mb * 1e3}
    return figures


if __name__ == "__main__":
    main()
