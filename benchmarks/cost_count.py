"""What measuring a run's cost costs: the one-off FLOP count against a training step.

For the student baseline and some methods, the script times ``count_step_flops`` (one counted
step on copies of the student and method, done once per run before training) and the median of
``--steps`` training steps after 3 warm-up steps, on the same models and batch, and prints the
counted GFLOPs per step by part and how many training steps the count costs.

    python benchmarks/cost_count.py [--backbone mobilenetv3_small_050] [--steps 10] [--json PATH]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from _common import Report, median, parser, timed

from kdbench.method import build_method
from kdbench.models.student import Segmenter
from kdbench.registry import TEACHERS
from kdbench.train.cost import count_step_flops
from kdbench.train.loop import Models, train_step

TRAIN = {"flip": True, "scale": [0.75, 1.5], "amp": "off"}


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "cost_count")
    options.add_argument("--backbone", default="mobilenetv3_small_050")
    options.add_argument("--methods", default="none,kd,cirkd,lix")
    options.add_argument("--steps", type=int, default=10)
    options.add_argument("--batch", type=int, default=8)
    options.add_argument("--size", type=int, nargs=2, default=(64, 128))
    args = options.parse_args(argv)
    with Report("cost_count", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Count and time each method; print and return, per method, GFLOPs by part and times."""
    torch.manual_seed(0)
    k, (h, w) = 7, args.size
    data = {
        "rgb": torch.randn(args.batch, 3, h, w),
        "x": torch.randn(args.batch, 1, h, w),
        "label": torch.randint(0, k, (args.batch, h, w)),
    }
    teacher = TEACHERS.get("intermediate")(args.backbone, k, 1).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    device = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backbone "
          f"{args.backbone}, batch {args.batch}x3x{h}x{w}, median of {args.steps} steps")
    figures = {}
    for name in args.methods.split(","):
        model = Segmenter(args.backbone, k)
        terms = [] if name == "none" else [(name, {})]
        method = build_method(terms, model.tap_info, teacher.tap_info)
        models = Models(model, method, teacher if method.taps else None, uses_x=False)
        flops, count_s, _ = timed(partial(count_step_flops, models, data, args.steps))
        params = [p for m in (model, method) for p in m.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        times = []
        for step in range(args.steps + 3):
            _, wall, _ = timed(partial(train_step, models, data, step, args.steps, 0, TRAIN, opt,
                                       scaler, device))
            times.append(wall)
        step_s = median(times[3:])
        parts = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in flops.to_dict().items())
        print(f"{name:6s} GFLOPs/step: {parts}   step {step_s * 1e3:7.1f} ms   "
              f"count {count_s * 1e3:7.1f} ms = {count_s / step_s:4.1f} steps")
        figures[name] = {"gflops": {k: v / 1e9 for k, v in flops.to_dict().items()},
                         "step_ms": step_s * 1e3, "count_ms": count_s * 1e3}
    return figures


if __name__ == "__main__":
    main()
