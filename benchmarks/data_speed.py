"""How fast synthdrive generates samples, next to how fast the same samples load from PNG files.

Usage: ``python benchmarks/data_speed.py [--samples-small 128] [--samples-large 16] [--json PATH]``.

For 64 × 128 and 256 × 512 it reports, single-threaded, samples per second by wall-clock time and
by process CPU time (less sensitive to other processes sharing the cores):

- ``synthdrive``: :class:`~kdbench.data.synthdrive.SynthDrive` construction (scene sampling, ray
  casting, shading, normalisation and the modality encoding) for the ``depth`` and ``normals``
  modalities;
- ``png decode``: reading the equivalent files written beforehand with PIL into a temporary
  folder (rgb 8-bit PNG, depth uint16 PNG in 1/256 m as KITTI stores it, label 8-bit PNG) and
  decoding them to arrays (the page cache is warm: this is decoding, not disk speed);
- ``png decode + encode``: the same plus the work a real loader then does (normalize_rgb,
  encode_modality, tensors), i.e. what a disk-backed data set costs per sample.

synthdrive pays its cost once, in the constructor (the split then lives in memory and an item is
a tensor view); a disk-backed data set pays decode + encode for every sample in every epoch
unless it caches.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import Report, parser, timed
from PIL import Image

from kdbench.data.base import normalize_rgb
from kdbench.data.geometry import encode_modality
from kdbench.data.synthdrive import MAX_DEPTH, SynthDrive, generate, intrinsics_for


def write_pngs(folder: Path, size: tuple[int, int], count: int) -> None:
    """Write ``count`` synthdrive samples as rgb/depth/label PNGs into ``folder``."""
    for index in range(count):
        rgb, depth, label = generate(0, "train", index, size)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / f"{index}_rgb.png")
        stored = np.where(np.isfinite(depth), np.clip(depth * 256, 0, 65535), 0)
        Image.fromarray(stored.astype(np.uint16)).save(folder / f"{index}_depth.png")
        Image.fromarray(label.astype(np.uint8)).save(folder / f"{index}_label.png")


def load_pngs(folder: Path, size: tuple[int, int], count: int, modality: str | None) -> None:
    """Decode ``count`` samples, and encode them as a loader would unless ``modality`` is None."""
    intrinsics = intrinsics_for(size)
    for index in range(count):
        rgb = np.asarray(Image.open(folder / f"{index}_rgb.png"))
        depth = np.asarray(Image.open(folder / f"{index}_depth.png")).astype(np.float32) / 256.0
        label = np.asarray(Image.open(folder / f"{index}_label.png"))
        if modality is not None:
            normalize_rgb(rgb)
            torch.from_numpy(encode_modality(depth, *intrinsics, modality, max_depth=MAX_DEPTH))
            torch.from_numpy(label.astype(np.int64))


def main(argv: list[str] | None = None) -> None:
    options = parser(__doc__, "data_speed")
    options.add_argument("--samples-small", type=int, default=128, help="samples at 64x128")
    options.add_argument("--samples-large", type=int, default=16, help="samples at 256x512")
    args = options.parse_args(argv)
    with Report("data_speed", args, argv) as report:
        report.results = measure(args)


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Time each source at each size; print and return samples per second (wall, CPU)."""
    torch.set_num_threads(1)
    figures: dict[str, dict[str, float]] = {}
    print(f"{'size':>9}  {'source':<26} {'samples/s (wall)':>16} {'samples/s (CPU)':>16}")
    for size, count in (((64, 128), args.samples_small), ((256, 512), args.samples_large)):
        runs: list[tuple[str, Callable[[], object]]] = [
            (f"synthdrive ({modality})",
             functools.partial(SynthDrive, "train", modality=modality, size=size,
                               train_samples=count))
            for modality in ("depth", "normals")
        ]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_pngs(folder, size, count)
            runs += [(f"png decode{' + ' + m if m else ''}",
                      functools.partial(load_pngs, folder, size, count, m))
                     for m in (None, "depth", "normals")]
            for name, work in runs:
                _, wall, cpu = timed(work)
                label = f"{size[0]}x{size[1]}"
                print(f"{label:>9}  {name:<26} {count / wall:16.1f} {count / cpu:16.1f}")
                figures[f"{label} {name}"] = {"per_s_wall": count / wall, "per_s_cpu": count / cpu}
    return figures


if __name__ == "__main__":
    main()
