"""The training data pipeline: seeded batches of augmented samples from DataLoader workers.

A run's data is a pure function of (seed, step): the batch of step t holds the samples
``batch_indices(n, B, seed, t)`` (epochs are permutations seeded by (seed, epoch)), and the k-th
sample of that batch is augmented (:func:`~kdbench.data.augment.augment_sample`) with uniforms
drawn from a generator seeded by (seed, t, k). So the batches do not depend on which worker
decodes which sample, on the number of workers, or on where a run was resumed: a loader that
starts at step s yields exactly what the uninterrupted run saw from step s on.

Decoding and augmentation run in ``train.workers`` DataLoader worker processes (null: one per
CPU the process may use, at most 8; 0 = in the training process), each prefetching two batches
ahead; on CUDA batches are copied into pinned memory, so that the copy to the GPU
(``non_blocking``) overlaps the step.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from kdbench.cpus import available_cpus
from kdbench.data.augment import DRAWS, augment_sample
from kdbench.distributed import SINGLE, Group, current, shard
from kdbench.errors import KdbenchError
from kdbench.train.loop import batch_indices, derived_seed

AUGMENT_STREAM = 3
MAX_AUTO_WORKERS = 8

Key = tuple[int, int, int]
"""(step, slot in the batch, sample index)."""


def resolve_workers(workers: int | None) -> int:
    """``train.workers``: an explicit count, or null = available CPUs (at most 8)."""
    return min(available_cpus(), MAX_AUTO_WORKERS) if workers is None else workers


def sample_uniforms(seed: int, step: int, slot: int) -> Tensor:
    """The :data:`DRAWS` uniforms of sample ``slot`` of the batch of ``step``."""
    generator = torch.Generator().manual_seed(
        derived_seed(derived_seed(seed, step, AUGMENT_STREAM), slot, 0)
    )
    return torch.rand(DRAWS, generator=generator, dtype=torch.float64)


class AugmentedSamples(Dataset):
    """``dataset`` seen through the run's augmentation: key (step, slot, index) -> item."""

    def __init__(self, dataset: Dataset, seed: int, train: dict[str, Any], normals: bool) -> None:
        self.dataset, self.seed, self.normals = dataset, seed, normals
        self.options = {
            "flip": train["flip"],
            "scale": tuple(train["scale"]),
            "crop": train["crop"],
            "jitter": train["jitter"],
        }

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key) -> dict[str, Tensor]:  # type: ignore[override]
        step, slot, index = key
        item = self.dataset[index]
        u = sample_uniforms(self.seed, step, slot).tolist()
        rgb, x, label = augment_sample(
            item["rgb"], item["x"], item["label"], u, normals=self.normals, **self.options
        )
        return {"rgb": rgb, "x": x, "label": label}


class StepBatches(Sampler[list[Key]]):
    """The keys of the batches of steps ``start`` .. ``total`` − 1; under data parallelism,
    this rank's shard of each (its slots keep their numbers in the global batch)."""

    def __init__(
        self, n: int, batch_size: int, seed: int, start: int, total: int, group: Group = SINGLE
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.total, self.group = start, total, group

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[Key]]:
        for step in range(self.start, self.total):
            indices = batch_indices(self.n, self.batch_size, self.seed, step)
            yield shard([(step, slot, int(i)) for slot, i in enumerate(indices)], self.group)


def collate(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack the items; samples of different sizes are a user error naming the fix."""
    shapes = {tuple(item["label"].shape) for item in items}
    if len(shapes) > 1:
        raise KdbenchError(
            f"train.crop: the training samples differ in size {sorted(shapes)}; set train.crop "
            "(or the data set's size option) so that every sample of a batch has one size"
        )
    return {key: torch.stack([item[key] for item in items]) for key in ("rgb", "x", "label")}


STOP_SIGNALS = (signal.SIGINT, signal.SIGUSR2)
"""Ctrl-C (sent to the whole process group) and SLURM's pre-timeout warning (sent to every
process of the job). SIGTERM stays deliverable: multiprocessing ends daemon workers with it
when the process exits."""


def start(loader: DataLoader) -> Iterator[Any]:
    """``iter(loader)`` with the stop signals blocked while its workers start.

    The training process alone decides how to stop (:mod:`kdbench.train.context`: checkpoint
    at the next step boundary). A worker started while the signals are blocked keeps them
    blocked (a forked or spawned child inherits the signal mask), so the Ctrl-C that reaches
    the whole process group, or SLURM's warning before a time limit, cannot kill it and fail
    the run; a stop signal that arrives while the workers start is delivered to this process
    once they run. Workers still end with their parent (torch watches it).
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def train_loader(
    dataset: Dataset,
    *,
    seed: int,
    train: dict[str, Any],
    normals: bool,
    start: int,
    device: torch.device,
) -> DataLoader:
    """The batches of steps ``start`` .. ``train.steps`` − 1 (module docstring)."""
    workers = resolve_workers(train["workers"])
    return DataLoader(
        AugmentedSamples(dataset, seed, train, normals),
        batch_sampler=StepBatches(
            len(dataset), train["batch_size"], seed, start, train["steps"], current()
        ),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,
    )
