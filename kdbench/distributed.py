"""Data-parallel training of one run over several processes (``torch.distributed``).

A run trained by W processes (``launch.tasks_per_node`` × ``launch.nodes``; one GPU each on
CUDA, a share of the CPUs each otherwise) is the same run as one trained by a single process:

- the global batch of step t is the recipe's ``train.batch_size`` B: rank r trains on the slots
  r·B/W .. (r+1)·B/W − 1 of the batch the single process would draw (each sample keeps its
  augmentation, seeded by its slot in the global batch: :mod:`kdbench.train.pipeline`);
- batch norm of the trained model normalises with the statistics of the global batch
  (:class:`SyncBatchNorm`), and ``DistributedDataParallel`` averages the gradients, so that
  the cross-entropy, normalised by the labelled pixels of the global batch
  (:func:`global_count`), has the single process's gradient;
- the logged losses are averaged over the ranks (every rank then sees the same values, and
  stops together on a non-finite one or a stop request);
- evaluation shards the split over the ranks and sums their confusion matrices, which gives
  exactly the single process's metrics;
- rank 0 is the run's only writer: lease, checkpoints, history and record (the others follow
  its decision to train: :func:`leader_decides`).

State a method keeps is the same on every rank: its parameters are synchronised by
DistributedDataParallel and initialised alike (ARFD's anchors, drawn from the first batch, are
rank 0's: :func:`from_rank0`), its batch-norm layers are synchronised too, and CIRKD's memory
queues take the global batch (:func:`gathered`), as the authors' multi-GPU code does.

What differs from one process is the order of floating-point sums, and the distillation terms
that couple the samples of a batch (ARFD's CKA and anchor draw, CIRKD's pair term, MGD's
random masks), which each rank computes over its own shard; the record states the world size.

The launchers (:mod:`kdbench.launch.spawn` on one machine, :mod:`kdbench.launch.slurm_job` in
a SLURM job) set ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` and open the
process group with :func:`process_group`; the training code only asks :func:`current`.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

TIMEOUT = datetime.timedelta(hours=12)
"""How long a collective may wait: rank 0 may first wait for a teacher another process trains."""


@dataclass(frozen=True)
class Group:
    """This process's place in the run: ``rank`` of ``world`` processes (0 of 1 alone)."""

    rank: int = 0
    world: int = 1
    backend: str | None = None

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0


SINGLE = Group()
"""A process training a run alone."""


