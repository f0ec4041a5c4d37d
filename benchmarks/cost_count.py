"""What measuring a run's cost costs: the one-off FLOP count against a training step.

For the student baseline and some methods, the script times ``count_step_flops`` (one counted
step on copies of the student and method, done once per run before training) and the median of
``--steps`` training steps after 3 warm-up steps, on the same models and batch, and prints the
counted GFLOPs per step by part and how many training steps the count costs.

    python benchmarks/cost_count.py [--backbone mobilenetv3_small_050] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdbench.method import build_method
from kdbench.models.student import Segmenter
from kdbench.registry import TEACHERS
from kdbench.train.cost import count_step_flops
from kdbench.train.loop import Models, train_step

TRAIN = {"flip": True, "scale": [0.75, 1.5], "amp": "off"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenetv3_small_050")
    parser.add_argument("--methods", default="none,kd,cirkd,lix")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 128))
    args = parser.parse_args()
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
    for name in args.methods.split(","):
        model = Segmenter(args.backbone, k)
        terms = [] if name == "none" else [(name, {})]
        method = build_method(terms, model.tap_info, teacher.tap_info)
        models = Models(model, method, teacher if method.taps else None, uses_x=False)
        t0 = time.perf_counter()
        flops = count_step_flops(models, data, args.steps)
        count_s = time.perf_counter() - t0
        params = [p for m in (model, method) for p in m.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        times = []
        for step in range(args.steps + 3):
            t0 = time.perf_counter()
            train_step(models, data, step, args.steps, 0, TRAIN, opt, scaler, device)
            times.append(time.perf_counter() - t0)
        step_s = statistics.median(times[3:])
        parts = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in flops.to_dict().items())
        print(f"{name:6s} GFLOPs/step: {parts}   step {step_s * 1e3:7.1f} ms   "
              f"count {count_s * 1e3:7.1f} ms = {count_s / step_s:4.1f} steps")


if __name__ == "__main__":
    main()
