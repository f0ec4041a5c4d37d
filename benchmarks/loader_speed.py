"""Samples per second of the Cityscapes training pipeline at native resolution, by workers.

Writes a synthetic tree in the Cityscapes layout at 2048x1024 (synthdrive scenes rendered at
that size: smooth surfaces, texture and noise, so PNG decoding costs about what real frames
cost; label ids, uint16 disparity and camera json as cityscapesScripts writes them), then
reads it through kdbench's training pipeline with CIRKD's recipe (decode, disparity -> depth
-> x, random scale 0.5-2.0, crop 512x1024, flip) with 0, 1 and 2 DataLoader workers, and
prints samples per second (after the first batch, so worker start-up is excluded) and the
training process's CPU seconds per sample (with 0 workers: the whole cost of decoding and
augmenting a sample; with workers: what remains on the training process).

Beside it, the work the loader must feed, measured in the same run: one training step of the
Cityscapes suite's student (DeepLabV3 ResNet-18, output stride 8, auxiliary head) on a
512x1024 crop on this machine's CPU, per sample.

    python benchmarks/loader_speed.py [--images 12] [--batches 6] [--batch 2] [--root DIR]
        [--json PATH]

``--root`` keeps the synthetic tree in DIR (written once) instead of a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import Report, parser
from PIL import Image

from kdbench.data.cityscapes import Cityscapes
from kdbench.data.geometry import depth_to_disparity
from kdbench.data.synthdrive import generate, intrinsics_for
from kdbench.models.student import Segmenter
from kdbench.train.pipeline import train_loader

SIZE = (1024, 2048)
BASELINE = 0.209313
LABEL_IDS = np.array([7, 8, 11, 17, 21, 23, 26], dtype=np.uint8)
"""synthdrive's classes (road, sidewalk, building, pole, vegetation, sky, car) as Cityscapes ids."""
RECIPE = {"flip": True, "scale": [0.5, 2.0], "crop": [512, 1024], "jitter": 0.0}


def write_tree(root: Path, count: int, size: tuple[int, int] = SIZE) -> None:
    """``count`` train frames of city "synth" in the Cityscapes layout at ``size`` (H, W)."""
    fx, fy, cx, cy = intrinsics_for(size)
    camera = {"extrinsic": {"baseline": BASELINE},
              "intrinsic": {"fx": fx, "fy": fy, "u0": cx, "v0": cy}}
    for i in range(count):
        stem = f"synth_{i:06d}_000019"
        rgb, depth, label = generate(0, "train", i, size)
        disparity = depth_to_disparity(depth, fx, BASELINE)
        raw = np.where(disparity > 0, np.round(disparity * 256 + 1), 0).clip(0, 65535)
        files = {
            "leftImg8bit": (f"{stem}_leftImg8bit.png", (rgb * 255).round().astype(np.uint8)),
            "gtFine": (f"{stem}_gtFine_labelIds.png", LABEL_IDS[label]),
            "disparity": (f"{stem}_disparity.png", raw.astype(np.uint16)),
        }
        for folder, (name, array) in files.items():
            path = root / folder / "train" / "synth" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
        path = root / "camera" / "train" / "synth" / f"{stem}_camera.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(camera))


def loader_rate(
    dataset: Cityscapes, workers: int, batches: int, batch: int, recipe: dict = RECIPE
) -> tuple[float, float]:
    """(samples per second, CPU seconds of this process per sample) over ``batches`` batches
    after the first, with the augmentation ``recipe``; with 0 workers the CPU time is the whole
    cost of a sample."""
    train = {**recipe, "batch_size": batch, "steps": batches + 1, "workers": workers}
    loader = iter(train_loader(dataset, seed=0, train=train, normals=False, start=0,
                               device=torch.device("cpu")))
    next(loader)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(loader)
    samples = batches * batch
    return samples / (time.perf_counter() - t0), (time.process_time() - c0) / samples


def step_seconds(batch: int, repeats: int = 3) -> float:
    """Median seconds of one forward + backward + SGD step of the suite's student, per sample."""
    torch.manual_seed(0)
    model = Segmenter("resnet18", 19, decoder_channels=256, head="deeplabv3",
                      head_options={"output_stride": 8, "aux": 0.4}).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rgb = torch.randn(batch, 3, 512, 1024)
    label = torch.randint(0, 19, (batch, 512, 1024))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(rgb)
        up = torch.nn.functional.interpolate(out.logits, size=(512, 1024), mode="bilinear")
        aux = torch.nn.functional.interpolate(out.aux, size=(512, 1024), mode="bilinear")
        ce = torch.nn.functional.cross_entropy
        loss = ce(up, label) + 0.4 * ce(aux, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / batch


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "loader_speed")
    options.add_argument("--images", type=int, default=12)
    options.add_argument("--batches", type=int, default=6)
    options.add_argument("--batch", type=int, default=2)
    options.add_argument("--root", type=Path, default=None)
    args = options.parse_args(argv)
    with Report("loader_speed", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Time the loader by workers and the student's step; print and return the figures."""
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "cityscapes"
        if not (root / "camera").is_dir():
            t0 = time.perf_counter()
            write_tree(root, args.images)
            print(f"wrote {args.images} frames at 2048x1024 in {time.perf_counter() - t0:.1f} s")
        dataset = Cityscapes("train", root=str(root), modality="disparity")
        t0 = time.perf_counter()
        dataset[0]
        figures["decode_one_s"] = time.perf_counter() - t0
        print(f"decode one sample (no augmentation): {figures['decode_one_s']:.3f} s")
        for workers in (0, 1, 2):
            rate, cpu = loader_rate(dataset, workers, args.batches, args.batch)
            figures[f"samples_per_s_{workers}_workers"] = rate
            figures[f"main_cpu_s_per_sample_{workers}_workers"] = cpu
            print(f"loader, {workers} workers: {rate:6.2f} samples/s ({1 / rate:.3f} s/sample; "
                  f"main process CPU {cpu:.3f} s/sample)")
    per_sample = step_seconds(args.batch)
    print(f"training step (DeepLabV3 R18 OS8 + aux, 512x1024, CPU, {torch.get_num_threads()} "
          f"threads): {per_sample:.2f} s/sample ({1 / per_sample:.3f} samples/s)")
    return {**figures, "step_s_per_sample": per_sample}


if __name__ == "__main__":
    main()