def current() -> Group:
    """The process group this process trains in (a single process when none is open)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Group(dist.get_rank(), dist.get_world_size(), dist.get_backend())


def backend_for(device: str) -> str:
    """``nccl`` for a run on CUDA, ``gloo`` on the CPU (``device`` as a RunSpec names it)."""
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


@contextlib.contextmanager
def process_group(backend: str) -> Iterator[Group]:
    """Open the process group the environment describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``) for the body, and close it after."""
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def leader_decides(train: bool | None = None) -> bool:
    """Rank 0 tells the other ranks whether the run trains (``train``); every rank returns it.

    Rank 0 calls it once it knows (with the lease, before training, or when it leaves the run
    to another process or finds it complete); the others call it without an argument and wait.
    """
    group = current()
    if group.world == 1:
        return bool(train)
    message = [train if group.writer else None]
    dist.broadcast_object_list(message, src=0)
    return bool(message[0])


def mean_over_ranks(values: Tensor) -> Tensor:
    """The element-wise mean of ``values`` (a float tensor) over the ranks (itself alone)."""
    world = current().world
    return values if world == 1 else sum_over_ranks(values.clone()) / world


def sum_over_ranks(values: Tensor) -> Tensor:
    """The element-wise sum of ``values`` over the ranks (in place; itself alone)."""
    if current().world > 1:
        dist.all_reduce(values)
    return values


def gathered(x: Tensor) -> Tensor:
    """Every rank's ``x`` (equal shapes) concatenated along dim 0 in rank order, without
    gradient: a rank's shard of the global batch becomes the global batch (``x`` alone).

    For state a method keeps across steps (CIRKD's memory queues): every rank then writes
    what the single process writes, and the ranks' states stay equal."""
    group = current()
    if group.world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(group.world)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


@torch.no_grad()
def from_rank0(*tensors: Tensor) -> None:
    """Overwrite ``tensors`` in place with rank 0's values (nothing alone): for parameters a
    method initialises from its first batch, which differs between the ranks' shards."""
    if current().world == 1:
        return
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


def global_count(mask: Tensor) -> Tensor:
    """How many elements of ``mask`` are true over every rank's shard, divided by the world
    size (the mean of the ranks' counts): a rank's sum over its shard divided by it, averaged
    over the ranks by DistributedDataParallel, is the sum over the global batch divided by its
    count."""
    return mean_over_ranks(mask.sum().to(torch.float32))


def agreed_stop(reason: str | None) -> str | None:
    """A stop request any rank received (a signal may reach only some): every rank returns
    the same reason, or None, so that all stop at the same step boundary."""
    if current().world == 1:
        return reason
    flag = torch.tensor([float(reason is not None)], device=_collective_device())
    if float(sum_over_ranks(flag)) == 0:
        return None
    reasons: list[str | None] = [None] * current().world
    dist.all_gather_object(reasons, reason)
    return next(r for r in reasons if r is not None)


def _collective_device() -> torch.device:
    """Where a tensor must be for this group's collectives (NCCL: this process's GPU)."""
    return torch.device("cuda") if current().backend == "nccl" else torch.device("cpu")


def shard(items: list[Any], group: Group | None = None) -> list[Any]:
    """This rank's contiguous part of ``items``; ``len(items)`` must divide by the world size."""
    group = group or current()
    size = len(items) // group.world
    return items[group.rank * size : (group.rank + 1) * size]


def rank_share(x: Tensor) -> Tensor:
    """This rank's contiguous share of dim 0 of ``x`` (``x`` itself alone), as :func:`shard`.

    For random draws a method makes per image (Af-DCD's masks, adv's interpolation weights):
    drawn for the global batch from the step's generator, which every rank seeds alike, so that
    W ranks use the draws one process would."""
    group = current()
    size = x.shape[0] // group.world
    return x if group.world == 1 else x[group.rank * size : (group.rank + 1) * size]


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_r x_r on every rank; the gradient of x_r is Σ_r ∂L_r/∂y (the sum of the ranks'
    upstream gradients), as each rank's loss depends on y. The backward is this function again,
    so it is differentiable too (a double backward, e.g. adv's gradient penalty through a
    synchronised batch norm, sums the second-order terms over the ranks as well)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return sum_over_ranks(x.clone())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _SumOverRanks.apply(grad)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""Batch norm with the statistics of the global batch, on every device and backend.

    In training, with x of shape (N_r, C, ...) on rank r, the per-channel sums
    S_1 = Σ_r Σ x and S_2 = Σ_r Σ x² and the count n = Σ_r N_r·(spatial size) are summed over
    the ranks (one all-reduce, in float64), μ = S_1 / n and σ² = S_2 / n − μ², and
    y = γ (x − μ) / √(σ² + ε) + β, followed by ``drop`` and ``act`` (timm's norm-act layers).
    The all-reduce is differentiable (its backward sums the gradients of the statistics over
    the ranks), so the gradient is that of batch norm over the global batch. Running
    statistics use the unbiased variance n/(n − 1)·σ², as ``nn.BatchNorm2d`` does.
    torch's own ``nn.SyncBatchNorm`` runs on GPUs only; this one also trains with gloo on the
    CPU. Outside training or in a single process it is ``F.batch_norm``.

    Its parameter and buffer names are those of the layer it replaces, so checkpoints and a
    teacher's weights load into either; so does each parameter's ``requires_grad``.
    """

    def __init__(self, source: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__(
            source.num_features,
            source.eps,
            source.momentum,
            source.affine,
            source.track_running_stats,
        )
        self.load_state_dict(source.state_dict())
        for mine, theirs in zip(self.parameters(), source.parameters(), strict=True):
            mine.requires_grad_(theirs.requires_grad)  # a frozen layer stays frozen (adv's D)
        self.drop: nn.Module = getattr(source, "drop", None) or nn.Identity()
        self.act: nn.Module = getattr(source, "act", None) or nn.Identity()
        self.to(next(source.buffers(), torch.empty(0)).device)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        group = current()
        if not self.training or group.world == 1:
            return self.act(self.drop(super().forward(input)))
        dims = [0, *range(2, input.dim())]
        local = torch.cat([
            input.sum(dims, dtype=torch.float64),
            input.square().sum(dims, dtype=torch.float64),
            input.new_tensor([input.numel() // input.shape[1]], dtype=torch.float64),
        ])
        total = _SumOverRanks.apply(local)
        c = self.num_features
        n = total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean.square()).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = [1, c] + [1] * (input.dim() - 2)
        scale = torch.rsqrt(var + self.eps).to(input.dtype)
        y = (input - mean.to(input.dtype).view(shape)) * scale.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return self.act(self.drop(y))


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every batch-norm layer replaced by a :class:`SyncBatchNorm` holding its
    weights (in place for submodules; the returned module is ``module`` unless it is itself a
    batch-norm layer)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, SyncBatchNorm
    ):
        return SyncBatchNorm(module)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def unwrapped(module: nn.Module) -> nn.Module:
    """The module a :func:`data_parallel` wrapper holds, compiled or not (``torch.compile``'s
    wrapper keeps it as ``_orig_mod``); ``module`` itself otherwise."""
    from torch.nn.parallel import DistributedDataParallel

    module = getattr(module, "_orig_mod", module)
    return module.module if isinstance(module, DistributedDataParallel) else module


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when it has trainable parameters and
    several processes train (itself otherwise)."""
    if current().world == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index or 0] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


@contextlib.contextmanager
def writer_first() -> Iterator[None]:
    """Rank 0 runs the body before the other ranks do (it may repair what they then read)."""
    group = current()
    if group.world > 1 and not group.writer:
        dist.barrier()
    yield
    if group.world > 1 and group.writer:
        dist.barrier()


class Decision:
    """Rank 0's decision whether the run trains, told to the other ranks exactly once
    (:func:`leader_decides`); a single process has nobody to tell."""

    def __init__(self) -> None:
        self.told = current().world == 1

    def tell(self, train: bool) -> None:
        if not self.told:
            self.told = True
            leader_decides(train)
